// Rotated boxes (detectron2): nms_rotated, batched_nms_rotated and box_iou_rotated, boxes [N, 5] =
// (cx, cy, w, h, angle in degrees, counter-clockwise). The device-agnostic front end; kernels in
// cpu/nms_rotated.cpp and cuda/nms_rotated.cu; geometry in common/rotated.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include "common/checks.h"
#include "ops/nms.h"

namespace pydet::nms_rotated {

using nms::check_idxs;
using nms::check_scores;
using nms::check_threshold;
using nms::rows_of;

inline void check_rotated(const char* op, const at::Tensor& boxes, const char* arg) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.sym_size(1) == 5, "pydet.", op, ": ", arg,
                    " must have shape [N, 5] (cx, cy, w, h, angle in degrees), got ", shape_str(boxes.sym_sizes()));
  check_floating(boxes, op, arg);
}

// Kernels must provide (boxes in a float/double compute dtype):
//   static at::Tensor nms_rotated(const Tensor& boxes /*[N,5]*/, const Tensor& scores /*float64*/, const Tensor& idxs
//                                 /*int64, or undefined: one class*/, double thr);
//   static void box_iou_rotated(const Tensor& b1 /*[N,5]*/, const Tensor& b2 /*[M,5]*/, Tensor& out /*[N,M]*/);
template <class Kernels>
struct Ops {
  static at::Tensor nms_rotated(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
    check_rotated("nms_rotated", boxes, "boxes");
    check_scores("nms_rotated", boxes, scores);
    check_threshold("nms_rotated", "iou_threshold", iou_threshold);
    if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    return Kernels::nms_rotated(rows_of(boxes), scores.to(at::kDouble), at::Tensor(), iou_threshold);
  }

  static at::Tensor batched_nms_rotated(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                        double iou_threshold) {
    // detectron2 asserts boxes' last dimension, then returns before it looks at the other arguments
    // when there are no boxes.
    if (boxes.dim() > 0 && boxes.sym_size(-1) == 5 && boxes.sym_numel() == 0) {
      return at::empty({0}, boxes.options().dtype(at::kLong));
    }
    check_rotated("batched_nms_rotated", boxes, "boxes");
    check_scores("batched_nms_rotated", boxes, scores);
    check_idxs("batched_nms_rotated", boxes, idxs);
    check_threshold("batched_nms_rotated", "iou_threshold", iou_threshold);
    if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    return Kernels::nms_rotated(rows_of(boxes), scores.to(at::kDouble), idxs.to(at::kLong), iou_threshold);
  }

  static at::Tensor box_iou_rotated(const at::Tensor& boxes1, const at::Tensor& boxes2) {
    check_rotated("box_iou_rotated", boxes1, "boxes1");
    check_rotated("box_iou_rotated", boxes2, "boxes2");
    check_same_device(boxes1, "boxes1", boxes2, "boxes2", "box_iou_rotated");
    const at::ScalarType out_dtype = c10::promoteTypes(boxes1.scalar_type(), boxes2.scalar_type());
    const at::ScalarType comp = compute_dtype(out_dtype);
    at::Tensor out = at::empty_symint({boxes1.sym_size(0), boxes2.sym_size(0)}, boxes1.options().dtype(comp));
    if (computes(out)) Kernels::box_iou_rotated(boxes1.to(comp), boxes2.to(comp), out);
    return out.to(out_dtype);
  }

  // box_iou_rotated's output shape follows from its inputs' (registered for Meta too).
  static void register_shaped(torch::Library& m) { m.impl("box_iou_rotated", &box_iou_rotated); }

  static void register_all(torch::Library& m) {
    register_shaped(m);
    m.impl("nms_rotated", &nms_rotated);
    m.impl("batched_nms_rotated", &batched_nms_rotated);
  }
};

}  // namespace pydet::nms_rotated
