"""Deformable convolution modules over ``pydet.ops.deform_conv2d``: torchvision.ops' ``DeformConv2d``
and detectron2's ``DeformConv`` and ``ModulatedDeformConv``, each with its library's parameters,
initialisation and state-dict keys."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pydet.ops.conv import Pair, _pair
from pydet.ops.deform_conv import deform_conv2d, deform_conv2d_grouped


def _weight(module: str, in_channels: int, out_channels: int, kernel_size: Pair, groups: int) -> nn.Parameter:
    for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if groups < 1 or channels % groups != 0:
            raise ValueError(f"pydet.{module}: {name} ({channels}) must be divisible by groups ({groups})")
    return nn.Parameter(torch.empty(out_channels, in_channels // groups, *_pair(kernel_size)))


class DeformConv2d(nn.Module):
    """torchvision.ops.DeformConv2d: ``forward(input, offset, mask=None)``; parameters ``weight
    [OC, C / groups, KH, KW]`` and ``bias [OC]`` (when ``bias``), initialised as ``nn.Conv2d``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = 1,
        padding: Pair = 0,
        dilation: Pair = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = tuple(_pair(kernel_size))
        self.stride, self.padding, self.dilation = (tuple(_pair(v)) for v in (stride, padding, dilation))
        self.weight = _weight("DeformConv2d", in_channels, out_channels, kernel_size, groups)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(
            input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )


class _Detectron2DeformConv(nn.Module):
    """What detectron2's two deformable convolutions share: their signature (ModulatedDeformConv's
    defaults), the weight (Kaiming-uniform for ReLU), then the convolution, ``norm`` and ``activation``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = 1,
        padding: Pair = 0,
        dilation: Pair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        norm: nn.Module | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = tuple(_pair(kernel_size))
        self.stride, self.padding, self.dilation = (tuple(_pair(v)) for v in (stride, padding, dilation))
        self.groups, self.deformable_groups = groups, deformable_groups
        self.weight = _weight(name, in_channels, out_channels, kernel_size, groups)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.norm, self.activation = norm, activation
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def _convolve(self, x: Tensor, offset: Tensor, mask: Tensor | None) -> Tensor:
        x = deform_conv2d_grouped(
            x,
            offset,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            mask,
            self.groups,
            self.deformable_groups,
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class DeformConv(_Detectron2DeformConv):
    """detectron2.layers.DeformConv (DCNv1): ``forward(x, offset)``, no bias (detectron2 asserts
    ``not bias``), state dict ``weight`` (+ the norm's under ``norm.``); ``offset`` is ``[N, 2
    deformable_groups KH KW, OH, OW]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = 1,
        padding: Pair = 0,
        dilation: Pair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: nn.Module | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ):
        if bias:
            raise ValueError("pydet.DeformConv: bias must be False (detectron2's DeformConv has none)")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            deformable_groups,
            False,
            norm,
            activation,
        )

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        return self._convolve(x, offset, None)


class ModulatedDeformConv(_Detectron2DeformConv):
    """detectron2.layers.ModulatedDeformConv (DCNv2): ``forward(x, offset, mask)``; ``bias`` (zeros
    at initialisation) when ``bias``, state dict ``weight``, ``bias`` (+ the norm's under ``norm.``)."""

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return self._convolve(x, offset, mask)
