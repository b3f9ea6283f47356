"""ONNX export of pydet's NMS, RoI pooling and deformable convolution ops to standard ONNX operators.

``torch.onnx.export(..., dynamo=True, custom_translation_table=pydet.onnx.translation_table())``
(or :func:`export`) rewrites ``pydet::nms`` and ``pydet::multiclass_nms`` as ``NonMaxSuppression``
plus ``TopK``/``Gather``/``Pad`` graphs (``multiclass_nms``'s labels form first spreads the scores
into per-class columns with ``ScatterElements``), ``pydet::topk_per_level`` as a ``TopK`` per level, and
``pydet::roi_align`` as ``RoiAlign`` (``half_pixel`` when aligned) and ``pydet::deform_conv2d`` as
``DeformConv`` (opset 19), that any ONNX runtime executes.
Requires ``onnxscript``.

Differences from the eager ops, all in corner cases: ONNX runtimes break ties between equal scores
in their own order; ``NonMaxSuppression`` normalises inverted corners (pydet gives such boxes IoU 0)
and drops boxes scored ``-inf`` (pydet keeps them); NaN scores are dropped as in pydet.
``topk_per_level`` without a threshold ranks NaN scores with the ``-inf`` ones, so a level holding
both may report fewer ``-inf`` candidates than pydet.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from onnxscript import opset18 as op
from onnxscript import opset19


def _column(x, k: int):
    return op.Squeeze(op.Slice(x, [k], [k + 1], [1]), [1])


def _dim(x, k: int):
    return op.Shape(x, start=k, end=k + 1)


def _nms(boxes, scores, iou_threshold: float):
    # NonMaxSuppression takes [batch, boxes, 4] and [batch, classes, boxes]; its IoU is symmetric in
    # x and y, so xyxy boxes need no reordering to its (y1, x1, y2, x2).
    scores = op.Where(op.IsNaN(scores), op.CastLike(float("-inf"), scores), scores)
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]),
        op.Unsqueeze(scores, [0, 1]),
        _dim(boxes, 0),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[float("-inf")]),
    )
    return _column(selected, 2)


def _multiclass_nms(
    boxes,
    scores,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    topk_per_class: int = 1000,
    max_detections: int = 100,
    class_agnostic: bool = False,
    background_class: int | None = None,
    box_format: str = "xyxy",
    labels=None,
    num_classes: int | None = None,
):
    if labels is not None:
        scores = _scores_by_label(scores, labels, num_classes)
    specific = len(boxes.shape) == 4
    if box_format == "cxcywh":
        boxes = _cxcywh_to_xyxy(boxes)
    neg_inf = op.CastLike(float("-inf"), scores)
    b_dim, n_dim, c_dim = _dim(scores, 0), _dim(scores, 1), _dim(scores, 2)
    per_class = _class_candidates(scores, neg_inf, n_dim, c_dim, background_class, topk_per_class)
    nms_boxes, nms_scores = _nms_batches(boxes, per_class, b_dim, n_dim, c_dim, class_agnostic, specific)
    selected = op.NonMaxSuppression(
        nms_boxes,
        nms_scores,
        _dim(nms_boxes, 1),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]),
    )  # [S, 3]: (batch, class, box) of NonMaxSuppression's layout
    selections = _selections(selected, nms_boxes, nms_scores, n_dim, c_dim, class_agnostic, specific)
    num, out_boxes, out_scores, out_labels, out_index = _best_per_image(
        selections, selected, b_dim, neg_inf, max_detections
    )
    return num, out_boxes, op.CastLike(out_scores, scores), out_labels, out_index


def _scores_by_label(scores, labels, num_classes: int):
    """The labels form's [B, N] scores as the dense form's [B, N, C]: as on CUDA, each score into its
    label's column, -inf elsewhere (and everywhere for a negative, padding, label)."""
    neg_inf = op.CastLike(float("-inf"), scores)
    labels = op.Cast(labels, to=7)  # 7: int64
    dense_shape = op.Concat(_dim(scores, 0), _dim(scores, 1), op.Constant(value_ints=[num_classes]), axis=0)
    return op.ScatterElements(
        op.Expand(neg_inf, dense_shape),
        op.Unsqueeze(op.Max(labels, op.Constant(value_int=0)), [2]),
        op.Unsqueeze(op.Where(op.GreaterOrEqual(labels, op.Constant(value_int=0)), scores, neg_inf), [2]),
        axis=2,
    )


def _cxcywh_to_xyxy(boxes):
    # same arithmetic as box_convert: (cx - 0.5 w, cy - 0.5 h, cx + 0.5 w, ...)
    centre = op.Slice(boxes, [0], [2], [-1])
    half = op.Mul(op.Slice(boxes, [2], [4], [-1]), op.CastLike(0.5, boxes))
    return op.Concat(op.Sub(centre, half), op.Add(centre, half), axis=-1)


