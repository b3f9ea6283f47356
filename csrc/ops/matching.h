// IoU matching without the IoU matrix: the device-agnostic front end (kernels in cpu/matching.cpp and
// cuda/matching.cu). Every matcher (torchvision, detectron2, mmdet) only needs reductions of the
// M x N quality matrix Q between ground truth [M] and anchors [N]:
//   box_overlap_max:  per anchor max_m Q and its first argmax, per ground truth max_n Q and its first
//                     argmax (torch.max(dim) semantics: NaN wins, ties go to the lower index);
//   box_overlap_ties: per anchor the last ground truth m whose best value it attains
//                     (Q[m, n] == best[m], best[m] >= min_best): low-quality matching.
// The kernels compute Q on the fly with the same formula as box_iou / bbox_overlaps, so every value
// equals the matrix entry bit for bit, and hold O(M + N) memory instead of M x N.
//
// Ground truth is batched: gt [B, Mmax, 4] with per-image counts num_gt [B] (rows past the count are
// padding and ignored), anchors [N, 4] shared by every image.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "common/box_math.h"
#include "common/checks.h"

namespace pydet::matching {

// The quality measure: torchvision box_iou, or mmdet bbox_overlaps 'iou' / 'iof' (eps-clamped union).
// With anchors_first the iof is taken relative to the anchor (mmdet ignore_wrt_candidates).
struct Quality {
  BoxMetric metric;
  bool anchors_first;
  double eps;
};

inline Quality parse_quality(c10::string_view mode, bool anchors_first, double eps, const char* op) {
  return {parse_choice(mode, kQualityModes, op, "mode"), anchors_first, eps};
}

// f(std::integral_constant<BoxMetric, m>{}) for the quality's metric (the kernels are templated on it).
template <class F>
void with_metric(BoxMetric metric, const F& f) {
  switch (metric) {
    case BoxMetric::kMmIoU:
      return f(std::integral_constant<BoxMetric, BoxMetric::kMmIoU>{});
    case BoxMetric::kMmIoF:
      return f(std::integral_constant<BoxMetric, BoxMetric::kMmIoF>{});
    case BoxMetric::kIoU:
      return f(std::integral_constant<BoxMetric, BoxMetric::kIoU>{});
    default:  // parse_quality admits no other metric
      TORCH_INTERNAL_ASSERT(false, "pydet matching: unsupported quality metric ", int(metric));
  }
}

// Canonical inputs: gt [B, M, 4], anchors [N, 4] in the compute dtype, counts [B] int64 (contiguous,
// on the gt's device), ignored [B, N] bool or undefined.
struct Problem {
  at::Tensor gt, anchors, counts, ignored;
};

// Kernels must provide:
//   static void overlap_max(const Problem&, const Quality&, Tensor& anchor_max, Tensor& anchor_argmax,
//                           Tensor& gt_max, Tensor& gt_argmax);
//   static void overlap_ties(const Problem&, const Quality&, const Tensor& gt_best, double min_best, Tensor& out);
template <class Kernels>
struct Ops {
  static Problem canonical(const char* op, const at::Tensor& gt, const at::Tensor& anchors,
                           const std::optional<at::Tensor>& num_gt, const std::optional<at::Tensor>& ignored) {
    check_boxes(gt, op, "gt", "[M, 4] or [B, M, 4]", 2, 3);
    check_boxes(anchors, op, "anchors", "[N, 4]", 2, 2);
    check_same_device(gt, "gt", anchors, "anchors", op);
    TORCH_CHECK_TYPE(gt.scalar_type() == anchors.scalar_type(), "pydet.", op, ": gt and anchors must have the same ",
                     "dtype, got ", dtype_name(gt.scalar_type()), " and ", dtype_name(anchors.scalar_type()));
    const at::ScalarType dt = compute_dtype(gt.scalar_type());
    Problem p;
    p.gt = gt.to(dt);
    if (p.gt.dim() == 2) p.gt = p.gt.unsqueeze(0);
    p.anchors = anchors.to(dt);
    const c10::SymInt batch = p.gt.sym_size(0), m = p.gt.sym_size(1), n = p.anchors.sym_size(0);
    // Checked on concrete sizes only: a guard on a symbolic size would narrow what torch.export accepts.
    TORCH_CHECK_VALUE(m.maybe_as_int().value_or(0) < (int64_t(1) << 31), "pydet.", op,
                      ": at most 2^31 - 1 ground-truth boxes per image, got ", m);
    if (num_gt.has_value()) {
      const at::Tensor& c = *num_gt;
      TORCH_CHECK_TYPE(c.scalar_type() == at::kLong, "pydet.", op, ": num_gt must be an int64 tensor, got ",
                       dtype_name(c.scalar_type()));
      TORCH_CHECK_VALUE(c.dim() == 1 && c.sym_size(0) == batch, "pydet.", op, ": num_gt must have shape [B] = [", batch,
                        "] (one count per image of gt), got ", shape_str(c.sym_sizes()));
      check_same_device(gt, "gt", c, "num_gt", op);
      p.counts = c.contiguous();
    } else {
      p.counts = at::full_symint({batch}, m, gt.options().dtype(at::kLong));
    }
    if (ignored.has_value()) {
      const at::Tensor& g = *ignored;
      TORCH_CHECK_TYPE(g.scalar_type() == at::kBool, "pydet.", op, ": ignored must be a bool tensor, got ",
                       dtype_name(g.scalar_type()));
      TORCH_CHECK_VALUE(
          (g.dim() == 1 && g.sym_size(0) == n) || (g.dim() == 2 && g.sym_size(0) == batch && g.sym_size(1) == n),
          "pydet.", op, ": ignored must have shape [N] or [B, N] = [", batch, ", ", n, "], got ",
          shape_str(g.sym_sizes()));
      check_same_device(gt, "gt", g, "ignored", op);
      p.ignored = g.expand_symint({batch, n}).contiguous();
    }
    return p;
  }

