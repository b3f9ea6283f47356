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


# ---- anchors -----------------------------------------------------------------------------------
@_register("anchor_grid")
def _anchor_grid(base_anchors, shifts_x, shifts_y, scales=(), anchor_major=False, shift_corners=True):
    levels = len(base_anchors)
    if levels == 0:
        raise ValueError("pydet.anchor_grid: base_anchors must hold at least one level")
    if len(shifts_x) != levels or len(shifts_y) != levels:
        raise ValueError(
            "pydet.anchor_grid: base_anchors, shifts_x and shifts_y must have one entry per level, got "
            f"{levels}, {len(shifts_x)} and {len(shifts_y)}"
        )
    if len(scales) not in (0, 2 * levels):
        raise ValueError(
            f"pydet.anchor_grid: scales must be empty or hold (scale_x, scale_y) per level ({2 * levels} values), "
            f"got {len(scales)}"
        )
    rows = 0
    for level, (b, sx, sy) in enumerate(zip(base_anchors, shifts_x, shifts_y, strict=True)):
        if not (b.dim() == 2 and b.shape[1] == 4):
            raise ValueError(
                f"pydet.anchor_grid: base_anchors[{level}] must have shape [A, 4], got {C.shape_str(b.shape)}"
            )
        if sx.dim() != 1 or sy.dim() != 1:
            raise ValueError(
                f"pydet.anchor_grid: shifts_x[{level}] and shifts_y[{level}] must be 1-D, got "
                f"{C.shape_str(sx.shape)} and {C.shape_str(sy.shape)}"
            )
        for t in (b, sx, sy):
            C.check_floating(t, "anchor_grid", "base_anchors/shifts")
            if t.dtype != base_anchors[0].dtype:
                raise TypeError(
                    "pydet.anchor_grid: every tensor must have the dtype of base_anchors[0] "
                    f"({C.dtype_name(base_anchors[0].dtype)}), got {C.dtype_name(t.dtype)}"
                )
            C.check_same_device(base_anchors[0], "base_anchors[0]", t, "every other tensor", "anchor_grid")
        rows = rows + b.shape[0] * sx.shape[0] * sy.shape[0]
    return base_anchors[0].new_empty((rows, 4))


# ---- box coding --------------------------------------------------------------------------------
_CODINGS = ("torchvision", "mmdet", "ssd")


def _check_coder_params(
    op, weights, means, wh_clip_min=-float("inf"), wh_clip_max=float("inf"), center_clamp=0.0
):
    if len(weights) != 4:
        raise ValueError(f"pydet.{op}: weights must hold 4 values, got {len(weights)}")
    if len(means) != 4:
        raise ValueError(f"pydet.{op}: means must hold 4 values, got {len(means)}")
    for w in weights:
        if not (abs(w) < float("inf") and w != 0.0):
            raise ValueError(f"pydet.{op}: weights must be finite and non-zero")
    if wh_clip_min > wh_clip_max:
        raise ValueError(f"pydet.{op}: wh_clip_min ({wh_clip_min}) must be <= wh_clip_max ({wh_clip_max})")
    if not center_clamp >= 0.0:
        raise ValueError(f"pydet.{op}: center_clamp must be >= 0, got {center_clamp}")


def _check_reference(op, reference, batch, n, data_rank, data_name):
    if not (reference.shape[-2] == n and (reference.dim() == 2 or reference.shape[0] == batch)):
        b = f", B = {batch}" if data_rank == 3 else ""
        raise ValueError(
            f"pydet.{op}: reference must have shape [N, 4] or [B, N, 4] matching {data_name} (N = {n}{b}), "
            f"got {C.shape_str(reference.shape)}"
        )
    if reference.dim() == 3 and data_rank != 3:
        raise ValueError(
            f"pydet.{op}: a batched reference [B, N, 4] needs batched {data_name} [B, ...], got {data_name} of rank 2"
        )


def _check_row_index(op, name, index, data, data_name, shapes):
    """An int64 row index into data [N, ...] or [B, N, ...]: [K] or [B, K] (``shapes`` says so)."""
    if index.dtype != torch.int64:
        raise TypeError(f"pydet.{op}: {name} must be an int64 tensor, got {C.dtype_name(index.dtype)}")
    C.check_same_device(data, data_name, index, name, op)
    if not (index.dim() == data.dim() - 1 and (index.dim() == 1 or index.shape[0] == data.shape[0])):
        raise ValueError(
            f"pydet.{op}: {name} must have shape {shapes}, got {C.shape_str(index.shape)} with {data_name} "
            f"{C.shape_str(data.shape)}"
        )