def _class_candidates(scores, neg_inf, n_dim, c_dim, background_class: int | None, topk_per_class: int):
    """The [B, C, N] scores NMS may select: NaN, background and (with topk_per_class > 0) each class's
    scores below its top-k set to -inf."""
    per_class = op.Transpose(scores, perm=[0, 2, 1])  # [B, C, N]
    per_class = op.Where(op.IsNaN(per_class), neg_inf, per_class)
    if background_class is not None:
        is_background = op.Equal(op.Range(0, op.Squeeze(c_dim, [0]), 1), background_class)
        per_class = op.Where(op.Reshape(is_background, [1, -1, 1]), neg_inf, per_class)
    if topk_per_class > 0:  # keep each class's top-k candidates, -inf elsewhere
        k = op.Min(n_dim, op.Constant(value_ints=[topk_per_class]))
        values, index = op.TopK(per_class, k, axis=2, largest=1, sorted=1)
        per_class = op.ScatterElements(op.Expand(neg_inf, op.Shape(per_class)), index, values, axis=2)
    return per_class


def _nms_batches(boxes, per_class, b_dim, n_dim, c_dim, class_agnostic: bool, specific: bool):
    """Boxes and scores in NonMaxSuppression's [batch, boxes, 4] and [batch, classes, boxes] layout."""
    one, four = op.Constant(value_ints=[1]), op.Constant(value_ints=[4])
    if class_agnostic:  # one NMS class: every (class, anchor) pair is a box
        flat = op.Mul(c_dim, n_dim)
        if specific:
            nms_boxes = op.Reshape(
                op.Transpose(boxes, perm=[0, 2, 1, 3]), op.Concat(b_dim, flat, four, axis=0)
            )
        else:
            grid = op.Concat(b_dim, c_dim, n_dim, four, axis=0)
            nms_boxes = op.Reshape(
                op.Expand(op.Unsqueeze(boxes, [1]), grid), op.Concat(b_dim, flat, four, axis=0)
            )
        nms_scores = op.Reshape(per_class, op.Concat(b_dim, one, flat, axis=0))
    elif specific:  # one NMS batch per (image, class)
        bc = op.Mul(b_dim, c_dim)
        nms_boxes = op.Reshape(op.Transpose(boxes, perm=[0, 2, 1, 3]), op.Concat(bc, n_dim, four, axis=0))
        nms_scores = op.Reshape(per_class, op.Concat(bc, one, n_dim, axis=0))
    else:
        nms_boxes, nms_scores = boxes, per_class
    return nms_boxes, nms_scores


class _Selections(NamedTuple):
    """One entry per box NonMaxSuppression selected."""

    score: object
    box: object
    image: object
    label: object
    anchor: object


def _selections(selected, nms_boxes, nms_scores, n_dim, c_dim, class_agnostic: bool, specific: bool):
    """Score, box, image, label and anchor of each selection, from its (batch, class, box) index into
    the layout :func:`_nms_batches` made."""
    sel_score = op.GatherND(nms_scores, selected)
    sel_box = op.GatherND(
        nms_boxes, op.Concat(op.Slice(selected, [0], [1], [1]), op.Slice(selected, [2], [3], [1]), axis=1)
    )
    first, second, third = _column(selected, 0), _column(selected, 1), _column(selected, 2)
    if class_agnostic:
        image, label, anchor = first, op.Div(third, n_dim), op.Mod(third, n_dim)
    elif specific:
        image, label, anchor = op.Div(first, c_dim), op.Mod(first, c_dim), third
    else:
        image, label, anchor = first, second, third
    return _Selections(sel_score, sel_box, image, label, anchor)


def _best_per_image(selections: _Selections, selected, b_dim, neg_inf, max_detections: int):
    """(count, boxes, scores, labels, anchor indices) of each image's detections."""
    # Per image, the best max_detections selections by score, padded to the fixed size.
    images = op.Unsqueeze(op.Range(0, op.Squeeze(b_dim, [0]), 1), [1])
    score_matrix = op.Where(
        op.Equal(op.Unsqueeze(selections.image, [0]), images), op.Unsqueeze(selections.score, [0]), neg_inf
    )
    k = op.Min(_dim(selected, 0), op.Constant(value_ints=[max_detections]))
    top_score, top = op.TopK(score_matrix, k, axis=1, largest=1, sorted=1)  # [B, k]
    valid = op.Greater(top_score, neg_inf)
    pad = op.Sub(op.Constant(value_ints=[max_detections]), k)

    def padded(x, fill, boxes: bool):
        """Invalid entries set to `fill`, then padded with `fill` to max_detections along axis 1."""
        x = op.Where(op.Unsqueeze(valid, [2]) if boxes else valid, x, op.CastLike(fill, x))
        if boxes:  # Pad's layout: all axes' begins, then all axes' ends
            pads = op.Concat(op.Constant(value_ints=[0, 0, 0, 0]), pad, op.Constant(value_ints=[0]), axis=0)
        else:
            pads = op.Concat(op.Constant(value_ints=[0, 0, 0]), pad, axis=0)
        return op.Pad(x, pads, op.CastLike(fill, x))

    out_boxes = padded(op.Gather(selections.box, top, axis=0), 0.0, boxes=True)
    out_scores = padded(top_score, 0.0, boxes=False)
    out_labels = padded(op.Gather(selections.label, top, axis=0), -1, boxes=False)
    out_index = padded(op.Gather(selections.anchor, top, axis=0), -1, boxes=False)
    num = op.ReduceSum(op.Cast(valid, to=7), [1], keepdims=0)  # 7: int64
    return num, out_boxes, out_scores, out_labels, out_index


