"""Depthwise convolution module and the fused conv -> norm -> activation forward every block uses.

:class:`DepthwiseConv2d` is an ``nn.Conv2d(C, C, groups=C)`` (same parameters, same state-dict keys)
whose forward is ``pydet.ops.depthwise_conv2d``. :func:`conv_norm_act` runs conv -> norm ->
activation as one kernel when it can: the convolution is a DepthwiseConv2d, the norm is an eval-mode
BatchNorm2d with running statistics or a FrozenBatchNorm2d (folded into the kernel's weight and bias,
:func:`fold_batchnorm`), and the activation is ReLU, ReLU6, SiLU, Hardswish or none. Otherwise it
runs the three modules in turn, so training-mode BatchNorm keeps its batch statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pydet.layers.norm import FrozenBatchNorm2d
from pydet.ops.conv import ACTIVATIONS, depthwise_conv2d

_ACTIVATION_NAMES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish"}


def activation_name(module: nn.Module | None) -> str | None:
    """The fused-kernel name of an activation module (``"none"`` for None/Identity), or None when the
    kernel cannot apply it."""
    if module is None or isinstance(module, nn.Identity):
        return "none"
    return _ACTIVATION_NAMES.get(type(module))


def fold_batchnorm(weight: Tensor, bias: Tensor | None, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``(weight', bias')`` with ``conv(x, weight', bias') == norm(conv(x, weight, bias))`` for an
    eval-mode BatchNorm2d (running statistics) or a FrozenBatchNorm2d: ``scale = gamma / sqrt(var +
    eps)``, ``weight' = weight * scale``, ``bias' = (bias - mean) * scale + beta``. Differentiable."""
    if isinstance(norm, FrozenBatchNorm2d):
        scale, shift = norm.scale_and_shift()
    else:
        scale = (norm.running_var + norm.eps).rsqrt()
        if norm.affine:
            scale = norm.weight * scale
        shift = -norm.running_mean * scale
        if norm.affine:
            shift = shift + norm.bias
    scale, shift = scale.to(weight.dtype), shift.to(weight.dtype)
    folded_bias = shift if bias is None else bias * scale + shift
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), folded_bias


def foldable(norm: nn.Module | None) -> bool:
    """Whether :func:`fold_batchnorm` can fold ``norm`` (None and Identity count as foldable)."""
    if norm is None or isinstance(norm, (nn.Identity, FrozenBatchNorm2d)):
        return True
    return (
        isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm))
        and not norm.training
        and norm.running_mean is not None
    )


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel_size, stride, padding, dilation, groups=channels,
    bias)`` followed by ``activation`` (``"none"``, ``"relu"``, ``"relu6"``, ``"silu"``,
    ``"hardswish"``), computed by ``pydet.ops.depthwise_conv2d`` in one pass.

    Any kernel size, stride, padding and dilation runs in the pydet kernel (3x3 and 5x5 with stride
    1 or 2 on its fastest CPU path). Two configurations fall back to ATen's ``F.conv2d`` + the
    activation, transparently: string padding (``"same"``/``"valid"``) and a ``padding_mode`` other
    than ``"zeros"``. Parameters and state-dict keys are ``nn.Conv2d``'s (``weight [C, 1, KH, KW]``,
    ``bias [C]``), so grouped-conv checkpoints load.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        activation: str = "none",
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            channels,
            channels,
            kernel_size,
            stride,
            padding,
            dilation,
            channels,
            bias,
            padding_mode,
            device,
            dtype,
        )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"DepthwiseConv2d: activation must be one of {', '.join(map(repr, ACTIVATIONS))}, got {activation!r}"
            )
        self.activation = activation

    @property
    def uses_kernel(self) -> bool:
        """False when this configuration falls back to ATen (see the class doc)."""
        return not isinstance(self.padding, str) and self.padding_mode == "zeros"

    def forward_with(self, x: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
        """This convolution's geometry with the given weight, bias and activation."""
        if self.uses_kernel:
            return depthwise_conv2d(x, weight, bias, self.stride, self.padding, self.dilation, activation)
        return ACTIVATIONS[activation](self._conv_forward(x, weight, bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with(x, self.weight, self.bias, self.activation)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", activation={self.activation}" if self.activation != "none" else "")


def _folded(conv: DepthwiseConv2d, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``fold_batchnorm(conv, norm)``, cached on ``conv`` when no gradient is being recorded (eval
    inference): the fold is a handful of small tensor ops, as costly as the convolution itself for
    a 7x7 map. The cache key holds every input tensor and its in-place version counter, so any
    update (optimizer step, ``load_state_dict``, ``.to()``) refolds."""
    tensors = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return fold_batchnorm(conv.weight, conv.bias, norm)
    key = (id(norm), norm.eps, *(None if t is None else (t, t._version) for t in tensors))
    cached = conv.__dict__.get("_folded_cache")
    if (
        cached is None
        or len(cached[0]) != len(key)
        or not all(_same(a, b) for a, b in zip(cached[0], key, strict=True))
    ):
        cached = (key, fold_batchnorm(conv.weight, conv.bias, norm))
        conv.__dict__["_folded_cache"] = cached
    return cached[1]


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return b is not None and a[0] is b[0] and a[1] == b[1]
    return a == b


def fusable(conv: nn.Module, norm: nn.Module | None, act: nn.Module | None) -> str | None:
    """The kernel activation name when conv -> norm -> act can run as one depthwise kernel (see the
    module doc), else None."""
    name = activation_name(act)
    if (
        isinstance(conv, DepthwiseConv2d)
        and conv.activation == "none"
        and name is not None
        and foldable(norm)
    ):
        return name
    return None


def conv_norm_act(conv: nn.Module, norm: nn.Module | None, act: nn.Module | None, x: Tensor) -> Tensor:
    """``act(norm(conv(x)))``, as one fused depthwise kernel when possible (see the module doc)."""
    fused_act = fusable(conv, norm, act)
    if fused_act is not None:
        if norm is None or isinstance(norm, nn.Identity):
            return conv.forward_with(x, conv.weight, conv.bias, fused_act)
        weight, bias = _folded(conv, norm)
        return conv.forward_with(x, weight, bias, fused_act)
    x = conv(x)
    if norm is not None:
        x = norm(x)
    return x if act is None else act(x)
