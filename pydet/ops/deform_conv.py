"""Deformable convolution, v1 and v2 (``torch.ops.pydet.deform_conv2d``): torchvision's ``deform_conv2d``.

The op's contract (shapes, dtypes, argument ranges) is checked once, in its C++ front end
(``csrc/ops/deform_conv.h``), which also serves as the fake kernel; this wrapper only infers the
groups from the shapes, as torchvision's does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pydet.ops.conv import Pair, _pair


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Pair = (1, 1),
    padding: Pair = (0, 0),
    dilation: Pair = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """torchvision's ``deform_conv2d``: a convolution whose taps sample the input at learned offsets.

    ``input [N, C, H, W]``, ``offset [N, 2 OG KH KW, OH, OW]``, ``weight [OC, C / G, KH, KW]``,
    ``bias [OC]``, ``mask [N, OG KH KW, OH, OW]`` (given: modulated, DCNv2) -> ``[N, OC, OH, OW]`` with
    ``OH = (H + 2 ph - dh (KH - 1) - 1) // sh + 1``. The weight groups are ``G = C // weight.shape[1]``
    and the offset groups ``OG = offset.shape[1] // (2 KH KW)``, as torchvision infers them.

    Tap ``(i, j)`` of output pixel ``(y, x)`` in offset group ``o`` samples its channels at
    ``(y sh - ph + i dh + offset[2 (i KW + j)], x sw - pw + j dw + offset[2 (i KW + j) + 1])``
    (``dy`` before ``dx``, tap-major within the group) bilinearly, corners outside the input reading 0,
    times ``mask[i KW + j]``. The sampled values are torchvision's bits; the output is their product
    with the weight through ATen's GEMM (plus the bias after it), so it agrees with torchvision's to
    float rounding of the GEMM's summation order. Differentiable in input, offset, mask, weight and
    bias (no second derivative, as in torchvision). float16/bfloat16 are computed in float32.
    """
    # Inferred only where the ranks allow; the op's checks name whatever is wrong.
    shaped = input.dim() == 4 and weight.dim() == 4 and offset.dim() == 4
    taps = weight.shape[2] * weight.shape[3] if shaped else 0
    groups = input.shape[1] // weight.shape[1] if shaped and weight.shape[1] > 0 else 1
    offset_groups = offset.shape[1] // (2 * taps) if shaped and taps > 0 else 1
    return deform_conv2d_grouped(
        input, offset, weight, bias, stride, padding, dilation, mask, max(groups, 1), max(offset_groups, 1)
    )


def deform_conv2d_grouped(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    mask: Tensor | None,
    groups: int,
    offset_groups: int,
) -> Tensor:
    """:func:`deform_conv2d` with the weight groups and offset groups given rather than inferred (as
    detectron2's modules pass them): the operator call, without bias or mask where they are None."""
    return torch.ops.pydet.deform_conv2d(
        input,
        weight,
        offset,
        input.new_zeros(0) if mask is None else mask,  # not read without a mask
        input.new_zeros(weight.shape[0] if weight.dim() > 0 else 0) if bias is None else bias,
        *_pair(stride),
        *_pair(padding),
        *_pair(dilation),
        groups,
        offset_groups,
        mask is not None,
    )
