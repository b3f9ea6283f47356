"""Box coding kernels: deltas of boxes relative to reference boxes (anchors, priors, proposals) and back.

One fused kernel family serves every convention (``coding``); the library-compatible classes are in
:mod:`pydet.coders`. Shapes::

    reference [N, 4] or [B, N, 4]       (shared by every image when 2-D)
    targets   [N, 4] or [B, N, 4]       box_encode -> deltas of the same shape
    deltas    [N, 4C] or [B, N, 4C]     box_decode -> boxes of the same shape (C boxes per row)
    index     [K] or [B, K]             box_decode(..., index=) -> boxes [K, 4C] / [B, K, 4C] of the
                                        gathered rows only

Conventions (each reproduces its library's eager formula operation by operation; exp/log are
within 1 ulp of the exact value, as PyTorch's own are):

* ``"torchvision"`` (torchvision ``BoxCoder``, detectron2 ``Box2BoxTransform``), xyxy boxes:
  ``dx = wx * (gcx - cx) / w``, ``dw = ww * log(gw / w)`` with centres ``x1 + 0.5 * w``; decode
  divides by the weights and clamps ``dw, dh`` from above only (``wh_clip=(-inf, log(1000/16))``).
* ``"mmdet"`` (``DeltaXYWHBBoxCoder``), xyxy boxes: centres ``(x1 + x2) * 0.5``, deltas normalised
  as ``(d - means) / stds`` (``weights`` are the stds); decode clamps ``dw, dh`` to
  ``[-log(1000/16)...]`` on both sides (``wh_clip``), optionally clamps the centre shift in pixels
  (``center_clamp``, mmdet ``add_ctr_clamp``) and clips to ``max_shape = (height, width)``.
* ``"ssd"`` (original / NVIDIA / super-gradients SSD): reference and targets in ``(cx, cy, w, h)``;
  ``dx = ((gcx - cx) / w) / scale_xy``, ``dw = log(gw / w) / scale_wh`` with
  ``weights = (scale_xy, scale_xy, scale_wh, scale_wh)``; decode multiplies and returns
  ``(cx, cy, w, h)``.

float16/bfloat16 are computed in float32 and returned in the input dtype. ``box_decode`` is
differentiable with respect to ``deltas`` (a backward kernel on dual numbers); the reference boxes
are treated as constants, as every detector's box head does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

CODINGS = ("torchvision", "mmdet", "ssd")
TORCHVISION_WH_CLIP = math.log(1000.0 / 16)


def box_encode(
    reference: Tensor,
    targets: Tensor,
    coding: str = "torchvision",
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    target_index: Tensor | None = None,
) -> Tensor:
    """Deltas ``[..., N, 4]`` encoding ``targets`` relative to ``reference`` (see the module doc).

    With ``target_index [N]`` / ``[B, N]`` (int64, e.g. a matcher's matched indices), ``targets`` is
    the ground truth ``[M, 4]`` / ``[B, M, 4]`` and row ``n`` encodes ``targets[target_index[n]]``,
    gathered inside the kernel; a negative index (unmatched) gives zeros, an index ``>= M`` raises.
    """
    return torch.ops.pydet.box_encode(
        reference, targets, coding, [float(w) for w in weights], [float(m) for m in means], target_index
    )


def box_decode(
    reference: Tensor,
    deltas: Tensor,
    coding: str = "torchvision",
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    wh_clip: tuple[float, float] = (-math.inf, math.inf),
    center_clamp: float = math.inf,
    max_shape: Sequence[float] | None = None,
    index: Tensor | None = None,
) -> Tensor:
    """Boxes ``deltas.shape`` decoded from ``deltas`` relative to ``reference`` (see the module doc).

    ``wh_clip = (lo, hi)`` clamps the (de-normalised) log-size deltas; ``center_clamp`` bounds the
    centre shift in pixels (mmdet only); ``max_shape = (height, width)`` clips the decoded boxes in
    the same pass, x to ``[0, width]`` and y to ``[0, height]`` exactly as ``clip_boxes_to_image``
    (torchvision and mmdet codings; the SSD coding's ``(cx, cy, w, h)`` output raises).

    ``index`` (int64 ``[K]`` for 2-D deltas, ``[B, K]`` for 3-D; a pydet extension) decodes only the
    rows ``index`` of ``deltas`` against the same rows of ``reference``, in one pass: equal to
    ``box_decode(reference[index], deltas[index])`` without the gathered copies, as detectors decode
    the top-k candidates after selecting them. A negative index gives a row of zeros (padding); an
    index ``>= N`` raises. The gradient flows back to the gathered rows of ``deltas`` (summed where
    a row is gathered more than once).
    """
    return torch.ops.pydet.box_decode(
        reference,
        deltas,
        coding,
        [float(w) for w in weights],
        [float(m) for m in means],
        float(wh_clip[0]),
        float(wh_clip[1]),
        float(center_clamp),
        None if max_shape is None else [float(s) for s in max_shape],
        index,
    )
