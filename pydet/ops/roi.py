"""RoI pooling: torchvision.ops' roi_align, roi_pool, ps_roi_align and ps_roi_pool (operators, schemas
and numerics), and multi_scale_roi_align (every FPN level in one call).

roi_align:

RoI ``k`` of ``rois [K, 5] = (batch index, x1, y1, x2, y2)`` (image coordinates) is divided into
``PH x PW`` bins; each bin is the mean of a ``grid_h x grid_w`` grid of bilinear samples of
``input[batch index]``, where the grid is ``sampling_ratio`` per axis, or ``ceil(roi size / bins)``
when ``sampling_ratio <= 0``. Conventions, as torchvision's: corners are scaled by ``spatial_scale``;
``aligned=False`` (the legacy Detectron/torchvision default) sizes RoIs of under a pixel as one pixel,
``aligned=True`` shifts corners by -0.5 pixel (pixel centres) and keeps inverted RoIs (then empty);
samples beyond ``[-1, size]`` count as zero; samples in ``[-1, 0]`` read the border pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pydet.ops._checks import check_same_device, dtype_name
from pydet.ops.conv import Pair, _pair


def boxes_to_rois(
    boxes: Tensor | list[Tensor], input: Tensor, op: str = "roi_align", rotated: bool = False
) -> Tensor:
    """``[K, 5]`` rois (batch index, x1, y1, x2, y2) from a ``[K, 5]`` tensor (returned as is) or a
    per-image list of ``[L_i, 4]`` boxes (torchvision's ``convert_boxes_to_roi_format``), each of
    ``input``'s dtype and device (torchvision's concatenation would promote mixed dtypes instead).
    ``rotated``: ``[K, 6]`` rois from ``[L_i, 5]`` boxes (cx, cy, w, h, angle), detectron2's layout."""
    if isinstance(boxes, Tensor):
        return boxes
    columns, layout = (5, "(cx, cy, w, h, angle)") if rotated else (4, "(x1, y1, x2, y2)")
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[-1] != columns:
            raise ValueError(
                f"pydet.{op}: boxes[{i}] must have shape [L, {columns}] {layout}, got {list(b.shape)}"
            )
        if b.dtype != input.dtype:
            raise TypeError(
                f"pydet.{op}: boxes[{i}] must have input's dtype ({dtype_name(input.dtype)}), "
                f"got {dtype_name(b.dtype)}"
            )
        check_same_device(input, "input", b, f"boxes[{i}]", op)
    if not boxes:
        raise ValueError(
            f"pydet.{op}: boxes must be a [K, {columns + 1}] tensor or a non-empty list of [L, {columns}] tensors"
        )
    index = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(index), torch.cat(list(boxes))], dim=1)


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: Pair,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """torchvision.ops.roi_align: ``input [N, C, H, W]``, ``boxes`` ``[K, 5]`` or a list of ``[L, 4]`` per
    image -> ``[K, C, PH, PW]`` (module docstring for the sampling).

    Bit for bit torchvision's CPU kernel in float32, float64 and float16 (computed in float16, as there),
    forward and backward; bfloat16 (which torchvision's CPU kernel lacks) is computed in float32.
    Differentiable in ``input`` (not in ``boxes``, as in torchvision), twice. ``rois`` must have the
    input's dtype; a batch index that is not an integer in ``[0, N)`` raises ``ValueError``. An RoI
    with a non-finite scaled corner or size gives NaN bins and no gradient; samples outside the image
    are skipped rather than weighted by zero (torchvision reads pixel (0, 0) with weight 0, which
    differs only when that pixel is inf or NaN), which also bounds the work of huge RoIs.
    """
    ph, pw = _pair(output_size)
    rois = boxes_to_rois(boxes, input)
    return torch.ops.pydet.roi_align(
        input, rois, float(spatial_scale), ph, pw, int(sampling_ratio), bool(aligned)
    )


