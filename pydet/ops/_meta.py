"""Fake (meta) kernels for every ``torch.ops.pydet`` operator.

They compute output shapes, dtypes and devices without touching data, so the operators work on
meta tensors, under ``torch.compile`` (including ``dynamic=True``) and ``torch.export``. Each one
validates its arguments exactly as the C++ front ends do (see ``_checks.py``).
"""

from __future__ import annotations

import torch

from pydet.ops import _checks as C

_lib = "pydet::"


def _register(name: str):
    return torch.library.register_fake(_lib + name)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# ---- boxes -------------------------------------------------------------------------------------
@_register("remove_small_boxes")
def _remove_small_boxes(boxes, min_size):
    C.check_boxes(boxes, "remove_small_boxes", "boxes", "[N, 4]", 2, 2)
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


# ---- NMS family --------------------------------------------------------------------------------
def _check_threshold(op: str, arg: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"pydet.{op}: {arg} must be >= 0 (an IoU threshold), got {value:g}")


def _check_scores(op: str, boxes, scores) -> None:
    if not (scores.dim() == 1 and scores.shape[0] == boxes.shape[0]):
        raise ValueError(
            f"pydet.{op}: scores must have shape [N] matching boxes [N, {boxes.shape[-1]}], got scores "
            f"{C.shape_str(scores.shape)} and boxes {C.shape_str(boxes.shape)}"
        )
    C.check_floating(scores, op, "scores")
    C.check_same_device(boxes, "boxes", scores, "scores", op)


def _check_idxs(op: str, boxes, idxs) -> None:
    if not (idxs.dim() == 1 and idxs.shape[0] == boxes.shape[0]):
        raise ValueError(
            f"pydet.{op}: idxs must have shape [N] matching boxes, got idxs {C.shape_str(idxs.shape)} and boxes "
            f"{C.shape_str(boxes.shape)}"
        )
    C.check_integer(idxs, op, "idxs", "the category of each box")
    C.check_same_device(boxes, "boxes", idxs, "idxs", op)


def _check_rotated(op: str, boxes, arg: str) -> None:
    if not (boxes.dim() == 2 and boxes.shape[1] == 5):
        raise ValueError(
            f"pydet.{op}: {arg} must have shape [N, 5] (cx, cy, w, h, angle in degrees), got "
            f"{C.shape_str(boxes.shape)}"
        )
    C.check_floating(boxes, op, arg)


def _kept_indices(boxes):
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


@_register("nms")
def _nms(boxes, scores, iou_threshold):
    C.check_boxes(boxes, "nms", "boxes", "[N, 4]", 2, 2)
    _check_scores("nms", boxes, scores)
    _check_threshold("nms", "iou_threshold", iou_threshold)
    return _kept_indices(boxes)


@_register("batched_nms")
def _batched_nms(boxes, scores, idxs, iou_threshold):
    C.check_boxes(boxes, "batched_nms", "boxes", "[N, 4]", 2, 2)
    _check_scores("batched_nms", boxes, scores)
    _check_idxs("batched_nms", boxes, idxs)
    _check_threshold("batched_nms", "iou_threshold", iou_threshold)
    return _kept_indices(boxes)


@_register("soft_nms")
def _soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method="linear", offset=0):
    op = "soft_nms"
    C.check_boxes(boxes, op, "boxes", "[N, 4]", 2, 2)
    _check_scores(op, boxes, scores)
    _check_threshold(op, "iou_threshold", iou_threshold)
    C.check_choice(method, ("naive", "linear", "gaussian"), op, "method")
    if not sigma > 0:
        raise ValueError(f"pydet.soft_nms: sigma must be > 0, got {sigma:g}")
    if min_score != min_score:
        raise ValueError("pydet.soft_nms: min_score must not be NaN")
    if offset not in (0, 1):
        raise ValueError(f"pydet.soft_nms: offset must be 0 or 1, got {offset}")
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept, 5)), boxes.new_empty((kept,), dtype=torch.int64)


@_register("nms_rotated")
def _nms_rotated(boxes, scores, iou_threshold):
    _check_rotated("nms_rotated", boxes, "boxes")
    _check_scores("nms_rotated", boxes, scores)
    _check_threshold("nms_rotated", "iou_threshold", iou_threshold)
    return _kept_indices(boxes)


@_register("batched_nms_rotated")
def _batched_nms_rotated(boxes, scores, idxs, iou_threshold):
    _check_rotated("batched_nms_rotated", boxes, "boxes")
    _check_scores("batched_nms_rotated", boxes, scores)
    _check_idxs("batched_nms_rotated", boxes, idxs)
    _check_threshold("batched_nms_rotated", "iou_threshold", iou_threshold)
    return _kept_indices(boxes)
