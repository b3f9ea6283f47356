"""detectron2's :class:`Conv2d` (convolution + optional norm + activation) and :class:`ShapeSpec`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor, nn


class ShapeSpec(NamedTuple):
    """Shape of a feature map (detectron2): any field may be ``None`` when unknown."""

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with detectron2's extra keyword arguments ``norm`` (a module applied after the
    convolution, e.g. from :func:`pydet.layers.get_norm`) and ``activation`` (a callable applied
    last). Zero-batch inputs give zero-batch outputs; SyncBatchNorm cannot normalise an empty batch
    in training, which raises. State-dict keys: ``weight``, ``bias``, ``norm.*``."""

    def __init__(
        self,
        *args,
        norm: nn.Module | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() == 0 and self.training and isinstance(self.norm, nn.SyncBatchNorm):
            raise ValueError("pydet.layers.Conv2d: SyncBatchNorm does not support empty inputs in training")
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