def _topk_per_level(scores, k: int, score_threshold: float | None = None, level_sizes=None):
    # Per level: scores that are not candidates become -inf, then TopK, whose equal values come in
    # increasing index order as in pydet; entries that are not candidates become (-inf, -1) padding.
    b_dim = _dim(scores, 0)
    flat = op.Reshape(scores, op.Concat(b_dim, op.Constant(value_ints=[-1]), axis=0))  # [B, N * C]
    per_row = _dim(scores, 2) if len(scores.shape) == 3 else op.Constant(value_ints=[1])
    neg_inf = op.CastLike(float("-inf"), scores)
    if score_threshold is None:
        passing = op.Not(op.IsNaN(flat))
    else:  # the threshold in the scores' dtype, as pydet compares
        passing = op.Greater(flat, op.CastLike(score_threshold, scores))
    masked = op.Where(passing, flat, neg_inf)
    sizes = [None] if level_sizes is None else list(level_sizes)
    k_max = op.Constant(value_ints=[k])
    start = op.Constant(value_ints=[0])
    values, indices = [], []
    for size in sizes:
        end = (
            _dim(flat, 1) if size is None else op.Add(start, op.Mul(op.Constant(value_ints=[size]), per_row))
        )
        seg = op.Slice(masked, start, end, [1])
        kk = op.Min(_dim(seg, 1), k_max)
        value, index = op.TopK(seg, kk, axis=1, largest=1, sorted=1)
        found = op.GatherElements(op.Slice(passing, start, end, [1]), index, axis=1)
        value = op.Where(found, value, neg_inf)
        index = op.Where(found, op.Add(index, start), op.Constant(value_ints=[-1]))
        pads = op.Concat(op.Constant(value_ints=[0, 0, 0]), op.Sub(k_max, kk), axis=0)
        values.append(op.Unsqueeze(op.Pad(value, pads, neg_inf), [1]))
        indices.append(op.Unsqueeze(op.Pad(index, pads, op.Constant(value_ints=[-1])), [1]))
        start = end
    return op.Concat(*values, axis=1), op.Concat(*indices, axis=1)


def _roi_align(
    input,
    rois,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
):
    # ONNX's RoiAlign (opset 16) takes the corners and the batch indices apart; "output_half_pixel" is
    # the legacy convention of aligned=False (RoIs sized at least one pixel), as torchvision exports it.
    return op.RoiAlign(
        input,
        op.Slice(rois, [1], [5], [1]),
        op.Cast(_column(rois, 0), to=7),  # 7: int64
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
        mode="avg",
        output_height=pooled_height,
        output_width=pooled_width,
        sampling_ratio=max(sampling_ratio, 0),
        spatial_scale=spatial_scale,
    )


def _deform_conv2d(
    input,
    weight,
    offset,
    mask,
    bias,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
):
    # ONNX's DeformConv (opset 19) is torchvision's: the same offset layout ((dy, dx) per tap, tap-major
    # within each offset group) and bilinear sampling; the kernel size comes from the weight.
    return opset19.DeformConv(
        input,
        weight,
        offset,
        bias,
        mask if use_mask else None,
        dilations=[dilation_h, dilation_w],
        group=groups,
        offset_group=offset_groups,
        pads=[pad_h, pad_w, pad_h, pad_w],
        strides=[stride_h, stride_w],
    )


def translation_table() -> dict:
    """The ``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    return {
        torch.ops.pydet.nms.default: _nms,
        torch.ops.pydet.multiclass_nms.default: _multiclass_nms,
        torch.ops.pydet.topk_per_level.default: _topk_per_level,
        torch.ops.pydet.roi_align.default: _roi_align,
        torch.ops.pydet.deform_conv2d.default: _deform_conv2d,
    }


def export(model: torch.nn.Module, args: tuple, path: str | None = None, **kwargs):
    """``torch.onnx.export`` with pydet's translations added; returns the ONNX program (saved to ``path``)."""
    table = {**translation_table(), **kwargs.pop("custom_translation_table", {})}
    program = torch.onnx.export(model, args, dynamo=True, custom_translation_table=table, **kwargs)
    if path is not None:
        program.save(path)
    return program
