// The NMS family's shared argument checks and greedy NMS (nms, batched_nms): the device-agnostic
// front end. The other algorithms have their own front ends beside this one (multiclass_nms.h,
// soft_nms.h, nms_rotated.h); topk_per_level.h is the candidate selection before NMS. Device halves:
// cpu/nms.cpp, cuda/nms.cu.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/checks.h"

namespace pydet::nms {

inline void check_threshold(const char* op, const char* arg, double v) {
  TORCH_CHECK_VALUE(v >= 0, "pydet.", op, ": ", arg, " must be >= 0 (an IoU threshold), got ", v);
}

inline void check_scores(const char* op, const at::Tensor& boxes, const at::Tensor& scores) {
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.sym_size(0) == boxes.sym_size(0), "pydet.", op,
                    ": scores must have shape [N] matching boxes [N, ", boxes.sym_size(-1), "], got scores ",
                    shape_str(scores.sym_sizes()), " and boxes ", shape_str(boxes.sym_sizes()));
  check_floating(scores, op, "scores");
  check_same_device(boxes, "boxes", scores, "scores", op);
}

inline void check_idxs(const char* op, const at::Tensor& boxes, const at::Tensor& idxs) {
  TORCH_CHECK_VALUE(idxs.dim() == 1 && idxs.sym_size(0) == boxes.sym_size(0), "pydet.", op,
                    ": idxs must have shape [N] matching boxes, got idxs ", shape_str(idxs.sym_sizes()), " and boxes ",
                    shape_str(boxes.sym_sizes()));
  check_integer(idxs, op, "idxs", "the category of each box");
  check_same_device(boxes, "boxes", idxs, "idxs", op);
}

inline at::Tensor rows_of(const at::Tensor& t) {
  return t.to(compute_dtype(t.scalar_type()));
}

// Kernels must provide (boxes in a float/double compute dtype, scores float64, idxs int64):
//   static at::Tensor nms(const Tensor& boxes /*[N,4]*/, const Tensor& scores /*[N]*/, double thr);
//   static at::Tensor batched_nms(const Tensor& boxes, const Tensor& scores, const Tensor& idxs, double thr);
// Both return the kept indices (int64) in decreasing score order; the output length depends on the
// data, so these ops have Python fakes (pydet/ops/nms.py) rather than a Meta registration.
template <class Kernels>
struct Ops {
  static at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
    check_boxes(boxes, "nms", "boxes", "[N, 4]", 2, 2);
    check_scores("nms", boxes, scores);
    check_threshold("nms", "iou_threshold", iou_threshold);
    if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    return Kernels::nms(rows_of(boxes), scores.to(at::kDouble), iou_threshold);
  }

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double iou_threshold) {
    // torchvision returns before it looks at the other arguments when there are no boxes.
    if (boxes.sym_numel() == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    check_boxes(boxes, "batched_nms", "boxes", "[N, 4]", 2, 2);
    check_scores("batched_nms", boxes, scores);
    check_idxs("batched_nms", boxes, idxs);
    check_threshold("batched_nms", "iou_threshold", iou_threshold);
    if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    return Kernels::batched_nms(rows_of(boxes), scores.to(at::kDouble), idxs.to(at::kLong), iou_threshold);
  }

  static void register_all(torch::Library& m) {
    m.impl("nms", &nms);
    m.impl("batched_nms", &batched_nms);
  }
};

}  // namespace pydet::nms
