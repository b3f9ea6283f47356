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
    stride_h, stride_w = _pair(stride)
    pad_h, pad_w = _pair(padding)
    dil_h, dil_w = _pair(dilation)
    # Inferred only where the ranks allow; the op's checks name whatever is wrong.
    shaped = input.dim() == 4 and weight.dim() == 4 and offset.dim() == 4
    taps = weight.shape[2] * weight.shape[3] if shaped else 0
    groups = input.shape[1] // weight.shape[1] if shaped and weight.shape[1] > 0 else 1
    offset_groups = offset.shape[1] // (2 * taps) if shaped and taps > 0 else 1
    use_mask = mask is not None
    if mask is None:
        mask = input.new_zeros(0)  # not read
    if bias is None:
        bias = input.new_zeros(weight.shape[0] if weight.dim() > 0 else 0)
    return torch.ops.pydet.deform_conv2d(
        input,
        weight,
        offset,
        mask,
        bias,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dil_h,
        dil_w,
        max(groups, 1),
        max(offset_groups, 1),
        use_mask,
    )
