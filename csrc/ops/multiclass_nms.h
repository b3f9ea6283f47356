// multiclass_nms: a detector's whole post-processing in one call with static output shapes -- per
// image, candidates above a score threshold, the top k per class, per-class (or class-agnostic) greedy
// NMS and the best max_detections. The device-agnostic front end; kernels in cpu/multiclass_nms.cpp
// and cuda/multiclass_nms.cu.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "ops/nms.h"

namespace pydet::multiclass_nms {

using nms::check_threshold;

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

// Kernels must provide (boxes/scores in the compute dtype):
//   static void multiclass_nms(const Tensor& boxes /*[B,N,4] or [B,N,C,4]*/, const Tensor& scores /*[B,N,C], or
//                              [B,N] with labels*/, const Tensor& labels /*[B,N] int64 or undefined*/,
//                              const MulticlassOptions&, MulticlassOutputs& out);
template <class Kernels>
struct Ops {
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
    TORCH_CHECK_VALUE(max_detections >= 0, "pydet.multiclass_nms: max_detections must be >= 0, got ", max_detections);
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
      const MulticlassOptions opt{score_threshold, iou_threshold, topk_per_class, max_detections, class_agnostic,
                                  background,      fmt,           C.expect_int()};
      Kernels::multiclass_nms(boxes.to(comp), scores.to(comp), labeled ? labels->to(at::kLong) : at::Tensor(), opt,
                              out);
    }
    return {out.num_detections, out.boxes.to(boxes.scalar_type()), out.scores.to(scores.scalar_type()), out.labels,
            out.indices};
  }

  static void register_all(torch::Library& m) { m.impl("multiclass_nms", &multiclass_nms); }
};

}  // namespace pydet::multiclass_nms
