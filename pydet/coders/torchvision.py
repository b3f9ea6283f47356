"""torchvision's ``BoxCoder`` (``torchvision.models.detection._utils``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pydet.ops.coders import box_decode, box_encode


class BoxCoder:
    """Encodes ground truth against anchors/proposals as ``(dx, dy, dw, dh)`` scaled by ``weights``.

    ``bbox_xform_clip`` clamps ``dw, dh`` from above before ``exp`` when decoding (not from below,
    as in torchvision).
    """

    def __init__(
        self, weights: tuple[float, float, float, float], bbox_xform_clip: float = math.log(1000.0 / 16)
    ):
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, reference_boxes: list[Tensor], proposals: list[Tensor]) -> tuple[Tensor, ...]:
        """Per-image targets of ``reference_boxes`` (matched ground truth) against ``proposals``."""
        boxes_per_image = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(reference_boxes, dim=0), torch.cat(proposals, dim=0))
        return targets.split(boxes_per_image, 0)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """``[N, 4]`` deltas of ``reference_boxes [N, 4]`` (ground truth) relative to ``proposals [N, 4]``."""
        return box_encode(proposals, reference_boxes, "torchvision", self.weights)

    def decode(self, rel_codes: Tensor, boxes: list[Tensor]) -> Tensor:
        """``[sum N_i, C, 4]`` boxes from ``rel_codes [sum N_i, 4C]`` and the per-image ``boxes``."""
        boxes_per_image = [b.size(0) for b in boxes]
        concat_boxes = torch.cat(boxes, dim=0)
        box_sum = sum(boxes_per_image)
        if box_sum > 0:
            rel_codes = rel_codes.reshape(box_sum, -1)
        pred_boxes = self.decode_single(rel_codes, concat_boxes)
        if box_sum > 0:
            pred_boxes = pred_boxes.reshape(box_sum, -1, 4)
        return pred_boxes

    def decode_single(
        self,
        rel_codes: Tensor,
        boxes: Tensor,
        max_shape: tuple[int, int] | None = None,
        index: Tensor | None = None,
    ) -> Tensor:
        """``[N, 4C]`` boxes from ``rel_codes [N, 4C]`` relative to ``boxes [N, 4]`` (in rel_codes' dtype).

        pydet extensions: ``max_shape = (h, w)`` also clips the boxes to the image in the same pass,
        exactly as ``clip_boxes_to_image`` of the result; ``index [K]`` (or ``[B, K]`` for batched
        ``rel_codes [B, N, 4C]``) decodes only those rows, as ``decode_single(rel_codes[index],
        boxes[index])`` (negative: a zero row), see :func:`pydet.ops.box_decode`."""
        if not rel_codes.is_floating_point():  # checked before boxes is cast to its dtype
            raise TypeError(
                f"BoxCoder.decode_single: rel_codes must be a floating-point tensor, got {rel_codes.dtype}"
            )
        return box_decode(
            boxes.to(rel_codes.dtype),
            rel_codes,
            "torchvision",
            self.weights,
            wh_clip=(-math.inf, self.bbox_xform_clip),
            max_shape=max_shape,
            index=index,
        )
