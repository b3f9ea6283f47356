"""Normalisation layers with detectron2's conventions: :class:`FrozenBatchNorm2d`,
:func:`convert_frozen_batchnorm` and :func:`get_norm`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers (detectron2 / torchvision).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, computed as one affine map.
    State-dict keys are BatchNorm2d's (``weight``, ``bias``, ``running_mean``, ``running_var``);
    ``num_batches_tracked`` is accepted and ignored, so BatchNorm2d checkpoints load.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        """``(scale, shift)`` with ``y = x * scale + shift`` per channel."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_and_shift()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.view(shape).to(x.dtype) + shift.view(shape).to(x.dtype)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """``module`` with every BatchNorm2d/SyncBatchNorm replaced by a FrozenBatchNorm2d holding its
        statistics (the module itself when it is one); see :func:`convert_frozen_batchnorm`."""
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new = cls.convert_frozen_batchnorm(child)
            if new is not child:
                module.add_module(name, new)
        return module


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """detectron2's ``FrozenBatchNorm2d.convert_frozen_batchnorm``: converts in place, returns the result."""
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


def get_norm(norm: str | Callable[[int], nn.Module] | None, out_channels: int) -> nn.Module | None:
    """detectron2's ``get_norm``: ``"BN"``, ``"SyncBN"``, ``"FrozenBN"``, ``"GN"`` (32 groups),
    ``"LN"`` (channel-wise layer norm as GroupNorm(1)), a callable ``norm(out_channels)``, or
    ``None``/``""`` for no normalisation."""
    if norm is None or norm == "":
        return None
    if callable(norm):
        return norm(out_channels)
    factories = {
        "BN": nn.BatchNorm2d,
        "SyncBN": nn.SyncBatchNorm,
        "FrozenBN": FrozenBatchNorm2d,
        "GN": lambda c: nn.GroupNorm(32, c),
        "LN": lambda c: nn.GroupNorm(1, c),
    }
    if norm not in factories:
        raise ValueError(
            f"get_norm: norm must be one of {', '.join(map(repr, factories))}, a callable or None, got {norm!r}"
        )
    return factories[norm](out_channels)
