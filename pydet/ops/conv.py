"""Depthwise convolution with a fused bias + activation epilogue (``torch.ops.pydet.depthwise_conv2d``).

Conventions are ``torch.nn.functional.conv2d(input, weight, bias, stride, padding, dilation,
groups=C)`` with zero padding and one filter per channel, followed by an activation, in one pass
over memory. Folding an eval-mode BatchNorm into ``weight``/``bias``
(:func:`pydet.layers.fold_batchnorm`) makes it the fused depthwise + BN + activation block of
MobileNet/SSDLite inference.
"""

from __future__ import annotations

import torch
from torch import Tensor

Pair = int | tuple[int, int] | list[int]

# The activations the kernels fuse (csrc/common/activation.h), as PyTorch computes them: the
# DepthwiseConv2d module's fallback path and the tests' reference use these.
ACTIVATIONS = {
    "none": lambda x: x,
    "relu": torch.nn.functional.relu,
    "relu6": torch.nn.functional.relu6,
    "silu": torch.nn.functional.silu,
    "swish": torch.nn.functional.silu,
    "hardswish": torch.nn.functional.hardswish,
}


def _pair(v: Pair) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def depthwise_conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Pair = 1,
    padding: Pair = 0,
    dilation: Pair = 1,
    activation: str = "none",
) -> Tensor:
    """``act(conv2d(input [N, C, H, W], weight [C, 1, KH, KW], bias [C], groups=C))`` -> ``[N, C, OH, OW]``.

    ``activation``: ``"none"``, ``"relu"``, ``"relu6"``, ``"silu"`` (or ``"swish"``), ``"hardswish"``,
    with PyTorch's formulas and its gradients at the kinks. Any kernel size, stride, padding and
    dilation; ``OH = (H + 2 ph - dh (KH - 1) - 1) // sh + 1``. Differentiable in ``input``,
    ``weight`` and ``bias`` (one backward kernel; the activation's derivative is taken at the
    recomputed pre-activation, so nothing extra is saved).

    Layout: the output is NCHW-contiguous; a channels_last or strided input is first copied to NCHW.
    dtypes: float32/float64 on the CPU (float16/bfloat16 computed in float32), and float16/bfloat16
    natively on CUDA with float32 accumulation. Results agree with ATen's to rounding (the taps are
    summed in a different order) and do not depend on the thread count.
    """
    return torch.ops.pydet.depthwise_conv2d(
        input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), activation
    )
