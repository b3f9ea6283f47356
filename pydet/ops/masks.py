"""Instance masks: pasting mask-head predictions into the image (torchvision's and detectron2's
conventions, one kernel) and the boxes of binary masks (torchvision.ops.masks_to_boxes)."""

from __future__ import annotations

import torch
from torch import Tensor


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, img_shape: tuple[int, int], padding: int = 1
) -> Tensor:
    """torchvision's ``paste_masks_in_image`` (Mask R-CNN's post-processing): ``masks [N, 1, M, M]``
    (probabilities), ``boxes [N, 4]`` (x1, y1, x2, y2 in the image) -> ``[N, 1, H, W]`` in the masks'
    dtype.

    As torchvision: each mask is padded by ``padding`` zeros, its box scaled about its centre by
    ``(M + 2 padding) / M`` and truncated to whole pixels, the padded mask resized bilinearly
    (``F.interpolate``, ``align_corners=False``) to the box (``x2 - x1 + 1`` by ``y2 - y1 + 1`` pixels),
    and the box's pixels inside the image take its values; all other pixels are 0. One pass over the
    result (torchvision: a Python loop of resize, zeroed image and copy per mask, then a stack).
    Values equal torchvision's within float rounding (ATen's resize contracts multiply-adds on AVX2 and
    AVX-512 CPUs, so its own bits depend on the CPU). A box with a non-finite coordinate, or one beyond
    the image's right or bottom edge (where torchvision raises a shape error), pastes nothing.
    """
    height, width = img_shape
    return torch.ops.pydet.paste_masks_in_image(masks, boxes, height, width, int(padding))


def masks_to_boxes(masks: Tensor) -> Tensor:
    """torchvision.ops.masks_to_boxes: ``masks [N, H, W]`` (any dtype; nonzero is inside) -> float32
    ``[N, 4]`` boxes (x1, y1, x2, y2) of each mask's nonzero pixels, inclusive; an empty mask gives
    zeros. One pass that reads each row only up to its first and from its last nonzero pixel."""
    return torch.ops.pydet.masks_to_boxes(masks)