@_register("box_encode")
def _box_encode(reference, targets, coding, weights, means, target_index=None):
    op = "box_encode"
    C.check_choice(coding, _CODINGS, op, "coding")
    _check_coder_params(op, weights, means)
    C.check_boxes(reference, op, "reference", "[N, 4] or [B, N, 4]", 2, 3)
    C.check_boxes(targets, op, "targets", "[N, 4] or [B, N, 4]", 2, 3)
    C.check_same_device(reference, "reference", targets, "targets", op)
    if reference.dtype != targets.dtype:
        raise TypeError(
            f"pydet.{op}: reference and targets must have the same dtype, got "
            f"{C.dtype_name(reference.dtype)} and {C.dtype_name(targets.dtype)}"
        )
    batch = targets.shape[0] if targets.dim() == 3 else 1
    n = targets.shape[-2]
    if target_index is not None:
        _check_row_index(
            op,
            "target_index",
            target_index,
            targets,
            "targets",
            "[N] for targets [M, 4] or [B, N] for targets [B, M, 4]",
        )
        n = target_index.shape[-1]
    _check_reference(
        op, reference, batch, n, targets.dim(), "targets" if target_index is None else "target_index"
    )
    shape = (batch, n, 4) if targets.dim() == 3 else (n, 4)
    return targets.new_empty(shape)


def _decode_checks(
    op, reference, deltas, coding, weights, means, wh_clip_min, wh_clip_max, center_clamp, max_shape
):
    C.check_choice(coding, _CODINGS, op, "coding")
    if max_shape is not None and coding == "ssd":
        raise ValueError(
            f"pydet.{op}: max_shape clips xyxy boxes (the 'torchvision' and 'mmdet' codings); the 'ssd' coding "
            "decodes (cx, cy, w, h)"
        )
    _check_coder_params(op, weights, means, wh_clip_min, wh_clip_max, center_clamp)
    if max_shape is not None and not (len(max_shape) == 2 and max_shape[0] >= 0 and max_shape[1] >= 0):
        raise ValueError(
            f"pydet.{op}: max_shape must be (height, width) with both >= 0, got {len(max_shape)} values"
        )
    C.check_boxes(reference, op, "reference", "[N, 4] or [B, N, 4]", 2, 3)
    C.check_floating(deltas, op, "deltas")
    C.check_same_device(reference, "reference", deltas, "deltas", op)
    if not (deltas.dim() in (2, 3) and deltas.shape[-1] > 0 and deltas.shape[-1] % 4 == 0):
        raise ValueError(
            f"pydet.{op}: deltas must have shape [N, 4 * C] or [B, N, 4 * C] (C >= 1), got {C.shape_str(deltas.shape)}"
        )
    batch = deltas.shape[0] if deltas.dim() == 3 else 1
    _check_reference(op, reference, batch, deltas.shape[-2], deltas.dim(), "deltas")


@_register("box_decode")
def _box_decode(
    reference,
    deltas,
    coding,
    weights,
    means,
    wh_clip_min,
    wh_clip_max,
    center_clamp,
    max_shape=None,
    index=None,
):
    _decode_checks(
        "box_decode",
        reference,
        deltas,
        coding,
        weights,
        means,
        wh_clip_min,
        wh_clip_max,
        center_clamp,
        max_shape,
    )
    if index is None:
        return deltas.new_empty(deltas.shape)
    _check_row_index(
        "box_decode",
        "index",
        index,
        deltas,
        "deltas",
        "[K] for deltas [N, 4 * C] or [B, K] for deltas [B, N, 4 * C]",
    )
    return deltas.new_empty((*deltas.shape[:-2], index.shape[-1], deltas.shape[-1]))


@_register("_box_decode_backward")
def _box_decode_backward(grad, reference, deltas, *args, **kwargs):
    return deltas.new_empty(deltas.shape)


# ---- IoU matching ------------------------------------------------------------------------------
_QUALITY_MODES = ("iou", "mm_iou", "mm_iof")


