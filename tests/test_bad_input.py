"""Bad arguments raise a Python exception that names the argument and what was expected -- the same
exception and message in eager mode (C++ checks) and under fake tensors (torch.compile/export)."""

import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import pydet.ops as ops

b = torch.rand(5, 4) * 10
b3 = b.reshape(1, 5, 4)


CASES = [
    # (call, exception, message fragment)
    (lambda: ops.box_iou(torch.rand(5, 3), b), ValueError, "boxes1 must have shape [..., N, 4], got [5, 3]"),
    (lambda: ops.box_iou(b, torch.rand(4)), ValueError, "boxes2 must have shape [..., M, 4], got [4]"),
    (
        lambda: ops.box_iou(b3.expand(2, 5, 4), b.expand(3, 5, 4)),
        ValueError,
        "the batch dimensions of boxes1 [2, 5, 4] and boxes2 [3, 5, 4] must be equal or broadcastable",
    ),
    (
        lambda: ops.box_iou(b.bool(), b),
        TypeError,
        "boxes1 must be a floating-point or integer tensor (float32, float64, float16, bfloat16 or int8 to "
        "int64), got bool",
    ),
    (
        lambda: ops.bbox_overlaps(b, b.int()),
        TypeError,
        "bboxes2 must be a floating-point tensor (float32, float64, float16 or bfloat16), got int32",
    ),
    (lambda: ops.distance_box_iou(b, b.bool()), TypeError, "got bool"),
    (lambda: ops.complete_box_iou(b.to(torch.complex64), b), TypeError, "got complex64"),
    (
        lambda: ops.box_iou_aligned(b, torch.rand(3, 4)),
        ValueError,
        "leading dimensions of boxes1 [5, 4] and boxes2 [3, 4] must be equal or broadcastable",
    ),
    (
        lambda: ops.box_area(torch.rand(5, 5)),
        ValueError,
        "pydet.box_area: boxes must have shape [..., 4], got [5, 5]",
    ),
    (lambda: ops.box_area(torch.rand(())), ValueError, "boxes must have shape [..., 4], got []"),
    (
        lambda: ops.box_area(b.bool()),
        TypeError,
        "pydet.box_area: boxes must be a floating-point or integer tensor",
    ),
    (
        lambda: ops.box_convert(b, "xyxy", "ltrb"),
        ValueError,
        "out_fmt must be one of 'xyxy', 'xywh', 'cxcywh', 'xywhr', 'cxcywhr', 'xyxyxyxy', got 'ltrb'",
    ),
    (
        lambda: ops.box_convert(b, "XYXY", "xywh"),
        ValueError,
        "in_fmt must be one of 'xyxy', 'xywh', 'cxcywh', 'xywhr', 'cxcywhr', 'xyxyxyxy', got 'XYXY'",
    ),
    (
        lambda: ops.box_area(b, "xywhr"),
        ValueError,
        "pydet.box_area: fmt must be one of 'xyxy', 'xywh', 'cxcywh', got 'xywhr'",
    ),
    (
        lambda: ops.box_iou(b, b, "XYWH"),
        ValueError,
        "pydet.box_iou: fmt must be one of 'xyxy', 'xywh', 'cxcywh', 'xywhr', 'cxcywhr', 'xyxyxyxy', got 'XYWH'",
    ),
    (
        lambda: ops.box_iou(b, b, "cxcywhr"),
        ValueError,
        "pydet.box_iou: boxes1 must have shape [N, 5], got [5, 4]",
    ),
    (
        lambda: ops.box_convert(b, "xyxy", "xywhr"),
        ValueError,
        "pydet.box_convert: no conversion from 'xyxy' to 'xywhr'",
    ),
    (
        lambda: ops.box_convert(torch.rand(5, 2), "xyxy", "xywh"),
        ValueError,
        "boxes must have shape [..., 4], got [5, 2]",
    ),
    (
        lambda: ops.clip_boxes_to_image(b, (-1, 10)),
        ValueError,
        "size must be (height, width) with both >= 0, got [-1, 10]",
    ),
    (
        lambda: ops.clip_boxes_to_image(b.bool(), (10, 10)),
        TypeError,
        "boxes must be a floating-point or integer tensor",
    ),
    (
        lambda: ops.remove_small_boxes(b.to(torch.complex64), 1.0),
        TypeError,
        "pydet.remove_small_boxes: boxes must be a floating-point or integer tensor",
    ),
    (
        lambda: ops.remove_small_boxes(b3, 1.0),
        ValueError,
        "pydet.remove_small_boxes: boxes must have shape [N, 4], got [1, 5, 4]",
    ),
    (
        lambda: ops.bbox_overlaps(b, b, mode="dice"),
        ValueError,
        "mode must be one of 'iou', 'iof', 'giou', got 'dice'",
    ),
    (lambda: ops.bbox_overlaps(b, b, offset=2), ValueError, "offset must be 0 or 1, got 2"),
    (
        lambda: ops.bbox_overlaps(b3, b3.expand(2, 5, 4)),
        ValueError,
        "the batch dimensions of bboxes1 [1, 5, 4] and bboxes2 [2, 5, 4] must match",
    ),
    (
        lambda: ops.bbox_overlaps(b, b[:3], is_aligned=True),
        ValueError,
        "with is_aligned=True, bboxes1 [5, 4] and bboxes2 [3, 4] must have the same shape",
    ),
    (lambda: ops.bbox_overlaps(torch.rand(4), b), ValueError, "bboxes1 must have shape [..., M, 4], got [4]"),
    (
        lambda: ops.generalized_box_iou_loss(b, b, "avg"),
        ValueError,
        "reduction must be one of 'none', 'mean', 'sum', got 'avg'",
    ),
    (lambda: ops.distance_box_iou_loss(b, b[:2]), ValueError, "must be equal or broadcastable"),
    (
        lambda: ops.complete_box_iou_loss(b.half(), b.bool()),
        TypeError,
        "boxes2 must be a floating-point or integer tensor",
    ),
    (
        lambda: torch.ops.pydet._pairwise_box_metric_backward(
            torch.ones(5, 5), b, b, "nope", 0.0, 0.0, "xyxy"
        ),
        ValueError,
        "metric must be one of",
    ),
    # NMS family
    (
        lambda: ops.nms(b, torch.rand(4), 0.5),
        ValueError,
        "pydet.nms: scores must have shape [N] matching boxes [N, 4], got scores [4] and boxes [5, 4]",
    ),
    (lambda: ops.nms(b, torch.rand(5, 1), 0.5), ValueError, "scores must have shape [N]"),
    (
        lambda: ops.nms(b, torch.arange(5), 0.5),
        TypeError,
        "pydet.nms: scores must be a floating-point tensor",
    ),
    (
        lambda: ops.nms(b.long(), torch.rand(5), 0.5),
        TypeError,
        "pydet.nms: boxes must be a floating-point tensor",
    ),
    (
        lambda: ops.nms(torch.rand(5, 5), torch.rand(5), 0.5),
        ValueError,
        "pydet.nms: boxes must have shape [N, 4], got [5, 5]",
    ),
    (
        lambda: ops.nms(b, torch.rand(5), -0.1),
        ValueError,
        "pydet.nms: iou_threshold must be >= 0 (an IoU threshold), got -0.1",
    ),
    (lambda: ops.nms(b, torch.rand(5), float("nan")), ValueError, "iou_threshold must be >= 0"),
    (
        lambda: ops.batched_nms(b, torch.rand(5), torch.zeros(4, dtype=torch.long), 0.5),
        ValueError,
        "pydet.batched_nms: idxs must have shape [N] matching boxes, got idxs [4] and boxes [5, 4]",
    ),
    (
        lambda: ops.batched_nms(b, torch.rand(5), torch.zeros(5), 0.5),
        TypeError,
        "pydet.batched_nms: idxs must be an integer tensor (the category of each box), got float32",
    ),
    (lambda: ops.batched_nms(b, torch.rand(5), torch.zeros(5, dtype=torch.bool), 0.5), TypeError, "got bool"),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 7, 4), torch.rand(2, 6, 3)),
        ValueError,
        "pydet.multiclass_nms: boxes must have shape [B, N, 4] (shared by all classes) or [B, N, C, 4] (one box per class) with B, N from scores [2, 6, 3] and C = 3, got [2, 7, 4]",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6)),
        ValueError,
        "pydet.multiclass_nms: scores must have shape [B, N, C] (or [B, N] with labels), got [2, 6]",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6, 3), num_classes=3),
        ValueError,
        "pydet.multiclass_nms: num_classes is only used with labels (scores [B, N, C] give the class count)",
    ),
    (
        lambda: ops.multiclass_nms(
            torch.rand(2, 6, 4), torch.rand(2, 6, 3), labels=torch.zeros(2, 6, 3).long()
        ),
        ValueError,
        "pydet.multiclass_nms: with labels, scores must have shape [B, N] (one score per candidate), got [2, 6, 3]",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6), labels=torch.zeros(2, 6).long()),
        ValueError,
        "pydet.multiclass_nms: with labels, num_classes (the number of classes the labels index, >= 1) is "
        "required, got None",
    ),
    (
        lambda: ops.multiclass_nms(
            torch.rand(2, 6, 4), torch.rand(2, 6), labels=torch.zeros(2, 6), num_classes=3
        ),
        TypeError,
        "pydet.multiclass_nms: labels must be an integer tensor (the class of each candidate), got float32",
    ),
    (
        lambda: ops.multiclass_nms(
            torch.rand(2, 6, 4), torch.rand(2, 6), labels=torch.zeros(2, 5).long(), num_classes=3
        ),
        ValueError,
        "pydet.multiclass_nms: labels must have the shape of scores [2, 6], got [2, 5]",
    ),
    (
        lambda: ops.multiclass_nms(
            torch.rand(2, 6, 2, 4), torch.rand(2, 6), labels=torch.zeros(2, 6).long(), num_classes=3
        ),
        ValueError,
        "with B, N from scores [2, 6] and C = 3, got [2, 6, 2, 4]",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 2, 4), torch.rand(2, 6, 3)),
        ValueError,
        "boxes must have shape [B, N, 4]",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6, 3), box_format="xywh"),
        ValueError,
        "pydet.multiclass_nms: box_format must be one of 'xyxy', 'cxcywh', got 'xywh'",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6, 3), background_class=3),
        ValueError,
        "pydet.multiclass_nms: background_class must be None or a class index in [0, 3), got 3",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6, 3), topk_per_class=0),
        ValueError,
        "pydet.multiclass_nms: topk_per_class must be a positive count or -1 (no limit), got 0",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6, 3), max_detections=-1),
        ValueError,
        "pydet.multiclass_nms: max_detections must be >= 0, got -1",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6, 3), score_threshold=float("nan")),
        ValueError,
        "pydet.multiclass_nms: score_threshold must not be NaN",
    ),
    (
        lambda: ops.multiclass_nms(torch.rand(2, 6, 4), torch.rand(2, 6, 3).long()),
        TypeError,
        "pydet.multiclass_nms: scores must be a floating-point tensor",
    ),
    (  # 2^31 anchors of zero memory (stride 0): the 32-bit index limit, before any allocation
        lambda: ops.multiclass_nms(
            torch.zeros(1, 1, 4).expand(1, 2**31, 4), torch.zeros(1, 1, 1).expand(1, 2**31, 1)
        ),
        ValueError,
        "pydet.multiclass_nms: scores [B, N, C] = [1, 2147483648, 1] has more than 2^31 - 1 anchors or classes",
    ),
    (
        lambda: ops.topk_per_level(torch.rand(2, 6, 3, 1), 4),
        ValueError,
        "pydet.topk_per_level: scores must have shape [B, N] or [B, N, C], got [2, 6, 3, 1]",
    ),
    (
        lambda: ops.topk_per_level(torch.rand(2, 6).long(), 4),
        TypeError,
        "pydet.topk_per_level: scores must be a floating-point tensor",
    ),
    (
        lambda: ops.topk_per_level(torch.rand(2, 6), -1),
        ValueError,
        "pydet.topk_per_level: k must be >= 0, got -1",
    ),
    (
        lambda: ops.topk_per_level(torch.rand(2, 6), 4, float("nan")),
        ValueError,
        "pydet.topk_per_level: score_threshold must not be NaN (None selects every non-NaN score)",
    ),
    (
        lambda: ops.topk_per_level(torch.rand(2, 6, 3), 4, None, [4, 3]),
        ValueError,
        "pydet.topk_per_level: level_sizes must sum to N = 6 (scores [2, 6, 3]), got [4, 3]",
    ),
    (
        lambda: ops.topk_per_level(torch.rand(2, 6, 3), 4, None, [8, -2]),
        ValueError,
        "pydet.topk_per_level: level_sizes must be >= 0, got [8, -2]",
    ),
    (
        lambda: ops.soft_nms(b, torch.rand(5), method="hard"),
        ValueError,
        "pydet.soft_nms: method must be one of 'naive', 'linear', 'gaussian', got 'hard'",
    ),
    (
        lambda: ops.soft_nms(b, torch.rand(5), sigma=0.0),
        ValueError,
        "pydet.soft_nms: sigma must be > 0, got 0",
    ),
    (
        lambda: ops.soft_nms(b, torch.rand(5), offset=3),
        ValueError,
        "pydet.soft_nms: offset must be 0 or 1, got 3",
    ),
    (
        lambda: ops.nms_rotated(b, torch.rand(5), 0.5),
        ValueError,
        "pydet.nms_rotated: boxes must have shape [N, 5] (cx, cy, w, h, angle in degrees), got [5, 4]",
    ),
    (
        lambda: ops.box_iou_rotated(torch.rand(3, 5), torch.rand(3, 5).int()),
        TypeError,
        "pydet.box_iou_rotated: boxes2 must be a floating-point tensor",
    ),
    (
        lambda: ops.batched_nms_rotated(
            torch.rand(5, 5), torch.rand(5), torch.zeros(5, 1, dtype=torch.long), 0.5
        ),
        ValueError,
        "idxs must have shape [N]",
    ),
    # anchor_grid
    (
        lambda: ops.anchor_grid([torch.rand(3, 3)], [torch.rand(2)], [torch.rand(2)]),
        ValueError,
        "pydet.anchor_grid: base_anchors[0] must have shape [A, 4], got [3, 3]",
    ),
    (
        lambda: ops.anchor_grid([torch.rand(3, 4)] * 2, [torch.rand(2)], [torch.rand(2)] * 2),
        ValueError,
        "pydet.anchor_grid: base_anchors, shifts_x and shifts_y must have one entry per level, got 2, 1 and 2",
    ),
    (
        lambda: ops.anchor_grid([], [], []),
        ValueError,
        "pydet.anchor_grid: base_anchors must hold at least one level",
    ),
    (
        lambda: ops.anchor_grid([torch.rand(3, 4)], [torch.rand(2, 1)], [torch.rand(2)]),
        ValueError,
        "pydet.anchor_grid: shifts_x[0] and shifts_y[0] must be 1-D, got [2, 1] and [2]",
    ),
    (
        lambda: ops.anchor_grid([torch.rand(3, 4)], [torch.arange(2)], [torch.rand(2)]),
        TypeError,
        "pydet.anchor_grid: base_anchors/shifts must be a floating-point tensor",
    ),
    (
        lambda: ops.anchor_grid([torch.rand(3, 4)], [torch.rand(2).double()], [torch.rand(2)]),
        TypeError,
        "pydet.anchor_grid: every tensor must have the dtype of base_anchors[0] (float32), got float64",
    ),
    (
        lambda: ops.anchor_grid([torch.rand(3, 4)], [torch.rand(2)], [torch.rand(2)], [1.0]),
        ValueError,
        "pydet.anchor_grid: scales must be empty or hold (scale_x, scale_y) per level (2 values), got 1",
    ),
    # box coding
    (
        lambda: ops.box_encode(torch.rand(5, 4), torch.rand(6, 4)),
        ValueError,
        "pydet.box_encode: reference must have shape [N, 4] or [B, N, 4] matching targets (N = 6), got [5, 4]",
    ),
    (
        lambda: ops.box_encode(torch.rand(5, 4), torch.rand(5, 4).double()),
        TypeError,
        "pydet.box_encode: reference and targets must have the same dtype, got float32 and float64",
    ),
    (
        lambda: ops.box_encode(torch.rand(5, 4), torch.rand(5, 4), "yolo"),
        ValueError,
        "pydet.box_encode: coding must be one of 'torchvision', 'mmdet', 'ssd', got 'yolo'",
    ),
    (
        lambda: ops.box_encode(
            torch.rand(5, 4), torch.rand(3, 4), target_index=torch.zeros(5, dtype=torch.int32)
        ),
        TypeError,
        "pydet.box_encode: target_index must be an int64 tensor, got int32",
    ),
    (
        lambda: ops.box_decode(torch.rand(5, 4), torch.rand(5, 4), index=torch.zeros(3, dtype=torch.int32)),
        TypeError,
        "pydet.box_decode: index must be an int64 tensor, got int32",
    ),
    (
        lambda: ops.box_decode(torch.rand(5, 4), torch.rand(5, 4), index=torch.zeros(1, 3).long()),
        ValueError,
        "pydet.box_decode: index must have shape [K] for deltas [N, 4 * C] or [B, K] for deltas [B, N, 4 * C], "
        "got [1, 3] with deltas [5, 4]",
    ),
    (
        lambda: ops.box_decode(torch.rand(5, 4), torch.rand(2, 5, 4), index=torch.zeros(3, 3).long()),
        ValueError,
        "pydet.box_decode: index must have shape [K] for deltas [N, 4 * C] or [B, K] for deltas [B, N, 4 * C], "
        "got [3, 3] with deltas [2, 5, 4]",
    ),
    (
        lambda: ops.box_decode(torch.rand(5, 4), torch.rand(5, 6)),
        ValueError,
        "pydet.box_decode: deltas must have shape [N, 4 * C] or [B, N, 4 * C] (C >= 1), got [5, 6]",
    ),
    (
        lambda: ops.box_decode(torch.rand(2, 5, 4), torch.rand(5, 4)),
        ValueError,
        "pydet.box_decode: reference must have shape [N, 4] or [B, N, 4] matching deltas (N = 5), got [2, 5, 4]",
    ),
    (
        lambda: ops.box_decode(torch.rand(5, 4), torch.rand(5, 4), weights=(1.0, 0.0, 1.0, 1.0)),
        ValueError,
        "pydet.box_decode: weights must be finite and non-zero",
    ),
    (
        lambda: ops.box_decode(torch.rand(5, 4), torch.rand(5, 4), wh_clip=(2.5, 1.5)),
        ValueError,
        "pydet.box_decode: wh_clip_min (2.5) must be <= wh_clip_max (1.5)",
    ),
    # IoU matching
    (
        lambda: ops.box_overlap_max(torch.rand(3, 5), torch.rand(4, 4)),
        ValueError,
        "pydet.box_overlap_max: gt must have shape [M, 4] or [B, M, 4], got [3, 5]",
    ),
    (
        lambda: ops.box_overlap_max(torch.rand(3, 4), torch.rand(4, 4).double()),
        TypeError,
        "pydet.box_overlap_max: gt and anchors must have the same dtype, got float32 and float64",
    ),
    (
        lambda: ops.box_overlap_max(torch.rand(2, 3, 4), torch.rand(4, 4), torch.tensor([1, 2, 3])),
        ValueError,
        "pydet.box_overlap_max: num_gt must have shape [B] = [2] (one count per image of gt), got [3]",
    ),
    (
        lambda: ops.box_overlap_max(torch.rand(3, 4), torch.rand(4, 4), mode="giou"),
        ValueError,
        "pydet.box_overlap_max: mode must be one of 'iou', 'mm_iou', 'mm_iof', got 'giou'",
    ),
    (
        lambda: ops.box_overlap_max(
            torch.rand(3, 4), torch.rand(4, 4), ignored=torch.zeros(3, dtype=torch.bool)
        ),
        ValueError,
        "pydet.box_overlap_max: ignored must have shape [N] or [B, N] = [1, 4], got [3]",
    ),
    (
        lambda: ops.box_overlap_ties(torch.rand(3, 4), torch.rand(4, 4), torch.rand(2)),
        ValueError,
        "pydet.box_overlap_ties: gt_best must have shape [M] matching gt, got [2]",
    ),
    # depthwise convolution
    (
        lambda: ops.depthwise_conv2d(torch.rand(3, 8, 8), torch.rand(3, 1, 3, 3)),
        ValueError,
        "pydet.depthwise_conv2d: input must have shape [N, C, H, W], got [3, 8, 8]",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.rand(1, 3, 8, 8), torch.rand(4, 1, 3, 3)),
        ValueError,
        "pydet.depthwise_conv2d: weight must have shape [C, 1, KH, KW] with C = 3 (input channels; one filter "
        "per channel), got [4, 1, 3, 3]",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.rand(1, 3, 8, 8), torch.rand(3, 2, 3, 3)),
        ValueError,
        "pydet.depthwise_conv2d: weight must have shape [C, 1, KH, KW] with C = 3 (input channels; one filter "
        "per channel), got [3, 2, 3, 3]",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.rand(1, 3, 8, 8), torch.rand(3, 1, 3, 3).double()),
        TypeError,
        "pydet.depthwise_conv2d: weight must have input's dtype (float32), got float64",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.ones(1, 3, 8, 8, dtype=torch.int64), torch.ones(3, 1, 3, 3)),
        TypeError,
        "pydet.depthwise_conv2d: input must be a floating-point tensor (float32, float64, float16 or "
        "bfloat16), got int64",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.rand(1, 3, 8, 8), torch.rand(3, 1, 3, 3), torch.rand(4)),
        ValueError,
        "pydet.depthwise_conv2d: bias must have shape [C] with C = 3, got [4]",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.rand(1, 3, 8, 8), torch.rand(3, 1, 3, 3), stride=(1, 0)),
        ValueError,
        "pydet.depthwise_conv2d: stride must be 2 integers >= 1, got [1, 0]",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.rand(1, 3, 8, 8), torch.rand(3, 1, 3, 3), padding=-1),
        ValueError,
        "pydet.depthwise_conv2d: padding must be 2 integers >= 0, got [-1, -1]",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.rand(1, 3, 2, 8), torch.rand(3, 1, 3, 3)),
        ValueError,
        "pydet.depthwise_conv2d: the output would be empty: input [1, 3, 2, 8] with kernel 3x3, padding "
        "[0, 0] and dilation [1, 1] gives an output of 0x6",
    ),
    (
        lambda: ops.depthwise_conv2d(torch.rand(1, 3, 8, 8), torch.rand(3, 1, 3, 3), activation="gelu"),
        ValueError,
        "pydet.depthwise_conv2d: activation must be one of 'none', 'relu', 'relu6', 'silu', 'swish', "
        "'hardswish', got 'gelu'",
    ),
    # focal loss
    (
        lambda: ops.sigmoid_focal_loss(torch.rand(4, 3), torch.rand(4, 2)),
        ValueError,
        "pydet.sigmoid_focal_loss: targets must have the same shape as inputs [4, 3], got [4, 2]",
    ),
    (
        lambda: ops.sigmoid_focal_loss(torch.rand(4, 3), torch.ones(4, 3, dtype=torch.int64)),
        TypeError,
        "pydet.sigmoid_focal_loss: targets must be a floating-point tensor",
    ),
    (
        lambda: ops.sigmoid_focal_loss(torch.rand(4, 3), torch.rand(4, 3), alpha=1.5),
        ValueError,
        "pydet.sigmoid_focal_loss: alpha must be in [0, 1] (or negative to disable the class weighting), got 1.5",
    ),
    (
        lambda: ops.sigmoid_focal_loss(torch.rand(4, 3), torch.rand(4, 3), gamma=-1.0),
        ValueError,
        "pydet.sigmoid_focal_loss: gamma must be finite and >= 0, got -1",
    ),
    (
        lambda: ops.sigmoid_focal_loss(torch.rand(4, 3), torch.rand(4, 3), reduction="avg"),
        ValueError,
        "pydet.sigmoid_focal_loss: reduction must be one of 'none', 'mean', 'sum', got 'avg'",
    ),
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_eager_error_names_the_argument(index):
    call, exc, message = CASES[index]
    with pytest.raises(exc, match=re.escape(message)):
        call()


@pytest.mark.parametrize("index", range(len(CASES)))
def test_fake_kernels_raise_the_same_error(index):
    """Under fake tensors (what torch.compile/export trace with) the same exception and message."""
    call, exc, _ = CASES[index]
    with pytest.raises(exc) as eager:
        call()
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(exc) as fake:
        call()
    assert str(fake.value).splitlines()[0] == str(eager.value).splitlines()[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices")
def test_mismatched_devices():
    with pytest.raises(
        ValueError, match=re.escape("boxes1 and boxes2 must be on the same device, got cuda:0 and cpu")
    ):
        ops.box_iou(b.cuda(), b)


def test_mismatched_devices_meta():
    """A meta and a CPU tensor exercise the same device check without a GPU."""
    with pytest.raises(
        ValueError, match=re.escape("boxes1 and boxes2 must be on the same device, got meta and cpu")
    ):
        ops.box_iou(b.to("meta"), b)
    rotated = torch.rand(5, 5)
    with pytest.raises(
        ValueError,
        match=re.escape("pydet.box_iou: boxes1 and boxes2 must be on the same device, got meta and cpu"),
    ):
        ops.box_iou(rotated.to("meta"), rotated, fmt="cxcywhr")
