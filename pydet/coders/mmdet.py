"""mmdet's ``DeltaXYWHBBoxCoder`` (``mmdet.core.bbox.coder``; ``bbox2delta`` / ``delta2bbox``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pydet.ops.coders import box_decode, box_encode


class DeltaXYWHBBoxCoder:
    """Deltas ``(dx, dy, dw, dh)`` normalised by ``target_means`` / ``target_stds``.

    Encoding runs in float32 (mmdet's ``.float()``). Decoding clamps ``dw, dh`` to
    ``+-|log(wh_ratio_clip)|``; with ``add_ctr_clamp`` the centre shift is clamped to ``ctr_clamp``
    pixels and ``dw, dh`` only from above. ``clip_border`` clips to ``max_shape`` when one is given.
    """

    def __init__(
        self,
        target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clip_border: bool = True,
        add_ctr_clamp: bool = False,
        ctr_clamp: float = 32,
    ):
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border
        self.add_ctr_clamp = add_ctr_clamp
        self.ctr_clamp = ctr_clamp

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas ``[..., 4]`` of ``gt_bboxes`` relative to ``bboxes`` (same shapes ``[..., N, 4]``)."""
        if bboxes.size(0) != gt_bboxes.size(0) or bboxes.size(-1) != 4 or gt_bboxes.size(-1) != 4:
            raise ValueError(
                f"DeltaXYWHBBoxCoder.encode: bboxes and gt_bboxes must have the same number of boxes and 4 "
                f"coordinates, got {list(bboxes.shape)} and {list(gt_bboxes.shape)}"
            )
        return box_encode(bboxes.float(), gt_bboxes.float(), "mmdet", self.stds, self.means)

    def decode(
        self,
        bboxes: Tensor,
        pred_bboxes: Tensor,
        max_shape: Sequence[int] | Sequence[Sequence[int]] | Tensor | None = None,
        wh_ratio_clip: float = 16 / 1000,
    ) -> Tensor:
        """Boxes decoded from ``pred_bboxes [N, 4C]`` / ``[B, N, 4C]`` relative to ``bboxes [N, 4]`` /
        ``[B, N, 4]``. ``max_shape`` is ``(h, w)`` for every image, or one ``(h, w)`` per image."""
        if pred_bboxes.size(0) != bboxes.size(0) or (
            pred_bboxes.ndim == 3 and pred_bboxes.size(1) != bboxes.size(1)
        ):
            raise ValueError(
                f"DeltaXYWHBBoxCoder.decode: pred_bboxes {list(pred_bboxes.shape)} does not match bboxes "
                f"{list(bboxes.shape)}"
            )
        max_ratio = abs(math.log(wh_ratio_clip))
        wh_clip = (-math.inf, max_ratio) if self.add_ctr_clamp else (-max_ratio, max_ratio)
        center_clamp = self.ctr_clamp if self.add_ctr_clamp else math.inf
        shape = None
        per_image = None
        if self.clip_border and max_shape is not None:
            shapes = torch.as_tensor(max_shape, dtype=torch.float64)
            if shapes.dim() == 1:
                shape = shapes.tolist()[:2]
            else:
                _check_per_image_shapes(shapes, pred_bboxes)
                per_image = shapes[..., :2]
        out = box_decode(bboxes, pred_bboxes, "mmdet", self.stds, self.means, wh_clip, center_clamp, shape)
        if per_image is not None:  # one (h, w) per image: clip each image's boxes by its own shape
            hw = per_image.to(out).flip(-1).repeat(1, out.size(-1) // 2).unsqueeze(-2)  # (w, h, w, h, ...)
            out = torch.minimum(out.clamp(min=0), hw)
        return out


def _check_per_image_shapes(shapes: Tensor, pred_bboxes: Tensor) -> None:
    """One ``(h, w)`` per image, as mmdet's ``delta2bbox`` asserts: the list must match the batch (a
    length mismatch would otherwise broadcast, or clip every image to one image's shape)."""
    if pred_bboxes.ndim != 3:
        raise ValueError(
            f"DeltaXYWHBBoxCoder.decode: max_shape holds {shapes.size(0)} (h, w) pairs, one per image, which needs "
            f"batched pred_bboxes [B, N, 4C]; got pred_bboxes {list(pred_bboxes.shape)}"
        )
    if shapes.dim() != 2 or shapes.size(0) != pred_bboxes.size(0):
        raise ValueError(
            f"DeltaXYWHBBoxCoder.decode: max_shape holds {shapes.size(0)} (h, w) pairs but the batch has "
            f"{pred_bboxes.size(0)} images (max_shape {list(shapes.shape)}, pred_bboxes {list(pred_bboxes.shape)})"
        )
