// topk_per_level: candidate selection before NMS -- per image and feature level, the k largest scores
// above a threshold, with static output shapes. The device-agnostic front end; kernels in
// cpu/topk_per_level.cpp and cuda/topk_per_level.cu.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "common/checks.h"

namespace pydet::candidates {

// The problem topk_per_level hands its kernel: scores [B, R] contiguous (R = N * C, in the scores' own
// dtype), split into levels [start[l], start[l + 1]) of each row.
struct TopkProblem {
  std::vector<int64_t> start;  // L + 1 offsets into a row (elements)
  int64_t k;
  bool thresholded;  // false: every non-NaN value is a candidate
  double threshold;  // candidates: value > threshold (threshold already rounded to the scores' dtype)
};

// Kernels must provide:
//   static void topk_per_level(const Tensor& scores /*[B,R] contiguous, any float dtype*/, const TopkProblem&,
//                              Tensor& values /*[B,L,k] scores' dtype*/, Tensor& indices /*[B,L,k] int64*/);
template <class Kernels>
struct Ops {
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
        TORCH_CHECK_VALUE(n >= 0, "pydet.topk_per_level: level_sizes must be >= 0, got ", shape_str(*level_sizes));
        start.push_back(start.back() + n * C);
      }
      TORCH_CHECK_VALUE(start.back() == N * C, "pydet.topk_per_level: level_sizes must sum to N = ", N, " (scores ",
                        shape_str(scores.sym_sizes()), "), got ", shape_str(*level_sizes));
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

  static void register_all(torch::Library& m) { m.impl("topk_per_level", &topk_per_level); }
};

}  // namespace pydet::candidates