def _match_problem(op, gt, anchors, num_gt, mode, ignored):
    C.check_choice(mode, _QUALITY_MODES, op, "mode")
    C.check_boxes(gt, op, "gt", "[M, 4] or [B, M, 4]", 2, 3)
    C.check_boxes(anchors, op, "anchors", "[N, 4]", 2, 2)
    C.check_same_device(gt, "gt", anchors, "anchors", op)
    if gt.dtype != anchors.dtype:
        raise TypeError(
            f"pydet.{op}: gt and anchors must have the same dtype, got {C.dtype_name(gt.dtype)} and "
            f"{C.dtype_name(anchors.dtype)}"
        )
    batch = gt.shape[0] if gt.dim() == 3 else 1
    n = anchors.shape[0]
    if num_gt is not None:
        if num_gt.dtype != torch.int64:
            raise TypeError(f"pydet.{op}: num_gt must be an int64 tensor, got {C.dtype_name(num_gt.dtype)}")
        if not (num_gt.dim() == 1 and num_gt.shape[0] == batch):
            raise ValueError(
                f"pydet.{op}: num_gt must have shape [B] = [{batch}] (one count per image of gt), got "
                f"{C.shape_str(num_gt.shape)}"
            )
        C.check_same_device(gt, "gt", num_gt, "num_gt", op)
    if ignored is not None:
        if ignored.dtype != torch.bool:
            raise TypeError(f"pydet.{op}: ignored must be a bool tensor, got {C.dtype_name(ignored.dtype)}")
        if not (
            (ignored.dim() == 1 and ignored.shape[0] == n)
            or (ignored.dim() == 2 and ignored.shape[0] == batch and ignored.shape[1] == n)
        ):
            raise ValueError(
                f"pydet.{op}: ignored must have shape [N] or [B, N] = [{batch}, {n}], got {C.shape_str(ignored.shape)}"
            )
        C.check_same_device(gt, "gt", ignored, "ignored", op)
    return _compute_dtype(gt.dtype), gt.shape[:-2], gt.shape[-2], n


@_register("box_overlap_max")
def _box_overlap_max(gt, anchors, num_gt=None, mode="iou", anchors_first=False, eps=1e-6, ignored=None):
    dtype, lead, m, n = _match_problem("box_overlap_max", gt, anchors, num_gt, mode, ignored)
    return (
        gt.new_empty((*lead, n), dtype=dtype),
        gt.new_empty((*lead, n), dtype=torch.int64),
        gt.new_empty((*lead, m), dtype=dtype),
        gt.new_empty((*lead, m), dtype=torch.int64),
    )


@_register("box_overlap_ties")
def _box_overlap_ties(gt, anchors, gt_best, min_best, num_gt=None, mode="iou", eps=1e-6, ignored=None):
    op = "box_overlap_ties"
    dtype, lead, m, n = _match_problem(op, gt, anchors, num_gt, mode, ignored)
    if not (
        gt_best.dim() == gt.dim() - 1
        and gt_best.shape[-1] == m
        and (gt_best.dim() == 1 or gt_best.shape[0] == gt.shape[0])
    ):
        expected = "[M]" if gt.dim() == 2 else "[B, M]"
        raise ValueError(
            f"pydet.{op}: gt_best must have shape {expected} matching gt, got {C.shape_str(gt_best.shape)}"
        )
    C.check_same_device(gt, "gt", gt_best, "gt_best", op)
    if gt_best.dtype != dtype:
        raise TypeError(
            f"pydet.{op}: gt_best must have dtype {C.dtype_name(dtype)} (box_overlap_max's gt_max), got "
            f"{C.dtype_name(gt_best.dtype)}"
        )
    return gt.new_empty((*lead, n), dtype=torch.int64)


# ---- classification losses ---------------------------------------------------------------------
def _focal_inputs(op, inputs, targets, alpha, gamma, reduction):
    C.check_choice(reduction, C.REDUCTIONS, op, "reduction")
    C.check_floating(inputs, op, "inputs")
    C.check_floating(targets, op, "targets")
    C.check_same_device(inputs, "inputs", targets, "targets", op)
    if inputs.shape != targets.shape:
        raise ValueError(
            f"pydet.{op}: targets must have the same shape as inputs {C.shape_str(inputs.shape)}, got "
            f"{C.shape_str(targets.shape)}"
        )
    if not alpha <= 1.0:
        raise ValueError(
            f"pydet.{op}: alpha must be in [0, 1] (or negative to disable the class weighting), got {alpha:g}"
        )
    if not (gamma >= 0.0 and gamma != float("inf")):
        raise ValueError(f"pydet.{op}: gamma must be finite and >= 0, got {gamma:g}")
    return torch.result_type(inputs, targets)


