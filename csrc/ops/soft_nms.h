// soft_nms (mmcv): scores decay instead of boxes being dropped. The device-agnostic front end;
// kernels in cpu/soft_nms.cpp and cuda/soft_nms.cu.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "common/checks.h"
#include "ops/nms.h"

namespace pydet::soft_nms {

using nms::check_scores;
using nms::check_threshold;

// Kernels must provide (boxes and scores in the compute dtype):
//   static std::tuple<Tensor, Tensor> soft_nms(const Tensor& boxes, const Tensor& scores, double thr, double sigma,
//                                              double min_score, SoftNmsMethod, int64_t offset);
// returning (dets [K, 5], kept indices [K]); K depends on the data (Python fake in pydet/ops/nms.py).
template <class Kernels>
struct Ops {
  static std::tuple<at::Tensor, at::Tensor> soft_nms(const at::Tensor& boxes, const at::Tensor& scores,
                                                     double iou_threshold, double sigma, double min_score,
                                                     c10::string_view method, int64_t offset) {
    const char* op = "soft_nms";
    check_boxes(boxes, op, "boxes", "[N, 4]", 2, 2);
    check_scores(op, boxes, scores);
    check_threshold(op, "iou_threshold", iou_threshold);
    const SoftNmsMethod m = parse_choice(method, kSoftNmsMethods, op, "method");
    TORCH_CHECK_VALUE(sigma > 0, "pydet.soft_nms: sigma must be > 0, got ", sigma);
    TORCH_CHECK_VALUE(!std::isnan(min_score), "pydet.soft_nms: min_score must not be NaN");
    TORCH_CHECK_VALUE(offset == 0 || offset == 1, "pydet.soft_nms: offset must be 0 or 1, got ", offset);
    const at::ScalarType comp = compute_dtype(c10::promoteTypes(boxes.scalar_type(), scores.scalar_type()));
    if (boxes.size(0) == 0) {
      return {at::empty({0, 5}, boxes.options().dtype(comp)).to(boxes.scalar_type()),
              at::empty({0}, boxes.options().dtype(at::kLong))};
    }
    auto [dets, keep] = Kernels::soft_nms(boxes.to(comp), scores.to(comp), iou_threshold, sigma, min_score, m, offset);
    return {dets.to(boxes.scalar_type()), keep};
  }

  static void register_all(torch::Library& m) { m.impl("soft_nms", &soft_nms); }
};

}  // namespace pydet::soft_nms
