"""detectron2.layers.mask_ops: ``paste_masks_in_image`` in detectron2's convention, over pydet's mask
pasting kernel."""

from __future__ import annotations

import torch
from torch import Tensor


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, image_shape: tuple[int, int], threshold: float = 0.5
) -> Tensor:
    """detectron2's ``paste_masks_in_image``: ``masks [N, M, M]``, ``boxes [N, 4]`` (a tensor, or an
    object with a ``.tensor``, as detectron2's ``Boxes``) -> ``[N, H, W]``, bool for
    ``threshold >= 0`` (``value >= threshold``) and uint8 ``value * 255`` for a negative threshold.

    As detectron2 on CPU: pixel (x, y) of ``[floor(x1) - 1, ceil(x2) + 1) x [floor(y1) - 1, ceil(y2) + 1)``
    (clipped to the image) samples the mask bilinearly (``F.grid_sample``, ``align_corners=False``, zero
    padding) at ``(x + 0.5 - x1) / (x2 - x1)`` of its width (y likewise); other pixels are False / 0.
    Integer and boolean masks are sampled as float32. Values before the threshold equal detectron2's
    within float rounding; an empty input returns the thresholded dtype (detectron2 returns uint8).
    """
    if not isinstance(boxes, Tensor):
        boxes = boxes.tensor
    height, width = image_shape
    return torch.ops.pydet.paste_masks_in_image_detectron2(masks, boxes, height, width, float(threshold))
