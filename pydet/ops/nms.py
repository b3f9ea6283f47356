"""Non-maximum suppression: drop-ins for torchvision's ``nms``/``batched_nms``, detectron2's
``nms_rotated``/``batched_nms_rotated`` and mmcv's ``soft_nms``, plus ``multiclass_nms``, a whole
detector's post-processing in one call with static output shapes, and ``topk_per_level``, the
candidate selection before it (the best k scores per image and feature level, in one pass).

Conventions shared by the family:

* Greedy by score: a box is suppressed when its IoU with a kept, higher-scoring box is **>**
  ``iou_threshold`` (``soft_nms``: ``>=``, as in mmcv). IoU is torchvision's ``box_iou`` formula in
  the boxes' dtype, compared with the threshold in float64 as torchvision does.
* Equal scores are ordered by lower index first (a stable order), on CPU and CUDA alike, so both
  devices return identical results.
* NaN scores are never kept and never suppress anything. Boxes with a NaN or infinite coordinate,
  zero area or inverted corners have IoU 0 (or NaN) with every box: they never suppress and are
  never suppressed, so they are kept (unless their score is NaN).
* ``iou_threshold`` must be >= 0 (``ValueError`` otherwise). Empty inputs give empty outputs.
* Results are deterministic: same input, same output, any thread count.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pydet.ops import _checks

_ops = torch.ops.pydet


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision ``nms``: indices (int64) of the kept boxes of ``boxes [N, 4]`` (xyxy), in
    decreasing score order (``scores [N]``)."""
    return _ops.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision ``batched_nms``: NMS within each category ``idxs [N]`` (any integer dtype);
    boxes of different categories never suppress each other.

    Native: no coordinate-offset trick (so no float overflow or precision loss with large
    coordinates) and no per-class Python loop; O(N) extra memory. Returns kept indices in decreasing
    score order.
    """
    return _ops.batched_nms(boxes, scores, idxs, iou_threshold)


class MulticlassNmsOutput(NamedTuple):
    """Fixed-size, padded detections per image.

    ``num_detections [B]`` int64; ``boxes [B, max_detections, 4]`` (xyxy, the boxes' dtype);
    ``scores [B, max_detections]``; ``labels [B, max_detections]`` int64 (class index);
    ``indices [B, max_detections]`` int64 (the anchor each detection came from). Entries past
    ``num_detections[b]`` are padding: boxes and scores 0, labels and indices -1.
    """

    num_detections: Tensor
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    indices: Tensor


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    topk_per_class: int = 1000,
    max_detections: int = 100,
    class_agnostic: bool = False,
    background_class: int | None = None,
    box_format: str = "xyxy",
    labels: Tensor | None = None,
    num_classes: int | None = None,
) -> MulticlassNmsOutput:
    """A detector's post-processing in one call (TensorRT EfficientNMS / torchvision SSD-RetinaNet style).

    Args:
        boxes: ``[B, N, 4]`` (one box per anchor, shared by all classes) or ``[B, N, C, 4]``
            (one box per anchor and class), in ``box_format`` (``'xyxy'`` or ``'cxcywh'``).
        scores: ``[B, N, C]`` per-class scores (probabilities, after sigmoid/softmax); or ``[B, N]``,
            one score per candidate, with ``labels``.
        score_threshold: candidates need ``score > score_threshold``.
        iou_threshold: suppression when IoU ``>`` this, between boxes of the same class (or of any
            class when ``class_agnostic``).
        topk_per_class: at most this many candidates per image and class enter NMS (the highest
            scoring ones), as torchvision's ``topk_candidates``; ``-1`` for no limit.
        max_detections: detections kept per image (the output size).
        background_class: a class index to ignore (e.g. 0 for SSD's softmax background), or None.
        labels: ``[B, N]`` integer class of each candidate, with ``scores [B, N]``: the form of
            torchvision's ``batched_nms(boxes, scores, idxs)`` after a top-k selection (RetinaNet,
            FCOS), without spreading the candidates into a mostly empty ``[B, N, C]`` matrix. The
            result equals the dense call on that matrix (score in the label's column, ``-inf``
            elsewhere). Negative labels are padding: never candidates. A label ``>= num_classes``
            raises on CPU and trips the device-side index check on CUDA.
        num_classes: ``C``, required with ``labels`` (sizes the per-class work on CUDA without
            reading the labels back); ``boxes`` may then be ``[B, N, C, 4]``.

    Order: detections are sorted by score, ties by class then anchor index (the candidate's
    position ``n`` with ``labels``). Output boxes are xyxy.
    Shapes are static and nothing synchronises with the host, so it runs under
    ``torch.compile(fullgraph=True)``, CUDA graphs and ``torch.export``.
    """
    return MulticlassNmsOutput(
        *_ops.multiclass_nms(
            boxes,
            scores,
            score_threshold,
            iou_threshold,
            topk_per_class,
            max_detections,
            class_agnostic,
            background_class,
            box_format,
            labels,
            num_classes,
        )
    )


def multiclass_nms_to_list(output: MulticlassNmsOutput) -> list[dict[str, Tensor]]:
    """torchvision's detection format: one ``dict(boxes, scores, labels)`` per image, unpadded."""
    counts = output.num_detections.tolist()
    return [
        {"boxes": output.boxes[b, :n], "scores": output.scores[b, :n], "labels": output.labels[b, :n]}
        for b, n in enumerate(counts)
    ]


def topk_per_level(
    scores: Tensor, k: int, score_threshold: float | None = None, level_sizes: list[int] | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` best scores above ``score_threshold`` per image and feature level, in one pass, with
    static shapes (the candidate selection of torchvision's RetinaNet/FCOS and mmdet's
    ``filter_scores_and_topk``, without their data-dependent sizes).

    Args:
        scores: ``[B, N]`` or ``[B, N, C]`` (per anchor and class), any floating dtype.
        k: candidates kept per image and level (the output size).
        score_threshold: candidates need ``score > score_threshold``, compared in the scores' dtype
            as ``scores > score_threshold`` is in torch; ``None``: every score but NaN (``-inf``
            included). NaN scores are never candidates.
        level_sizes: the number of anchors (rows of ``N``) of each level, in order, summing to ``N``;
            ``None``: one level.

    Returns:
        ``values [B, L, k]`` (the scores' dtype) and ``indices [B, L, k]`` int64: per image and level
        the candidates in decreasing score order, equal scores by increasing index; an index is the
        position in the image's flattened ``[N * C]`` scores (anchor ``i // C``, class ``i % C``).
        When a level has fewer than ``k`` candidates the rest is padding: value ``-inf``, index -1.

    Same candidates as ``scores[b, level].flatten()`` thresholded then ``topk``, except that
    ``torch.topk`` leaves the order of equal scores unspecified. CPU: each level is scanned in
    parallel chunks that keep their own top k behind a rising bound, in 64-score vector blocks, so a
    selective threshold costs little more than reading the scores. CUDA: a stable sort per level.
    """
    return _ops.topk_per_level(scores, k, score_threshold, level_sizes)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "linear",
    offset: int = 0,
) -> tuple[Tensor, Tensor]:
    """mmcv ``soft_nms``: ``(dets [K, 5], indices [K])``, dets = box and decayed score, in selection order.

    Repeatedly selects the highest remaining score (first one on ties) and decays the others by
    their IoU ``o`` with it: ``'naive'`` drops them when ``o >= iou_threshold``, ``'linear'``
    multiplies by ``1 - o`` when ``o >= iou_threshold``, ``'gaussian'`` by ``exp(-o² / sigma)``.
    Boxes whose score falls below ``min_score`` are dropped (the last remaining box takes their
    place, as in mmcv, which fixes the order among equal scores). ``offset=1``: mmcv's legacy
    ``x2 - x1 + 1`` widths. A NaN IoU (NaN box) leaves scores unchanged.
    """
    return _ops.soft_nms(boxes, scores, iou_threshold, sigma, min_score, method, offset)


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of rotated boxes ``[N, 5]`` x ``[M, 5]`` -> ``[N, M]`` (detectron2 ``pairwise_iou_rotated``).

    Boxes are ``(cx, cy, w, h, angle)``, angle in degrees, counter-clockwise. The intersection is the
    exact area of the overlap polygon, computed in float64; boxes with area < 1e-14 give 0.
    """
    return _ops.box_iou_rotated(boxes1, boxes2)


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """detectron2 ``nms_rotated`` on ``(cx, cy, w, h, angle_degrees)`` boxes: suppress when IoU > threshold."""
    return _ops.nms_rotated(boxes, scores, iou_threshold)


def batched_nms_rotated(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """detectron2 ``batched_nms_rotated``: rotated NMS within each category ``idxs``."""
    return _ops.batched_nms_rotated(boxes, scores, idxs, iou_threshold)


# ---- fake kernels of the data-dependent ops -----------------------------------------------------
# The number of kept boxes depends on the data, so these ops have Python fakes (an unbacked output
# size) instead of Meta registrations of their C++ front ends; they repeat the front ends' checks
# (csrc/ops/nms.h, soft_nms.h, nms_rotated.h), which tests/test_bad_input.py keeps identical.
def _check_threshold(op: str, arg: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"pydet.{op}: {arg} must be >= 0 (an IoU threshold), got {value:g}")


def _check_scores(op: str, boxes, scores) -> None:
    if not (scores.dim() == 1 and scores.shape[0] == boxes.shape[0]):
        raise ValueError(
            f"pydet.{op}: scores must have shape [N] matching boxes [N, {boxes.shape[-1]}], got scores "
            f"{_checks.shape_str(scores.shape)} and boxes {_checks.shape_str(boxes.shape)}"
        )
    _checks.check_floating(scores, op, "scores")
    _checks.check_same_device(boxes, "boxes", scores, "scores", op)


def _check_idxs(op: str, boxes, idxs) -> None:
    if not (idxs.dim() == 1 and idxs.shape[0] == boxes.shape[0]):
        raise ValueError(
            f"pydet.{op}: idxs must have shape [N] matching boxes, got idxs {_checks.shape_str(idxs.shape)} and boxes "
            f"{_checks.shape_str(boxes.shape)}"
        )
    _checks.check_integer(idxs, op, "idxs", "the category of each box")
    _checks.check_same_device(boxes, "boxes", idxs, "idxs", op)


def _check_rotated(op: str, boxes, arg: str) -> None:
    if not (boxes.dim() == 2 and boxes.shape[1] == 5):
        raise ValueError(
            f"pydet.{op}: {arg} must have shape [N, 5] (cx, cy, w, h, angle in degrees), got "
            f"{_checks.shape_str(boxes.shape)}"
        )
    _checks.check_floating(boxes, op, arg)


def _kept_indices(boxes):
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


@torch.library.register_fake("pydet::nms")
def _nms(boxes, scores, iou_threshold):
    _checks.check_boxes(boxes, "nms", "boxes", "[N, 4]", 2, 2)
    _check_scores("nms", boxes, scores)
    _check_threshold("nms", "iou_threshold", iou_threshold)
    return _kept_indices(boxes)


@torch.library.register_fake("pydet::batched_nms")
def _batched_nms(boxes, scores, idxs, iou_threshold):
    if boxes.numel() == 0:  # torchvision's early return, before the other arguments are looked at
        return _kept_indices(boxes)
    _checks.check_boxes(boxes, "batched_nms", "boxes", "[N, 4]", 2, 2)
    _check_scores("batched_nms", boxes, scores)
    _check_idxs("batched_nms", boxes, idxs)
    _check_threshold("batched_nms", "iou_threshold", iou_threshold)
    return _kept_indices(boxes)


@torch.library.register_fake("pydet::soft_nms")
def _soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method="linear", offset=0):
    op = "soft_nms"
    _checks.check_boxes(boxes, op, "boxes", "[N, 4]", 2, 2)
    _check_scores(op, boxes, scores)
    _check_threshold(op, "iou_threshold", iou_threshold)
    _checks.check_choice(method, ("naive", "linear", "gaussian"), op, "method")
    if not sigma > 0:
        raise ValueError(f"pydet.soft_nms: sigma must be > 0, got {sigma:g}")
    if min_score != min_score:
        raise ValueError("pydet.soft_nms: min_score must not be NaN")
    if offset not in (0, 1):
        raise ValueError(f"pydet.soft_nms: offset must be 0 or 1, got {offset}")
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept, 5)), boxes.new_empty((kept,), dtype=torch.int64)


@torch.library.register_fake("pydet::nms_rotated")
def _nms_rotated(boxes, scores, iou_threshold):
    _check_rotated("nms_rotated", boxes, "boxes")
    _check_scores("nms_rotated", boxes, scores)
    _check_threshold("nms_rotated", "iou_threshold", iou_threshold)
    return _kept_indices(boxes)


@torch.library.register_fake("pydet::batched_nms_rotated")
def _batched_nms_rotated(boxes, scores, idxs, iou_threshold):
    if boxes.dim() > 0 and boxes.shape[-1] == 5 and boxes.numel() == 0:  # detectron2's early return
        return _kept_indices(boxes)
    _check_rotated("batched_nms_rotated", boxes, "boxes")
    _check_scores("batched_nms_rotated", boxes, scores)
    _check_idxs("batched_nms_rotated", boxes, idxs)
    _check_threshold("batched_nms_rotated", "iou_threshold", iou_threshold)
    return _kept_indices(boxes)


__all__ = [
    "MulticlassNmsOutput",
    "batched_nms",
    "batched_nms_rotated",
    "box_iou_rotated",
    "multiclass_nms",
    "multiclass_nms_to_list",
    "nms",
    "nms_rotated",
    "soft_nms",
    "topk_per_level",
]
