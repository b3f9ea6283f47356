// NMS family (nms, batched_nms, multiclass_nms, soft_nms, nms_rotated, batched_nms_rotated,
// box_iou_rotated, and topk_per_level, the candidate selection before NMS): the device-agnostic half of each operator -- validation, dtype handling,
// output allocation. The device half (`Kernels`, see cpu/nms.cpp and cuda/nms.cu) computes.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/nms_math.h"
#include "ops/boxes.h"

namespace pydet::nms {


// Outputs of multiclass_nms, all allocated by the front end with static shapes.
struct MulticlassOutputs {
  at::Tensor num_detections;  // [B] int64
  at::Tensor boxes;           // [B, max_detections, 4], compute dtype
  at::Tensor scores;          // [B, max_detections], compute dtype
  at::Tensor labels;          // [B, max_detections] int64
  at::Tensor indices;         // [B, max_detections] int64
};

struct MulticlassOptions {
  double score_threshold;
  double iou_threshold;
  int64_t topk_per_class;  // <= 0: every candidate above the score threshold
  int64_t max_detections;
  bool class_agnostic;
  int64_t background_class;  // -1: none
  BoxFormat box_format;
  int64_t num_classes;  // C: scores' last dimension, or num_classes with labels
};

// The problem topk_per_level hands its kernel: scores [B, R] contiguous (R = N * C, in the scores' own
// dtype), split into levels [start[l], start[l + 1]) of each row.
struct TopkProblem {
  std::vector<int64_t> start;  // L + 1 offsets into a row (elements)
  int64_t k;
  bool thresholded;  // false: every non-NaN value is a candidate
  double threshold;  // candidates: value > threshold (threshold already rounded to the scores' dtype)
};

// Kernels must provide (boxes/scores already in a float/double compute dtype):
//   static at::Tensor nms(const Tensor& boxes /*[N,4]*/, const Tensor& scores /*[N] double*/, double thr);
//   static at::Tensor batched_nms(const Tensor& boxes, const Tensor& scores /*double*/, const Tensor& idxs /*int64*/,
//                                 double thr);
//   static void multiclass_nms(const Tensor& boxes /*[B,N,4] or [B,N,C,4]*/, const Tensor& scores /*[B,N,C], or
//                              [B,N] with labels*/, const Tensor& labels /*[B,N] int64 or undefined*/,
//                              const MulticlassOptions&, MulticlassOutputs& out);
//   static std::tuple<Tensor, Tensor> soft_nms(const Tensor& boxes, const Tensor& scores /*compute dtype*/,
//                                              double thr, double sigma, double min_score, SoftNmsMethod, int64_t offset);
//   static at::Tensor nms_rotated(const Tensor& boxes /*[N,5]*/, const Tensor& scores /*double*/, const Tensor& idxs
//                                 /*int64 or undefined*/, double thr);
//   static void box_iou_rotated(const Tensor& b1 /*[N,5]*/, const Tensor& b2 /*[M,5]*/, Tensor& out /*[N,M]*/);
//   static void topk_per_level(const Tensor& scores /*[B,R] contiguous, any float dtype*/, const TopkProblem&,
//                              Tensor& values /*[B,L,k] scores' dtype*/, Tensor& indices /*[B,L,k] int64*/);
template <class Kernels>
struct Ops {
  static void check_threshold(const char* op, const char* arg, double v) {
    TORCH_CHECK_VALUE(v >= 0, "pydet.", op, ": ", arg, " must be >= 0 (an IoU threshold), got ", v);
  }

  static void check_scores(const char* op, const at::Tensor& boxes, const at::Tensor& scores) {
    TORCH_CHECK_VALUE(scores.dim() == 1 && scores.sym_size(0) == boxes.sym_size(0), "pydet.", op,
                      ": scores must have shape [N] matching boxes [N, ", boxes.sym_size(-1), "], got scores ",
                      shape_str(scores.sym_sizes()), " and boxes ", shape_str(boxes.sym_sizes()));
    check_floating(scores, op, "scores");
    check_same_device(boxes, "boxes", scores, "scores", op);
  }

