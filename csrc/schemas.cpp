// Every torch.ops.pydet operator is declared here, in one place. Kernels are registered per
// dispatch key next to their code (csrc/cpu/*.cpp, csrc/cuda/*.cu), and each family's front end
// (csrc/ops/*.h) also for Meta; the ops whose output length depends on the data have Python fakes
// beside their wrappers (pydet/ops/boxes.py, nms.py). Autograd and autocast rules are registered in
// pydet/ops/_autograd.py, except box_decode's autograd (csrc/autograd/coders.cpp, for its per-call
// cost). Each family names its Python module, so a missing import says which module to import.
//
// Ops whose name starts with "_" are internal (backward kernels); everything else is public API
// documented in pydet/ops/.
#include <torch/library.h>

TORCH_LIBRARY(pydet, m) {
  // ---- boxes: csrc/{cpu,cuda}/boxes ----------------------------------------------------------
  m.set_python_module("pydet.ops.boxes");
  m.def("box_area(Tensor boxes, str fmt=\"xyxy\") -> Tensor");
  m.def("box_convert(Tensor boxes, str in_fmt, str out_fmt) -> Tensor");
  m.def("clip_boxes_to_image(Tensor boxes, SymInt[2] size) -> Tensor");
  m.def("remove_small_boxes(Tensor boxes, float min_size) -> Tensor");
  m.def("_box_area_backward(Tensor grad, Tensor boxes, str fmt) -> Tensor");
  m.def("_box_convert_backward(Tensor grad, Tensor boxes, str in_fmt, str out_fmt) -> Tensor");
  m.def("_clip_boxes_to_image_backward(Tensor grad, Tensor boxes, SymInt[2] size) -> Tensor");

  // ---- IoU family: csrc/{cpu,cuda}/box_iou ---------------------------------------------------
  m.set_python_module("pydet.ops.boxes");
  m.def("box_iou(Tensor boxes1, Tensor boxes2, str fmt=\"xyxy\") -> Tensor");
  m.def("generalized_box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def("distance_box_iou(Tensor boxes1, Tensor boxes2, float eps=1e-07) -> Tensor");
  m.def("complete_box_iou(Tensor boxes1, Tensor boxes2, float eps=1e-07) -> Tensor");
  m.def("box_iou_aligned(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def("generalized_box_iou_aligned(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def("distance_box_iou_aligned(Tensor boxes1, Tensor boxes2, float eps=1e-07) -> Tensor");
  m.def("complete_box_iou_aligned(Tensor boxes1, Tensor boxes2, float eps=1e-07) -> Tensor");
  m.def(
      "bbox_overlaps(Tensor bboxes1, Tensor bboxes2, str mode=\"iou\", bool is_aligned=False, float eps=1e-06, "
      "int offset=0) -> Tensor");
  m.def("generalized_box_iou_loss(Tensor boxes1, Tensor boxes2, str reduction=\"none\", float eps=1e-07) -> Tensor");
  m.def("distance_box_iou_loss(Tensor boxes1, Tensor boxes2, str reduction=\"none\", float eps=1e-07) -> Tensor");
  m.def("complete_box_iou_loss(Tensor boxes1, Tensor boxes2, str reduction=\"none\", float eps=1e-07) -> Tensor");
  m.def(
      "_pairwise_box_metric_backward(Tensor grad, Tensor boxes1, Tensor boxes2, str metric, float eps, "
      "float offset, str fmt) -> (Tensor, Tensor)");
  m.def(
      "_aligned_box_metric_backward(Tensor grad, Tensor boxes1, Tensor boxes2, str metric, float eps, "
      "float offset, float grad_scale) -> (Tensor, Tensor)");

  // ---- NMS family: csrc/{cpu,cuda}/nms --------------------------------------------------------
  m.set_python_module("pydet.ops.nms");
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def(
      "multiclass_nms(Tensor boxes, Tensor scores, float score_threshold=0.05, float iou_threshold=0.5, "
      "int topk_per_class=1000, int max_detections=100, bool class_agnostic=False, int? background_class=None, "
      "str box_format=\"xyxy\", Tensor? labels=None, int? num_classes=None) -> (Tensor num_detections, "
      "Tensor boxes, Tensor scores, Tensor labels, Tensor indices)");
  m.def(
      "soft_nms(Tensor boxes, Tensor scores, float iou_threshold=0.3, float sigma=0.5, float min_score=0.001, "
      "str method=\"linear\", int offset=0) -> (Tensor dets, Tensor indices)");
  m.def("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms_rotated(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def("box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def(
      "topk_per_level(Tensor scores, int k, float? score_threshold=None, SymInt[]? level_sizes=None) -> "
      "(Tensor values, Tensor indices)");

  // ---- anchors: csrc/{cpu,cuda}/anchors ------------------------------------------------------
  m.set_python_module("pydet.ops.anchors");
  m.def(
      "anchor_grid(Tensor[] base_anchors, Tensor[] shifts_x, Tensor[] shifts_y, float[] scales=[], "
      "bool anchor_major=False, bool shift_corners=True) -> Tensor");

  // ---- box coding: csrc/{cpu,cuda}/coders ----------------------------------------------------
  m.set_python_module("pydet.ops.coders");
  m.def(
      "box_encode(Tensor reference, Tensor targets, str coding, float[] weights, float[] means, "
      "Tensor? target_index=None) -> Tensor");
  m.def(
      "box_decode(Tensor reference, Tensor deltas, str coding, float[] weights, float[] means, float wh_clip_min, "
      "float wh_clip_max, float center_clamp, float[]? max_shape=None, Tensor? index=None) -> Tensor");
  m.def(
      "_box_decode_backward(Tensor grad, Tensor reference, Tensor deltas, str coding, float[] weights, "
      "float[] means, float wh_clip_min, float wh_clip_max, float center_clamp, float[]? max_shape=None, "
      "Tensor? index=None) -> Tensor");

  // ---- classification losses: csrc/{cpu,cuda}/losses ------------------------------------------
  m.set_python_module("pydet.ops.losses");
  m.def(
      "sigmoid_focal_loss(Tensor inputs, Tensor targets, float alpha=0.25, float gamma=2., str reduction=\"none\") "
      "-> Tensor");
  m.def(
      "_sigmoid_focal_loss_backward(Tensor grad, Tensor inputs, Tensor targets, float alpha, float gamma, "
      "str reduction, bool targets_grad) -> (Tensor grad_inputs, Tensor grad_targets)");

  // ---- depthwise convolution: csrc/{cpu,cuda}/depthwise_conv -------------------------------
  m.set_python_module("pydet.ops.conv");
  m.def(
      "depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, "
      "int[2] dilation=1, str activation=\"none\") -> Tensor");
  m.def(
      "_depthwise_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[2] padding, int[2] dilation, str activation) -> (Tensor grad_input, Tensor grad_weight, "
      "Tensor grad_bias)");

  // ---- RoI pooling: csrc/{cpu,cuda}/roi_align ------------------------------------------------
  m.set_python_module("pydet.ops.roi");
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, "
      "bool aligned) -> Tensor");
  m.def(
      "multi_scale_roi_align(Tensor[] features, Tensor rois, Tensor levels, float[] spatial_scales, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_multi_scale_roi_align_backward(Tensor grad, Tensor rois, Tensor levels, float[] spatial_scales, "
      "SymInt pooled_height, SymInt pooled_width, SymInt[] feature_sizes, SymInt batch_size, SymInt channels, "
      "int sampling_ratio, bool aligned) -> Tensor[]");

  // ---- Max and position-sensitive RoI pooling: csrc/{cpu,cuda}/roi_pool ---------------------
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> "
      "(Tensor, Tensor)");
  m.def(
      "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor");
  m.def(
      "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> "
      "(Tensor, Tensor)");
  m.def(
      "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
      "SymInt width) -> Tensor");
  m.def(
      "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
      "int sampling_ratio) -> (Tensor, Tensor)");
  m.def(
      "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
      "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width) -> Tensor");

  // ---- Rotated RoIAlign (detectron2's ROIAlignRotated): csrc/{cpu,cuda}/roi_align_rotated ------
  m.set_python_module("pydet.ops.roi");
  m.def(
      "roi_align_rotated(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio) -> Tensor");
  m.def(
      "_roi_align_rotated_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio) -> Tensor");

  // ---- Deformable convolution (v1, and v2 with use_mask): csrc/{cpu,cuda}/deform_conv --------
  m.set_python_module("pydet.ops.deform_conv");
  m.def(
      "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, int stride_h, "
      "int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, int groups, int offset_groups, "
      "bool use_mask) -> Tensor");
  m.def(
      "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
      "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, int groups, "
      "int offset_groups, bool use_mask) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_offset, "
      "Tensor grad_mask, Tensor grad_bias)");

  // ---- Masks: csrc/{cpu,cuda}/masks -----------------------------------------------------------
  m.set_python_module("pydet.ops.masks");
  m.def("paste_masks_in_image(Tensor masks, Tensor boxes, SymInt height, SymInt width, int padding=1) -> Tensor");
  m.def(
      "paste_masks_in_image_detectron2(Tensor masks, Tensor boxes, SymInt height, SymInt width, "
      "float threshold=0.5) -> Tensor");
  m.def("masks_to_boxes(Tensor masks) -> Tensor");

  // ---- IoU matching without the matrix: csrc/{cpu,cuda}/matching ----------------------------
  m.set_python_module("pydet.ops.matching");
  m.def(
      "box_overlap_max(Tensor gt, Tensor anchors, Tensor? num_gt=None, str mode=\"iou\", bool anchors_first=False, "
      "float eps=1e-06, Tensor? ignored=None) -> (Tensor anchor_max, Tensor anchor_argmax, Tensor gt_max, "
      "Tensor gt_argmax)");
  m.def(
      "box_overlap_ties(Tensor gt, Tensor anchors, Tensor gt_best, float min_best, Tensor? num_gt=None, "
      "str mode=\"iou\", float eps=1e-06, Tensor? ignored=None) -> Tensor");
}
