"""detectron2's ``Box2BoxTransform`` (``detectron2.modeling.box_regression``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pydet.ops.coders import box_decode, box_encode

_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """The R-CNN box transformation: same formulas as torchvision's ``BoxCoder``.

    ``apply_deltas`` decodes in float32 whatever the input dtype, as detectron2 does.
    """

    def __init__(self, weights: tuple[float, float, float, float], scale_clamp: float = _DEFAULT_SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """``[N, 4]`` deltas that transform ``src_boxes [N, 4]`` into ``target_boxes [N, 4]``."""
        if not isinstance(src_boxes, torch.Tensor):
            raise TypeError(f"src_boxes must be a Tensor, got {type(src_boxes)}")
        return box_encode(src_boxes, target_boxes, "torchvision", self.weights)

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """``[N, 4C]`` boxes from ``deltas [N, 4C]`` applied to ``boxes [N, 4]`` (float32)."""
        deltas = deltas.float()
        return box_decode(
            boxes.to(deltas.dtype), deltas, "torchvision", self.weights, wh_clip=(-math.inf, self.scale_clamp)
        )