  // Results keep gt's rank: [N] / [M] for gt [M, 4], [B, N] / [B, M] for gt [B, M, 4].
  static at::Tensor shaped(const at::Tensor& t, const at::Tensor& gt) { return gt.dim() == 2 ? t.squeeze(0) : t; }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> overlap_max(
      const at::Tensor& gt, const at::Tensor& anchors, const std::optional<at::Tensor>& num_gt, c10::string_view mode,
      bool anchors_first, double eps, const std::optional<at::Tensor>& ignored) {
    const char* op = "box_overlap_max";
    const Quality q = parse_quality(mode, anchors_first, eps, op);
    const Problem p = canonical(op, gt, anchors, num_gt, ignored);
    const c10::SymInt batch = p.gt.sym_size(0), m = p.gt.sym_size(1), n = p.anchors.sym_size(0);
    at::Tensor anchor_max = at::empty_symint({batch, n}, p.gt.options());
    at::Tensor anchor_argmax = at::empty_symint({batch, n}, p.gt.options().dtype(at::kLong));
    at::Tensor gt_max = at::empty_symint({batch, m}, p.gt.options());
    at::Tensor gt_argmax = at::empty_symint({batch, m}, p.gt.options().dtype(at::kLong));
    if (computes(anchor_max) || computes(gt_max)) {
      Kernels::overlap_max(p, q, anchor_max, anchor_argmax, gt_max, gt_argmax);
    }
    return {shaped(anchor_max, gt), shaped(anchor_argmax, gt), shaped(gt_max, gt), shaped(gt_argmax, gt)};
  }

  static at::Tensor overlap_ties(const at::Tensor& gt, const at::Tensor& anchors, const at::Tensor& gt_best,
                                 double min_best, const std::optional<at::Tensor>& num_gt, c10::string_view mode,
                                 double eps, const std::optional<at::Tensor>& ignored) {
    const char* op = "box_overlap_ties";
    const Quality q = parse_quality(mode, false, eps, op);
    const Problem p = canonical(op, gt, anchors, num_gt, ignored);
    const c10::SymInt batch = p.gt.sym_size(0), m = p.gt.sym_size(1), n = p.anchors.sym_size(0);
    TORCH_CHECK_VALUE(gt_best.dim() == gt.dim() - 1 && gt_best.sym_size(-1) == m &&
                          (gt_best.dim() == 1 || gt_best.sym_size(0) == batch),
                      "pydet.", op, ": gt_best must have shape ", gt.dim() == 2 ? "[M]" : "[B, M]",
                      " matching gt, got ", shape_str(gt_best.sym_sizes()));
    check_same_device(gt, "gt", gt_best, "gt_best", op);
    TORCH_CHECK_TYPE(gt_best.scalar_type() == p.gt.scalar_type(), "pydet.", op, ": gt_best must have dtype ",
                     dtype_name(p.gt.scalar_type()), " (box_overlap_max's gt_max), got ",
                     dtype_name(gt_best.scalar_type()));
    const at::Tensor best = (gt_best.dim() == 1 ? gt_best.unsqueeze(0) : gt_best).contiguous();
    at::Tensor out = at::empty_symint({batch, n}, p.gt.options().dtype(at::kLong));
    if (computes(out)) Kernels::overlap_ties(p, q, best, min_best, out);
    return shaped(out, gt);
  }

  static void register_all(torch::Library& m) {
    m.impl("box_overlap_max", &overlap_max);
    m.impl("box_overlap_ties", &overlap_ties);
  }
};

}  // namespace pydet::matching
