"""Box utilities and the IoU family: drop-ins for ``torchvision.ops`` and mmdet's ``bbox_overlaps``.

Conventions shared by every function here:

* Boxes are ``(x1, y1, x2, y2)`` ("xyxy") unless a format argument says otherwise.
* dtypes: float32 and float64 are computed natively; float16 and bfloat16 are computed in float32.
  Like torchvision (its ``_upcast``), ``box_area``, the IoU functions, their ``_aligned`` forms and
  the IoU losses then return float32; ``bbox_overlaps`` (mmdet) and the box utilities return the
  input dtype. Under ``torch.autocast`` the ops run in float32.
* Integer boxes (int8 to int64, pixel coordinates) are accepted where torchvision accepts them:
  ``box_area`` (an integer result), the IoU functions and their ``_aligned`` forms (float32), computed
  with torchvision's integer arithmetic in its order (ATen operations, not the fused kernels), and the
  IoU losses (converted to float32 first, as torchvision does). Other ops raise ``TypeError``.
* Results are bit-identical to the reference library's float32/float64 eager formulas (the same
  operations in the same order, no fused multiply-add); ``complete_*`` may differ in the last ulp
  because of ``atan``.
* Bad arguments raise ``ValueError``/``TypeError`` naming the argument and the expected
  shape/dtype/device. Empty inputs give empty outputs of the right shape. Non-contiguous and
  expanded inputs are read in place.
* All functions work under ``torch.compile(fullgraph=True, dynamic=True)`` and ``torch.export``,
  and the differentiable ones have compiled backward kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pydet.ops import _checks

_ops = torch.ops.pydet


# ---- box utilities -----------------------------------------------------------------------------
def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of ``boxes [..., 4]`` -> ``[...]`` (torchvision ``box_area``).

    ``fmt``: ``'xyxy'`` gives ``(x2 - x1) * (y2 - y1)``; ``'xywh'`` and ``'cxcywh'`` give ``w * h``, as
    torchvision 0.29 computes them. No clamping: a box with ``x2 < x1`` has a negative area, as in
    torchvision. float16/bfloat16 boxes give float32 areas (torchvision's ``_upcast``): float16
    overflows above 65504 px².
    """
    return _ops.box_area(boxes, fmt)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between formats (torchvision 0.29 ``box_convert``).

    Axis-aligned, ``[..., 4]``: ``'xyxy'``, ``'xywh'`` (top-left x, top-left y, width, height) and
    ``'cxcywh'`` (centre x, centre y, width, height); conversions between the two non-xyxy formats
    go through xyxy, as torchvision does. Rotated (angle ``r`` in degrees, counter-clockwise):
    ``'xywhr'`` and ``'cxcywhr'`` ``[..., 5]`` (top-left corner or centre, width, height, r) and
    ``'xyxyxyxy'`` ``[..., 8]`` (the corners: top-left, top-right, bottom-right, bottom-left), computed
    with torchvision's formulas and ATen's trigonometry, integer boxes rounded back as there.
    Converting between a rotated and an axis-aligned format raises ``ValueError`` (torchvision:
    ``NotImplementedError``). ``in_fmt == out_fmt`` returns a copy.
    """
    return _ops.box_convert(boxes, in_fmt, out_fmt)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp x coordinates of ``boxes [..., 4]`` to ``[0, width]`` and y to ``[0, height]``.

    ``size`` is ``(height, width)`` as in torchvision ``clip_boxes_to_image``; negative sizes raise.
    """
    return _ops.clip_boxes_to_image(boxes, size)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, increasing) of the boxes in ``boxes [N, 4]`` with width and height ``>= min_size``.

    torchvision ``remove_small_boxes`` semantics: the comparison is ``>=``; boxes with a NaN side are
    removed. The output length depends on the data.
    """
    return _ops.remove_small_boxes(boxes, min_size)


@torch.library.register_fake("pydet::remove_small_boxes")
def _remove_small_boxes_fake(boxes, min_size):
    # The output length depends on the data: a Python fake (an unbacked size) that repeats the C++
    # front end's one check (csrc/ops/boxes.h) instead of a Meta registration of it.
    _checks.check_boxes(boxes, "remove_small_boxes", "boxes", "[N, 4]", 2, 2, integers=True)
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


# ---- pairwise IoU family (torchvision) ---------------------------------------------------------
def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise IoU of ``boxes1 [..., N, K]`` and ``boxes2 [..., M, K]`` -> ``[..., N, M]`` (torchvision
    0.29 ``box_iou``). The batch dimensions broadcast, as in torchvision 0.29; so do the other three
    pairwise functions'.

    ``inter = clamp(min(x2) - max(x1), 0) * clamp(min(y2) - max(y1), 0)``,
    ``iou = inter / (area1 + area2 - inter)``. Like torchvision, two zero-area boxes that do not
    overlap give ``0 / 0 = NaN``; NaN coordinates give NaN.

    ``fmt`` (see :func:`box_convert`): ``'xyxy'``, ``'xywh'`` or ``'cxcywh'`` (K = 4; the corners and
    areas as torchvision computes them: ``x + w``, ``cx -/+ w / 2``, area ``w * h``), or the rotated
    ``'cxcywhr'``, ``'xywhr'`` (K = 5) and ``'xyxyxyxy'`` (K = 8): then ``[N, K] x [M, K]`` only,
    converted to ``cxcywhr`` and computed by :func:`pydet.ops.box_iou_rotated`, without gradient.
    """
    return _ops.box_iou(boxes1, boxes2, fmt)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU ``iou - (C - union) / C`` (``C``: smallest enclosing box area) -> ``[N, M]``.

    torchvision ``generalized_box_iou``; degenerate pairs give NaN as there.
    """
    return _ops.generalized_box_iou(boxes1, boxes2)


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise distance IoU ``iou - d² / (c² + eps)`` -> ``[N, M]`` (torchvision ``distance_box_iou``).

    ``d`` is the distance between the box centres, ``c`` the diagonal of the smallest enclosing box.
    """
    return _ops.distance_box_iou(boxes1, boxes2, eps)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise complete IoU ``diou - alpha * v`` -> ``[N, M]`` (torchvision ``complete_box_iou``).

    ``v = 4/pi² (atan(w1/h1) - atan(w2/h2))²`` and ``alpha = v / (1 - iou + v + eps)``; alpha is a
    constant for autograd, as in torchvision.
    """
    return _ops.complete_box_iou(boxes1, boxes2, eps)


# ---- aligned (element-wise) forms --------------------------------------------------------------
def box_iou_aligned(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of corresponding boxes: ``boxes1 [..., 4]``, ``boxes2 [..., 4]`` (broadcast) -> ``[...]``.

    The diagonal of ``box_iou`` without computing the matrix; same formula and numerics.
    """
    return _ops.box_iou_aligned(boxes1, boxes2)


