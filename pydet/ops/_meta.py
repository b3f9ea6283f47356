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
@_register("box_area")
def _box_area(boxes):
    C.check_boxes(boxes, "box_area", "boxes", "[..., 4]", 1, C.ANY_RANK)
    return boxes.new_empty(boxes.shape[:-1], dtype=_compute_dtype(boxes.dtype))


@_register("_box_area_backward")
def _box_area_backward(grad, boxes):
    return boxes.new_empty(boxes.shape)


@_register("box_convert")
def _box_convert(boxes, in_fmt, out_fmt):
    C.check_boxes(boxes, "box_convert", "boxes", "[..., 4]", 1, C.ANY_RANK)
    C.check_choice(in_fmt, C.BOX_FORMATS, "box_convert", "in_fmt")
    C.check_choice(out_fmt, C.BOX_FORMATS, "box_convert", "out_fmt")
    if in_fmt == out_fmt:
        return torch.empty_like(boxes)  # a clone, like torchvision
    return boxes.new_empty(boxes.shape)


@_register("_box_convert_backward")
def _box_convert_backward(grad, in_fmt, out_fmt):
    if in_fmt == out_fmt:
        return torch.empty_like(grad)
    return grad.new_empty(grad.shape)


def _check_size(size) -> None:
    if len(size) != 2 or size[0] < 0 or size[1] < 0:
        raise ValueError(
            f"pydet.clip_boxes_to_image: size must be (height, width) with both >= 0, got {C.shape_str(size)}"
        )


@_register("clip_boxes_to_image")
def _clip_boxes_to_image(boxes, size):
    C.check_boxes(boxes, "clip_boxes_to_image", "boxes", "[..., 4]", 1, C.ANY_RANK)
    _check_size(size)
    return boxes.new_empty(boxes.shape)


@_register("_clip_boxes_to_image_backward")
def _clip_boxes_to_image_backward(grad, boxes, size):
    return boxes.new_empty(boxes.shape)


@_register("remove_small_boxes")
def _remove_small_boxes(boxes, min_size):
    C.check_boxes(boxes, "remove_small_boxes", "boxes", "[N, 4]", 2, 2)
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


# ---- IoU family --------------------------------------------------------------------------------
def _pairwise(op, boxes1, n1, boxes2, n2, batched=False):
    C.check_pairwise(op, boxes1, n1, boxes2, n2, batched)
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    return boxes1.new_empty((*boxes1.shape[:-1], boxes2.shape[-2]), dtype=dtype)


def _aligned(op, boxes1, n1, boxes2, n2):
    shape = C.broadcast_leading(op, boxes1, n1, boxes2, n2)
    return boxes1.new_empty(shape, dtype=torch.promote_types(boxes1.dtype, boxes2.dtype))


for _name in ("box_iou", "generalized_box_iou"):

    def _fake(boxes1, boxes2, _name=_name):
        return _pairwise(_name, boxes1, "boxes1", boxes2, "boxes2")

    _register(_name)(_fake)

for _name in ("distance_box_iou", "complete_box_iou"):

    def _fake(boxes1, boxes2, eps=1e-7, _name=_name):
        return _pairwise(_name, boxes1, "boxes1", boxes2, "boxes2")

    _register(_name)(_fake)

for _name in ("box_iou_aligned", "generalized_box_iou_aligned"):

    def _fake(boxes1, boxes2, _name=_name):
        return _aligned(_name, boxes1, "boxes1", boxes2, "boxes2")

    _register(_name)(_fake)

for _name in ("distance_box_iou_aligned", "complete_box_iou_aligned"):

    def _fake(boxes1, boxes2, eps=1e-7, _name=_name):
        return _aligned(_name, boxes1, "boxes1", boxes2, "boxes2")

    _register(_name)(_fake)


@_register("bbox_overlaps")
def _bbox_overlaps(bboxes1, bboxes2, mode="iou", is_aligned=False, eps=1e-6, offset=0):
    op = "bbox_overlaps"
    C.check_choice(mode, C.OVERLAP_MODES, op, "mode")
    if offset not in (0, 1):
        raise ValueError(f"pydet.bbox_overlaps: offset must be 0 or 1, got {offset}")
    if not is_aligned:
        return _pairwise(op, bboxes1, "bboxes1", bboxes2, "bboxes2", batched=True)
    C.check_boxes(bboxes1, op, "bboxes1", "[..., M, 4]", 2, C.ANY_RANK)
    C.check_boxes(bboxes2, op, "bboxes2", "[..., M, 4]", 2, C.ANY_RANK)
    if bboxes1.shape != bboxes2.shape:
        raise ValueError(
            f"pydet.bbox_overlaps: with is_aligned=True, bboxes1 {C.shape_str(bboxes1.shape)} and bboxes2 "
            f"{C.shape_str(bboxes2.shape)} must have the same shape"
        )
    return _aligned(op, bboxes1, "bboxes1", bboxes2, "bboxes2")


for _name in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"):

    def _fake(boxes1, boxes2, reduction="none", eps=1e-7, _name=_name):
        C.check_choice(reduction, C.REDUCTIONS, _name, "reduction")
        per_pair = _aligned(_name, boxes1, "boxes1", boxes2, "boxes2")
        return per_pair if reduction == "none" else per_pair.new_empty(())

    _register(_name)(_fake)


@_register("_pairwise_box_metric_backward")
def _pairwise_box_metric_backward(grad, boxes1, boxes2, metric, eps, offset):
    C.check_choice(metric, C.METRICS, "_pairwise_box_metric_backward", "metric")
    return boxes1.new_empty(boxes1.shape), boxes2.new_empty(boxes2.shape)


@_register("_aligned_box_metric_backward")
def _aligned_box_metric_backward(grad, boxes1, boxes2, metric, eps, offset, grad_scale):
    C.check_choice(metric, C.METRICS, "_aligned_box_metric_backward", "metric")
    return boxes1.new_empty(boxes1.shape), boxes2.new_empty(boxes2.shape)