  static void check_idxs(const char* op, const at::Tensor& boxes, const at::Tensor& idxs) {
    TORCH_CHECK_VALUE(idxs.dim() == 1 && idxs.sym_size(0) == boxes.sym_size(0), "pydet.", op,
                      ": idxs must have shape [N] matching boxes, got idxs ", shape_str(idxs.sym_sizes()),
                      " and boxes ", shape_str(boxes.sym_sizes()));
    check_integer(idxs, op, "idxs", "the category of each box");
    check_same_device(boxes, "boxes", idxs, "idxs", op);
  }

  static void check_rotated(const char* op, const at::Tensor& boxes, const char* arg) {
    TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.sym_size(1) == 5, "pydet.", op, ": ", arg,
                      " must have shape [N, 5] (cx, cy, w, h, angle in degrees), got ", shape_str(boxes.sym_sizes()));
    check_floating(boxes, op, arg);
  }

  static at::Tensor rows_of(const at::Tensor& t) {
    return t.to(compute_dtype(t.scalar_type()));
  }

  static at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
    check_boxes(boxes, "nms", "boxes", "[N, 4]", 2, 2);
    check_scores("nms", boxes, scores);
    check_threshold("nms", "iou_threshold", iou_threshold);
    if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    return Kernels::nms(rows_of(boxes), scores.to(at::kDouble), iou_threshold);
  }

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double iou_threshold) {
    check_boxes(boxes, "batched_nms", "boxes", "[N, 4]", 2, 2);
    check_scores("batched_nms", boxes, scores);
    check_idxs("batched_nms", boxes, idxs);
    check_threshold("batched_nms", "iou_threshold", iou_threshold);
    if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    return Kernels::batched_nms(rows_of(boxes), scores.to(at::kDouble), idxs.to(at::kLong), iou_threshold);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiclass_nms(
      const at::Tensor& boxes, const at::Tensor& scores, double score_threshold, double iou_threshold,
      int64_t topk_per_class, int64_t max_detections, bool class_agnostic, std::optional<int64_t> background_class,
      c10::string_view box_format, const std::optional<at::Tensor>& labels, std::optional<int64_t> num_classes) {
    const char* op = "multiclass_nms";
    const bool labeled = labels.has_value();
    if (labeled) {  // one class per candidate
      TORCH_CHECK_VALUE(scores.dim() == 2, "pydet.multiclass_nms: with labels, scores must have shape [B, N] (one ",
                        "score per candidate), got ", shape_str(scores.sym_sizes()));
      TORCH_CHECK_VALUE(num_classes.has_value() && *num_classes >= 1, "pydet.multiclass_nms: with labels, ",
                        "num_classes (the number of classes the labels index, >= 1) is required, got ",
                        num_classes.has_value() ? c10::str(*num_classes) : std::string("None"));
      check_integer(*labels, op, "labels", "the class of each candidate");
      TORCH_CHECK_VALUE(labels->sym_sizes() == scores.sym_sizes(), "pydet.multiclass_nms: labels must have the ",
                        "shape of scores ", shape_str(scores.sym_sizes()), ", got ", shape_str(labels->sym_sizes()));
      check_same_device(scores, "scores", *labels, "labels", op);
    } else {
      TORCH_CHECK_VALUE(scores.dim() == 3, "pydet.multiclass_nms: scores must have shape [B, N, C] (or [B, N] with ",
                        "labels), got ", shape_str(scores.sym_sizes()));
      TORCH_CHECK_VALUE(!num_classes.has_value(), "pydet.multiclass_nms: num_classes is only used with labels ",
                        "(scores [B, N, C] give the class count)");
    }
    check_floating(scores, op, "scores");
    const c10::SymInt B = scores.sym_size(0), N = scores.sym_size(1);
    const c10::SymInt C = labeled ? c10::SymInt(*num_classes) : scores.sym_size(2);
    const bool class_specific = boxes.dim() == 4;
    TORCH_CHECK_VALUE((boxes.dim() == 3 || boxes.dim() == 4) && boxes.sym_size(-1) == 4 && boxes.sym_size(0) == B &&
                          boxes.sym_size(1) == N && (!class_specific || boxes.sym_size(2) == C),
                      "pydet.multiclass_nms: boxes must have shape [B, N, 4] (shared by all classes) or [B, N, C, 4] "
                      "(one box per class) with B, N from scores ",
                      shape_str(scores.sym_sizes()), " and C = ", C, ", got ", shape_str(boxes.sym_sizes()));
    check_floating(boxes, op, "boxes");
    check_same_device(boxes, "boxes", scores, "scores", op);
    // Detections carry 32-bit anchor and class indices (the packed sort keys; CUDA's radix sort).
    // Checked on concrete sizes only: a guard on a symbolic size would narrow what torch.export accepts.
    constexpr int64_t kMaxIndex = (int64_t(1) << 31) - 1;
    TORCH_CHECK_VALUE(N.maybe_as_int().value_or(0) <= kMaxIndex && C.maybe_as_int().value_or(0) <= kMaxIndex,
                      "pydet.multiclass_nms: scores ",
                      labeled ? c10::str("[B, N] = ", shape_str(scores.sym_sizes()), " with ", C, " classes")
                              : c10::str("[B, N, C] = ", shape_str(scores.sym_sizes())),
                      " has more than 2^31 - 1 anchors or classes; split the anchors");
    TORCH_CHECK_VALUE(!std::isnan(score_threshold), "pydet.multiclass_nms: score_threshold must not be NaN");
    check_threshold(op, "iou_threshold", iou_threshold);
    TORCH_CHECK_VALUE(topk_per_class > 0 || topk_per_class == -1,
                      "pydet.multiclass_nms: topk_per_class must be a positive count or -1 (no limit), got ",
                      topk_per_class);
    TORCH_CHECK_VALUE(max_detections >= 0, "pydet.multiclass_nms: max_detections must be >= 0, got ",
                      max_detections);
    const int64_t background = background_class.value_or(-1);
    TORCH_CHECK_VALUE(!background_class.has_value() || (background >= 0 && C > background),
                      "pydet.multiclass_nms: background_class must be None or a class index in [0, ", C, "), got ",
                      background);
    const BoxFormat fmt = parse_choice(box_format, kCornerOrCenterFormats, op, "box_format");

    const at::ScalarType comp = compute_dtype(c10::promoteTypes(boxes.scalar_type(), scores.scalar_type()));
    MulticlassOutputs out{
        at::empty_symint({B}, scores.options().dtype(at::kLong)),
        at::empty_symint({B, max_detections, 4}, scores.options().dtype(comp)),
        at::empty_symint({B, max_detections}, scores.options().dtype(comp)),
        at::empty_symint({B, max_detections}, scores.options().dtype(at::kLong)),
        at::empty_symint({B, max_detections}, scores.options().dtype(at::kLong)),
    };
    if (!scores.is_meta()) {  // the kernel also writes num_detections for empty problems
      const MulticlassOptions opt{score_threshold, iou_threshold, topk_per_class, max_detections,
                                  class_agnostic,  background,    fmt,           C.expect_int()};
      Kernels::multiclass_nms(boxes.to(comp), scores.to(comp), labeled ? labels->to(at::kLong) : at::Tensor(), opt,
                              out);
    }
    return {out.num_detections, out.boxes.to(boxes.scalar_type()), out.scores.to(scores.scalar_type()), out.labels,
            out.indices};
  }

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

  static at::Tensor nms_rotated(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
    check_rotated("nms_rotated", boxes, "boxes");
    check_scores("nms_rotated", boxes, scores);
    check_threshold("nms_rotated", "iou_threshold", iou_threshold);
    if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    return Kernels::nms_rotated(rows_of(boxes), scores.to(at::kDouble), at::Tensor(), iou_threshold);
  }

  static at::Tensor batched_nms_rotated(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                        double iou_threshold) {
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

  // Per image and level, the k largest scores above the threshold, static shapes (see pydet/ops/nms.py).
  static std::tuple<at::Tensor, at::Tensor> topk_per_level(const at::Tensor& scores, int64_t k,
                                                           std::optional<double> score_threshold,
                                                           at::OptionalSymIntArrayRef level_sizes) {
    const char* op = "topk_per_level";
    TORCH_CHECK_VALUE(scores.dim() == 2 || scores.dim() == 3,
                      "pydet.topk_per_level: scores must have shape [B, N] or [B, N, C], got ",
                      shape_str(scores.sym_sizes()));
    check_floating(scores, op, "scores");
    TORCH_CHECK_VALUE(k >= 0, "pydet.topk_per_level: k must be >= 0, got ", k);
    TORCH_CHECK_VALUE(!score_threshold.has_value() || !std::isnan(*score_threshold),
                      "pydet.topk_per_level: score_threshold must not be NaN (None selects every non-NaN score)");
    const c10::SymInt B = scores.sym_size(0), N = scores.sym_size(1);
    const c10::SymInt C = scores.dim() == 3 ? scores.sym_size(2) : c10::SymInt(1);
    std::vector<c10::SymInt> start{0};  // level offsets into a row of [B, N * C]
    if (level_sizes.has_value()) {
      for (const c10::SymInt& n : *level_sizes) {
        TORCH_CHECK_VALUE(n >= 0, "pydet.topk_per_level: level_sizes must be >= 0, got ",
                          shape_str(*level_sizes));
        start.push_back(start.back() + n * C);
      }
      TORCH_CHECK_VALUE(start.back() == N * C, "pydet.topk_per_level: level_sizes must sum to N = ", N,
                        " (scores ", shape_str(scores.sym_sizes()), "), got ", shape_str(*level_sizes));
    } else {
      start.push_back(N * C);
    }
    const int64_t L = static_cast<int64_t>(start.size()) - 1;
    at::Tensor values = at::empty_symint({B, L, k}, scores.options());
    at::Tensor indices = at::empty_symint({B, L, k}, scores.options().dtype(at::kLong));
    if (!computes(values)) return {values, indices};
    TopkProblem p{{}, k, score_threshold.has_value(), 0.0};
    for (const c10::SymInt& offset : start) p.start.push_back(offset.expect_int());
    if (p.thresholded) {
      // `score > threshold` in the scores' dtype, as torch compares a tensor with a Python float
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "topk_per_level", [&] {
        p.threshold = static_cast<double>(static_cast<scalar_t>(*score_threshold));
      });
    }
    Kernels::topk_per_level(scores.reshape({B.expect_int(), (N * C).expect_int()}).contiguous(), p, values, indices);
    return {values, indices};
  }

  // The ops whose output shapes follow from their inputs' (registered for CPU, CUDA and Meta).
  static void register_shaped(torch::Library& m) {
    m.impl("multiclass_nms", &multiclass_nms);
    m.impl("box_iou_rotated", &box_iou_rotated);
    m.impl("topk_per_level", &topk_per_level);
  }

  // The ops whose output length depends on the data (their fakes are in pydet/ops/nms.py).
  static void register_data_dependent(torch::Library& m) {
    m.impl("nms", &nms);
    m.impl("batched_nms", &batched_nms);
    m.impl("soft_nms", &soft_nms);
    m.impl("nms_rotated", &nms_rotated);
    m.impl("batched_nms_rotated", &batched_nms_rotated);
  }

  static void register_all(torch::Library& m) {
    register_shaped(m);
    register_data_dependent(m);
  }
};

}  // namespace pydet::nms