def multi_scale_roi_align(
    features: list[Tensor],
    rois: Tensor,
    levels: Tensor,
    spatial_scales: list[float],
    output_size: Pair,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI ``k`` of ``rois [K, 5]`` pooled as :func:`roi_align` from ``features[levels[k]]`` at
    ``spatial_scales[levels[k]]``, every level in one call -> ``[K, C, PH, PW]``.

    ``features``: 1 to 8 maps ``[N, C, H_l, W_l]`` of one dtype and device; ``levels``: int64 ``[K]``
    in ``[0, len(features))`` (a level out of range raises ``ValueError``). The same values and
    gradients, bit for bit, as torchvision's MultiScaleRoIAlign loop (``roi_align`` per level on that
    level's RoIs), which :class:`pydet.layers.MultiScaleRoIAlign` wraps with its level mapping.
    Differentiable in ``features`` (once).
    """
    ph, pw = _pair(output_size)
    scales = [float(s) for s in spatial_scales]
    return torch.ops.pydet.multi_scale_roi_align(
        list(features), rois, levels, scales, ph, pw, int(sampling_ratio), bool(aligned)
    )


def roi_pool(
    input: Tensor, boxes: Tensor | list[Tensor], output_size: Pair, spatial_scale: float = 1.0
) -> Tensor:
    """torchvision.ops.roi_pool (Fast R-CNN's max pooling): ``input [N, C, H, W]``, ``boxes`` ``[K, 5]`` or
    a list of ``[L, 4]`` per image -> ``[K, C, PH, PW]``.

    torchvision's conventions: corners are scaled by ``spatial_scale`` and rounded to whole pixels
    (half away from zero); an RoI spans ``end - start + 1`` pixels (at least 1), split into bins with
    ``floor``/``ceil`` bounds clipped to the image; a bin is the maximum of its pixels (the first in
    row-major order on ties; NaN pixels are passed over), and 0 when it holds no pixel. Bit for bit
    torchvision's CPU kernel; differentiable in ``input`` (once, as torchvision): the gradient goes to
    each bin's maximum. An RoI with a non-finite scaled corner gives NaN bins and no gradient.
    """
    ph, pw = _pair(output_size)
    rois = boxes_to_rois(boxes, input, "roi_pool")
    return torch.ops.pydet.roi_pool(input, rois, float(spatial_scale), ph, pw)[0]


def ps_roi_pool(
    input: Tensor, boxes: Tensor | list[Tensor], output_size: Pair, spatial_scale: float = 1.0
) -> Tensor:
    """torchvision.ops.ps_roi_pool (R-FCN's position-sensitive average pooling): ``input [N, C, H, W]``
    with ``C = C_out * PH * PW`` -> ``[K, C_out, PH, PW]``; bin ``(c, ph, pw)`` is the mean of input
    channel ``(c * PH + ph) * PW + pw`` over the bin's pixels.

    torchvision's conventions: corners scaled and rounded to whole pixels, an RoI spans
    ``end - start`` pixels (at least 1), bins are clipped to ``[0, H - 1]`` x ``[0, W - 1]`` (the last
    row and column are never read), an empty bin is 0. Bit for bit torchvision's CPU forward.
    Differentiable in ``input``; the gradient is this forward's (torchvision's backward clips bins to
    ``[0, H]`` instead, spreading into the row and column its forward left out).
    """
    ph, pw = _pair(output_size)
    rois = boxes_to_rois(boxes, input, "ps_roi_pool")
    return torch.ops.pydet.ps_roi_pool(input, rois, float(spatial_scale), ph, pw)[0]


def ps_roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: Pair,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
) -> Tensor:
    """torchvision.ops.ps_roi_align: :func:`roi_align`'s sampling with ``aligned=True``, bin
    ``(c, ph, pw)`` read from input channel ``(c * PH + ph) * PW + pw`` -> ``[K, C_out, PH, PW]``
    (``C = C_out * PH * PW``).

    As torchvision's, the bin's divisor is ``grid_h * grid_w`` without roi_align's floor of 1, so an
    RoI of zero width or height with an adaptive grid gives NaN bins (0 / 0). Bit for bit
    torchvision's CPU kernel in float32, float64 and float16; differentiable in ``input``.
    """
    ph, pw = _pair(output_size)
    rois = boxes_to_rois(boxes, input, "ps_roi_align")
    return torch.ops.pydet.ps_roi_align(input, rois, float(spatial_scale), ph, pw, int(sampling_ratio))[0]


def roi_align_rotated(
    input: Tensor, rois: Tensor, output_size: Pair, spatial_scale: float = 1.0, sampling_ratio: int = -1
) -> Tensor:
    """detectron2's ROIAlignRotated: ``rois [K, 6]`` = (batch index, cx, cy, w, h, angle in degrees,
    counter-clockwise) in image coordinates -> ``[K, C, PH, PW]``.

    As detectron2: the centre is scaled and shifted by -0.5 pixel (continuous coordinates), the RoI's
    ``PH x PW`` bins are laid out in its own frame and each of a bin's ``grid_h x grid_w`` samples
    (``sampling_ratio`` per axis, or ``ceil(size / bins)``) is rotated about the centre, then sampled
    bilinearly as roi_align; the bin is their mean. Bit for bit detectron2's CPU kernel in float32 and
    float64; differentiable in ``input``, twice. A negative scaled width or height raises
    ``ValueError`` (detectron2 asserts); an RoI with a non-finite centre, size or angle gives NaN bins
    and no gradient; adaptive grids are capped at 1024 samples per bin side.
    """
    ph, pw = _pair(output_size)
    return torch.ops.pydet.roi_align_rotated(input, rois, float(spatial_scale), ph, pw, int(sampling_ratio))
