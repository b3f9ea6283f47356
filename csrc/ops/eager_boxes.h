// torchvision's eager box formulas as ATen operations, for the dtypes whose results the fused kernels
// do not reproduce: integer boxes (pixel coordinates), which torchvision computes in integers --
// int8/int16/uint8 up-cast to int32 by its _upcast, int32 and int64 kept, differences taken before the
// up-cast where its code takes them there -- dividing into the default float dtype; and float16/
// bfloat16 boxes in box_convert, box_iou and generalized_box_iou, whose corner differences torchvision
// rounds to the half dtype before up-casting to float32. These compositions follow its code operation
// by operation, so the results, overflow and rounding included, are torchvision's. Operands are
// broadcastable [..., 4] tensors (a[..., None, :, :] against b for the pairwise forms).
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/atan.h>
#include <ATen/ops/max.h>
#include <ATen/ops/min.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/stack.h>
#include <c10/util/MathConstants.h>

#include <utility>
#include <vector>

#include "common/box_math.h"

namespace pydet::eager_boxes {

inline bool is_integer(const at::Tensor& t) {
  return at::isIntegralType(t.scalar_type(), /*includeBool=*/false);
}
inline bool is_half(at::ScalarType st) {
  return st == at::kHalf || st == at::kBFloat16;
}

// Whether a pairwise metric of these boxes (or its aligned form, the pairwise form's diagonal) is
// computed here rather than by the kernels.
inline bool computes(BoxMetric m, const at::Tensor& a, const at::Tensor& b) {
  if (is_integer(a) && is_integer(b)) return true;
  const bool rounds_in_half = m == BoxMetric::kIoU || m == BoxMetric::kGIoU;  // the others up-cast first
  return rounds_in_half && is_half(c10::promoteTypes(a.scalar_type(), b.scalar_type()));
}

// torchvision's _upcast: float32/float64 and int32/int64 kept, float16/bfloat16 to float32, narrower
// integers to int32.
inline at::Tensor upcast(const at::Tensor& t) {
  const at::ScalarType st = t.scalar_type();
  if (t.is_floating_point()) return st == at::kFloat || st == at::kDouble ? t : t.to(at::kFloat);
  return st == at::kInt || st == at::kLong ? t : t.to(at::kInt);
}

// torchvision's box_convert between axis-aligned formats (its _box_convert.py helpers, through xyxy):
// for integers, integer where its arithmetic stays integer and float32 where it halves (cxcywh); for
// float16/bfloat16, every step rounded to that dtype.
inline at::Tensor convert(const at::Tensor& boxes, BoxFormat in, BoxFormat out) {
  at::Tensor b = boxes;
  std::vector<at::Tensor> f = b.unbind(-1);
  if (in == BoxFormat::kXYWH) {
    b = at::stack({f[0], f[1], f[0] + f[2], f[1] + f[3]}, -1);
  } else if (in == BoxFormat::kCXCYWH) {
    b = at::stack({f[0] - 0.5 * f[2], f[1] - 0.5 * f[3], f[0] + 0.5 * f[2], f[1] + 0.5 * f[3]}, -1);
  }
  f = b.unbind(-1);
  if (out == BoxFormat::kXYWH) return at::stack({f[0], f[1], f[2] - f[0], f[3] - f[1]}, -1);
  if (out == BoxFormat::kCXCYWH) return at::stack({(f[0] + f[2]) / 2, (f[1] + f[3]) / 2, f[2] - f[0], f[3] - f[1]}, -1);
  return b;
}

// clip_boxes_to_image of integer boxes: x clamped to [0, width], y to [0, height], in their dtype.
inline at::Tensor clip(const at::Tensor& boxes, int64_t height, int64_t width) {
  const std::vector<at::Tensor> f = boxes.unbind(-1);
  return at::stack({f[0].clamp(0, width), f[1].clamp(0, height), f[2].clamp(0, width), f[3].clamp(0, height)}, -1);
}

// remove_small_boxes of integer boxes [N, 4]: torchvision's (w >= min_size) & (h >= min_size), compared
// as ATen compares an integer tensor with a float (in the default float dtype).
inline at::Tensor keep_large(const at::Tensor& boxes, double min_size) {
  const at::Tensor w = boxes.select(-1, 2) - boxes.select(-1, 0), h = boxes.select(-1, 3) - boxes.select(-1, 1);
  return ((w >= min_size) & (h >= min_size)).nonzero().view({-1});
}

// box_area(boxes, fmt): the corners' difference for xyxy, the stored width times height otherwise.
inline at::Tensor area(const at::Tensor& boxes, BoxFormat fmt = BoxFormat::kXYXY) {
  const at::Tensor b = upcast(boxes);
  if (fmt != BoxFormat::kXYXY) return b.select(-1, 2) * b.select(-1, 3);
  return (b.select(-1, 2) - b.select(-1, 0)) * (b.select(-1, 3) - b.select(-1, 1));
}

inline at::Tensor lo(const at::Tensor& b) {
  return b.slice(-1, 0, 2);
}
inline at::Tensor hi(const at::Tensor& b) {
  return b.slice(-1, 2, 4);
}

// width * height of the box spanning [lo, hi], clamped at 0 (torchvision's _upcast(rb - lt).clamp(min=0)).
inline at::Tensor clamped_area(const at::Tensor& lt, const at::Tensor& rb) {
  const at::Tensor wh = upcast(rb - lt).clamp_min(0);
  return wh.select(-1, 0) * wh.select(-1, 1);
}

struct InterUnion {
  at::Tensor inter, union_;
};

// The corners of boxes in format fmt as torchvision's _box_inter_union computes them: (lo, hi).
inline std::pair<at::Tensor, at::Tensor> corners(const at::Tensor& b, BoxFormat fmt) {
  switch (fmt) {
    case BoxFormat::kXYWH:
      return {lo(b), lo(b) + hi(b)};
    case BoxFormat::kCXCYWH:
      return {lo(b) - hi(b) / 2, lo(b) + hi(b) / 2};
    default:
      return {lo(b), hi(b)};
  }
}

// torchvision's _box_inter_union(boxes1, boxes2, fmt).
inline InterUnion inter_union(const at::Tensor& a, const at::Tensor& b, BoxFormat fmt = BoxFormat::kXYXY) {
  const auto [lo_a, hi_a] = corners(a, fmt);
  const auto [lo_b, hi_b] = corners(b, fmt);
  const at::Tensor inter = clamped_area(at::max(lo_a, lo_b), at::min(hi_a, hi_b));
  return {inter, area(a, fmt) + area(b, fmt) - inter};
}

inline at::Tensor iou(const at::Tensor& a, const at::Tensor& b, BoxFormat fmt = BoxFormat::kXYXY) {
  const InterUnion iu = inter_union(a, b, fmt);
  return iu.inter / iu.union_;
}

inline at::Tensor generalized_iou(const at::Tensor& a, const at::Tensor& b) {
  const InterUnion iu = inter_union(a, b);
  const at::Tensor enclosing = clamped_area(at::min(lo(a), lo(b)), at::max(hi(a), hi(b)));
  return iu.inter / iu.union_ - (enclosing - iu.union_) / enclosing;
}

// torchvision's _box_diou_iou on up-cast boxes: (distance IoU, IoU).
inline std::pair<at::Tensor, at::Tensor> distance_iou(const at::Tensor& a, const at::Tensor& b, double eps) {
  const at::Tensor plain = iou(a, b);
  const at::Tensor wh = upcast(at::max(hi(a), hi(b)) - at::min(lo(a), lo(b))).clamp_min(0);
  const at::Tensor diagonal_squared = wh.select(-1, 0).pow(2) + wh.select(-1, 1).pow(2) + eps;
  const at::Tensor dx = (a.select(-1, 0) + a.select(-1, 2)) / 2 - (b.select(-1, 0) + b.select(-1, 2)) / 2;
  const at::Tensor dy = (a.select(-1, 1) + a.select(-1, 3)) / 2 - (b.select(-1, 1) + b.select(-1, 3)) / 2;
  const at::Tensor centers_squared = dx.pow(2) + dy.pow(2);
  return {plain - centers_squared / diagonal_squared, plain};
}

inline at::Tensor complete_iou(const at::Tensor& a, const at::Tensor& b, double eps) {
  const auto [diou, plain] = distance_iou(a, b, eps);
  const at::Tensor aspect_a = at::atan((a.select(-1, 2) - a.select(-1, 0)) / (a.select(-1, 3) - a.select(-1, 1)));
  const at::Tensor aspect_b = at::atan((b.select(-1, 2) - b.select(-1, 0)) / (b.select(-1, 3) - b.select(-1, 1)));
  const at::Tensor v = (4 / (c10::pi<double> * c10::pi<double>)) * at::pow(aspect_a - aspect_b, 2);
  const at::Tensor alpha = v / (1 - plain + v + eps);
  return diou - alpha * v;
}

// The metric of integer boxes a, b (broadcastable [..., 4]): box_iou, generalized, distance or complete.
// fmt: box_iou's format (the other metrics take xyxy boxes).
inline at::Tensor metric(BoxMetric m, const at::Tensor& a, const at::Tensor& b, double eps,
                         BoxFormat fmt = BoxFormat::kXYXY) {
  switch (m) {
    case BoxMetric::kGIoU:
      return generalized_iou(a, b);
    case BoxMetric::kDIoU:
      return distance_iou(upcast(a), upcast(b), eps).first;
    case BoxMetric::kCIoU:
      return complete_iou(upcast(a), upcast(b), eps);
    default:
      return iou(a, b, fmt);
  }
}

}  // namespace pydet::eager_boxes