def generalized_box_iou_aligned(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU of corresponding boxes ``[..., 4]`` (broadcast) -> ``[...]``."""
    return _ops.generalized_box_iou_aligned(boxes1, boxes2)


def distance_box_iou_aligned(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Distance IoU of corresponding boxes ``[..., 4]`` (broadcast) -> ``[...]``."""
    return _ops.distance_box_iou_aligned(boxes1, boxes2, eps)


def complete_box_iou_aligned(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of corresponding boxes ``[..., 4]`` (broadcast) -> ``[...]``."""
    return _ops.complete_box_iou_aligned(boxes1, boxes2, eps)


# ---- mmdet / mmcv ------------------------------------------------------------------------------
def bbox_overlaps(
    bboxes1: Tensor,
    bboxes2: Tensor,
    mode: str = "iou",
    is_aligned: bool = False,
    eps: float = 1e-6,
    offset: int = 0,
) -> Tensor:
    """mmdet/mmcv ``bbox_overlaps``: ``bboxes1 [..., M, 4]``, ``bboxes2 [..., N, 4]`` -> ``[..., M, N]``.

    ``mode``: ``'iou'`` (intersection over union), ``'iof'`` (intersection over the area of
    ``bboxes1``) or ``'giou'``. With ``is_aligned=True`` the shapes must be equal and the result is
    ``[..., M]``. Batch dimensions must match (no broadcasting), as in mmdet.

    Conventions (mmdet): the union (or ``bboxes1``'s area for iof) is clamped below by ``eps``, so
    degenerate boxes give 0, not NaN; for giou the enclosing area is clamped by ``eps`` too.
    ``offset=1`` is mmcv's legacy pixel convention: widths and heights are ``x2 - x1 + 1``.
    """
    return _ops.bbox_overlaps(bboxes1, bboxes2, mode, is_aligned, eps, offset)


# ---- losses (torchvision) ----------------------------------------------------------------------
def generalized_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """torchvision ``generalized_box_iou_loss``: ``1 - giou`` for corresponding boxes ``[..., 4]``.

    The intersection is counted only where it is strictly positive; ``iou = inter / (union + eps)``
    and the enclosing term is ``(C - union) / (C + eps)``. ``reduction``: ``'none'`` (``[...]``),
    ``'mean'`` (0 for empty input) or ``'sum'``; sums are accumulated in float64 in a fixed order.
    """
    return _ops.generalized_box_iou_loss(boxes1, boxes2, reduction, eps)


def distance_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """torchvision ``distance_box_iou_loss``: ``1 - iou + d² / (c² + eps)`` for corresponding boxes."""
    return _ops.distance_box_iou_loss(boxes1, boxes2, reduction, eps)


def complete_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """torchvision ``complete_box_iou_loss``: the DIoU loss plus ``alpha * v``.

    As in torchvision, the DIoU part always uses ``eps = 1e-7``; ``eps`` enters only ``alpha``.
    """
    return _ops.complete_box_iou_loss(boxes1, boxes2, reduction, eps)


__all__ = [
    "bbox_overlaps",
    "box_area",
    "box_convert",
    "box_iou",
    "box_iou_aligned",
    "clip_boxes_to_image",
    "complete_box_iou",
    "complete_box_iou_aligned",
    "complete_box_iou_loss",
    "distance_box_iou",
    "distance_box_iou_aligned",
    "distance_box_iou_loss",
    "generalized_box_iou",
    "generalized_box_iou_aligned",
    "generalized_box_iou_loss",
    "remove_small_boxes",
]