@_register("sigmoid_focal_loss")
def _sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    dtype = _focal_inputs("sigmoid_focal_loss", inputs, targets, alpha, gamma, reduction)
    return inputs.new_empty(inputs.shape if reduction == "none" else (), dtype=dtype)


@_register("_sigmoid_focal_loss_backward")
def _sigmoid_focal_loss_backward(grad, inputs, targets, alpha, gamma, reduction, targets_grad):
    _focal_inputs("_sigmoid_focal_loss_backward", inputs, targets, alpha, gamma, reduction)
    return inputs.new_empty(inputs.shape), targets.new_empty(targets.shape if targets_grad else (0,))


# ---- depthwise convolution ---------------------------------------------------------------------
ACTIVATIONS = ("none", "relu", "relu6", "silu", "swish", "hardswish")


def _depthwise_geometry(op, input, weight, bias, stride, padding, dilation, activation):
    """Output [N, C, OH, OW] of depthwise_conv2d, checked like csrc/ops/depthwise_conv.h."""
    C.check_floating(input, op, "input")
    if input.dim() != 4:
        raise ValueError(f"pydet.{op}: input must have shape [N, C, H, W], got {C.shape_str(input.shape)}")
    c = input.shape[1]
    if weight.dtype != input.dtype:
        raise TypeError(
            f"pydet.{op}: weight must have input's dtype ({C.dtype_name(input.dtype)}), got "
            f"{C.dtype_name(weight.dtype)}"
        )
    C.check_same_device(input, "input", weight, "weight", op)
    if not (
        weight.dim() == 4
        and weight.shape[0] == c
        and weight.shape[1] == 1
        and weight.shape[2] > 0
        and weight.shape[3] > 0
    ):
        raise ValueError(
            f"pydet.{op}: weight must have shape [C, 1, KH, KW] with C = {c} (input channels; one filter per "
            f"channel), got {C.shape_str(weight.shape)}"
        )
    if bias is not None:
        if bias.dtype != input.dtype:
            raise TypeError(
                f"pydet.{op}: bias must have input's dtype ({C.dtype_name(input.dtype)}), got "
                f"{C.dtype_name(bias.dtype)}"
            )
        C.check_same_device(input, "input", bias, "bias", op)
        if not (bias.dim() == 1 and bias.shape[0] == c):
            raise ValueError(
                f"pydet.{op}: bias must have shape [C] with C = {c}, got {C.shape_str(bias.shape)}"
            )
    for name, values, least in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if not (len(values) == 2 and values[0] >= least and values[1] >= least):
            raise ValueError(f"pydet.{op}: {name} must be 2 integers >= {least}, got {C.shape_str(values)}")
    kh, kw = weight.shape[2], weight.shape[3]
    spans = (
        input.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1,
        input.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1,
    )
    oh, ow = (0 if span < 0 else span // s + 1 for span, s in zip(spans, stride, strict=True))
    if not (oh > 0 and ow > 0):
        raise ValueError(
            f"pydet.{op}: the output would be empty: input {C.shape_str(input.shape)} with kernel {kh}x{kw}, "
            f"padding {C.shape_str(padding)} and dilation {C.shape_str(dilation)} gives an output of {oh}x{ow}"
        )
    C.check_choice(activation, ACTIVATIONS, op, "activation")
    return [input.shape[0], c, oh, ow]


@_register("depthwise_conv2d")
def _depthwise_conv2d(
    input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), activation="none"
):
    shape = _depthwise_geometry(
        "depthwise_conv2d", input, weight, bias, stride, padding, dilation, activation
    )
    return input.new_empty(shape)


@_register("_depthwise_conv2d_backward")
def _depthwise_conv2d_backward(grad, input, weight, bias, stride, padding, dilation, activation):
    _depthwise_geometry(
        "depthwise_conv2d_backward", input, weight, bias, stride, padding, dilation, activation
    )
    return (
        input.new_empty(input.shape),
        weight.new_empty(weight.shape),
        input.new_empty((input.shape[1],)),
    )
