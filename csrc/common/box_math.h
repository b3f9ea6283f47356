// The box formulas, written once for CPU and CUDA, forward and backward (see dual.h).
//
// Each formula reproduces the reference library's eager PyTorch expression operation by operation
// (same operations, same order), so with fused multiply-add disabled (-ffp-contract=off,
// nvcc --fmad=false) float32/float64 results are bit-identical to the reference formulas; only
// atan (complete IoU) may differ in the last ulp. Half and bfloat16 inputs are computed in float32.
#pragma once

#include "common/dual.h"

#include <cstdint>

namespace pydet {

// ---- formats ------------------------------------------------------------------------------------
// The axis-aligned formats (4 coordinates), then torchvision 0.29's rotated ones (ops/rotated_formats.h),
// which only box_convert and box_iou's front ends read: the kernels take axis-aligned boxes.
enum class BoxFormat : int8_t { kXYXY, kXYWH, kCXCYWH, kXYWHR, kCXCYWHR, kXYXYXYXY };
constexpr bool is_rotated(BoxFormat f) {
  return f >= BoxFormat::kXYWHR;
}
constexpr int64_t coordinates_of(BoxFormat f) {
  return f == BoxFormat::kXYXYXYXY ? 8 : is_rotated(f) ? 5 : 4;
}

template <class V>
struct Box4 {
  V a, b, c, d;  // coordinates in the box's own format
};

// One axis of a box: (x1, x2) or (y1, y2) of an xyxy box, (cx, w) or (cy, h) of a (cx, cy, w, h) box.
template <class V>
struct Axis {
  V first, second;
};
template <class V>
PYDET_HD Axis<V> x_of(const Box4<V>& q) {
  return {q.a, q.c};
}
template <class V>
PYDET_HD Axis<V> y_of(const Box4<V>& q) {
  return {q.b, q.d};
}
template <class V>
PYDET_HD Box4<V> join_axes(const Axis<V>& x, const Axis<V>& y) {
  return {x.first, y.first, x.second, y.second};
}

// torchvision's _box_*_to_xyxy / _box_xyxy_to_* helpers; other pairs go through xyxy as there.
template <class V>
PYDET_HD Box4<V> to_xyxy(BoxFormat fmt, const Box4<V>& q) {
  using S = scalar_of_t<V>;
  switch (fmt) {
    case BoxFormat::kXYWH:  // (x, y, w, h)
      return {q.a, q.b, q.a + q.c, q.b + q.d};
    case BoxFormat::kCXCYWH:  // (cx, cy, w, h)
      return {q.a - S(0.5) * q.c, q.b - S(0.5) * q.d, q.a + S(0.5) * q.c, q.b + S(0.5) * q.d};
    default:
      return q;
  }
}
template <class V>
PYDET_HD Box4<V> from_xyxy(BoxFormat fmt, const Box4<V>& q) {
  using S = scalar_of_t<V>;
  switch (fmt) {
    case BoxFormat::kXYWH:
      return {q.a, q.b, q.c - q.a, q.d - q.b};
    case BoxFormat::kCXCYWH:
      return {(q.a + q.c) / S(2), (q.b + q.d) / S(2), q.c - q.a, q.d - q.b};
    default:
      return q;
  }
}

// torchvision box_area: (x2 - x1) * (y2 - y1).
template <class V>
PYDET_HD V box_area(const Box4<V>& q) {
  return (q.c - q.a) * (q.d - q.b);
}
// torchvision 0.29's box_area(fmt="xywh" or "cxcywh"): the stored width times the stored height.
template <class V>
PYDET_HD V box_area_of_size(const Box4<V>& q) {
  return q.c * q.d;
}
template <class V>
PYDET_HD V box_area(BoxFormat fmt, const Box4<V>& q) {
  return fmt == BoxFormat::kXYXY ? box_area(q) : box_area_of_size(q);
}

// torchvision clip_boxes_to_image: x clamped to [lo, width], y to [lo, height], lo = 0. (With
// lo = -inf and infinite sizes it is the identity, NaN and -0.0 included.)
template <class V, class S>
PYDET_HD Axis<V> clip_axis(const Axis<V>& q, S lo, S hi) {
  return {clamp(q.first, lo, hi), clamp(q.second, lo, hi)};
}
template <class V, class S>
PYDET_HD Box4<V> clip_box(const Box4<V>& q, S height, S width, S lo = S(0)) {
  return join_axes(clip_axis(x_of(q), lo, width), clip_axis(y_of(q), lo, height));
}

// Backward helpers: seed a box's four coordinates as the variables of a Dual<S, 4>, and pull an
// upstream gradient back through a box-valued result (vector-Jacobian product).
template <class S>
PYDET_HD Box4<Dual<S, 4>> seed_box(const Box4<S>& q) {
  using D = Dual<S, 4>;
  return {D::variable(q.a, 0), D::variable(q.b, 1), D::variable(q.c, 2), D::variable(q.d, 3)};
}
template <class S, class G>
PYDET_HD Box4<S> pull_back(const Box4<Dual<S, 4>>& out, const Box4<G>& grad) {
  Box4<S> r;
  S* rp[4] = {&r.a, &r.b, &r.c, &r.d};
  for (int k = 0; k < 4; ++k) {
    *rp[k] = S(grad.a) * out.a.d[k] + S(grad.b) * out.b.d[k] + S(grad.c) * out.c.d[k] + S(grad.d) * out.d.d[k];
  }
  return r;
}

// ---- pairwise metrics ---------------------------------------------------------------------------
enum class BoxMetric : int8_t {
  // torchvision.ops box_iou, generalized_box_iou, distance_box_iou, complete_box_iou
  kIoU,
  kGIoU,
  kDIoU,
  kCIoU,
  // torchvision.ops generalized_/distance_/complete_box_iou_loss, per pair (before reduction)
  kGIoULoss,
  kDIoULoss,
  kCIoULoss,
  // mmdet/mmcv bbox_overlaps modes: +offset on widths and heights, union clamped below by eps
  kMmIoU,
  kMmIoF,
  kMmGIoU,
};

template <class S>
struct MetricParams {
  S eps;
  S offset;  // mmdet/mmcv legacy +1 (0 or 1); only the kMm* metrics use it
};

constexpr bool metric_is_mm(BoxMetric m) {
  return m == BoxMetric::kMmIoU || m == BoxMetric::kMmIoF || m == BoxMetric::kMmGIoU;
}
constexpr bool metric_needs_center(BoxMetric m) {
  return m == BoxMetric::kDIoU || m == BoxMetric::kCIoU || m == BoxMetric::kDIoULoss || m == BoxMetric::kCIoULoss;
}
constexpr bool metric_needs_aspect(BoxMetric m) {
  return m == BoxMetric::kCIoU || m == BoxMetric::kCIoULoss;
}

// Per-box terms, computed once per box (pairwise kernels precompute them for a whole row/column).
template <class V>
struct BoxTerms {
  V x1, y1, x2, y2;
  V area;    // (x2 - x1) * (y2 - y1), + offset on each side for the kMm* metrics
  V cx, cy;  // centre, (x1 + x2) / 2         (DIoU, CIoU)
  V aspect;  // atan((x2 - x1) / (y2 - y1))  (CIoU)
};

// The terms an IoU-type metric reads (corners and area), loaded from where a kernel stored them; the
// centre and aspect, which only DIoU/CIoU read, are zero.
template <class V>
PYDET_HD BoxTerms<V> stored_terms(V x1, V y1, V x2, V y2, V area) {
  BoxTerms<V> t;
  t.x1 = x1;
  t.y1 = y1;
  t.x2 = x2;
  t.y2 = y2;
  t.area = area;
  t.cx = t.cy = t.aspect = V(0);
  return t;
}

template <BoxMetric M, class V, class S>
PYDET_HD BoxTerms<V> box_terms(V x1, V y1, V x2, V y2, const MetricParams<S>& p) {
  BoxTerms<V> t;
  t.x1 = x1;
  t.y1 = y1;
  t.x2 = x2;
  t.y2 = y2;
  if constexpr (metric_is_mm(M)) {
    t.area = (x2 - x1 + p.offset) * (y2 - y1 + p.offset);
  } else {
    t.area = (x2 - x1) * (y2 - y1);
  }
  t.cx = t.cy = t.aspect = V(0);
  if constexpr (metric_needs_center(M)) {
    t.cx = (x1 + x2) / S(2);
    t.cy = (y1 + y2) / S(2);
  }
  if constexpr (metric_needs_aspect(M)) {
    t.aspect = atan_((x2 - x1) / (y2 - y1));
  }
  return t;
}

// torchvision 0.29's box_iou(fmt=...) terms of a box in format fmt: the corners as its _box_inter_union
// computes them (x + w; cx -/+ w / 2, which to_xyxy's 0.5 * w equals exactly) and, for the formats
// that store a size, the area as its box_area(fmt) computes it: w * h, not the corners' difference.
template <BoxMetric M, class V, class S>
PYDET_HD BoxTerms<V> box_terms(BoxFormat fmt, const Box4<V>& q, const MetricParams<S>& p) {
  const Box4<V> c = to_xyxy(fmt, q);
  BoxTerms<V> t = box_terms<M>(c.a, c.b, c.c, c.d, p);
  if (fmt != BoxFormat::kXYXY) {
    // box_metric's plain min/max rely on a NaN corner making its box's area NaN, which w * h alone
    // would not do for a NaN position or an x + w of inf - inf: their sum carries the NaN.
    const scalar_of_t<V> x1 = value_of(c.a), y1 = value_of(c.b), x2 = value_of(c.c), y2 = value_of(c.d);
    const bool nan_corner = x1 != x1 || y1 != y1 || x2 != x2 || y2 != y2;
    t.area = nan_corner ? V(x1 + y1 + x2 + y2) : box_area_of_size(q);
  }
  return t;
}

// Min/max of box coordinates. These need not propagate NaN themselves: a NaN coordinate makes its
// box's area NaN, and every metric below divides by a union that contains both areas (iof, whose
// denominator is one area, uses the NaN-propagating maximum/minimum instead). Plain min/max compile
// to one vminps/vmaxps; torch.maximum's NaN semantics cost four instructions. Dual numbers keep
// PyTorch's tie rule (the gradient is split).
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S coord_max(S a, S b) {
  return a > b ? a : b;
}
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S coord_min(S a, S b) {
  return a < b ? a : b;
}
template <class S, int K>
PYDET_HD Dual<S, K> coord_max(const Dual<S, K>& a, const Dual<S, K>& b) {
  return maximum(a, b);
}
template <class S, int K>
PYDET_HD Dual<S, K> coord_min(const Dual<S, K>& a, const Dual<S, K>& b) {
  return minimum(a, b);
}

// 4 / pi^2 as torchvision writes it (a Python double, rounded to the tensor dtype when multiplied).
constexpr double kCIoUFactor = 4.0 / (3.14159265358979323846 * 3.14159265358979323846);

template <BoxMetric M, class V, class S>
PYDET_HD V box_metric(const BoxTerms<V>& a, const BoxTerms<V>& b, const MetricParams<S>& p) {
  if constexpr (M == BoxMetric::kIoU || M == BoxMetric::kGIoU || M == BoxMetric::kDIoU || M == BoxMetric::kCIoU) {
    // torchvision _box_inter_union: wh = (rb - lt).clamp(min=0); union = area1 + area2 - inter.
    // 0/0 (two degenerate boxes) is NaN, exactly as in torchvision.
    const V w = clamp_min(coord_min(a.x2, b.x2) - coord_max(a.x1, b.x1), S(0));
    const V h = clamp_min(coord_min(a.y2, b.y2) - coord_max(a.y1, b.y1), S(0));
    const V inter = w * h;
    const V uni = a.area + b.area - inter;
    const V iou = inter / uni;
    if constexpr (M == BoxMetric::kIoU) {
      return iou;
    } else {
      const V wc = clamp_min(coord_max(a.x2, b.x2) - coord_min(a.x1, b.x1), S(0));
      const V hc = clamp_min(coord_max(a.y2, b.y2) - coord_min(a.y1, b.y1), S(0));
      if constexpr (M == BoxMetric::kGIoU) {
        const V area_c = wc * hc;
        return iou - (area_c - uni) / area_c;
      } else {
        const V diag = wc * wc + hc * hc + p.eps;
        const V dx = a.cx - b.cx;
        const V dy = a.cy - b.cy;
        const V diou = iou - (dx * dx + dy * dy) / diag;
        if constexpr (M == BoxMetric::kDIoU) {
          return diou;
        } else {
          const V da = a.aspect - b.aspect;
          const V v = S(kCIoUFactor) * (da * da);
          const V alpha = detach(v / (S(1) - iou + v + p.eps));
          return diou - alpha * v;
        }
      }
    }
  } else if constexpr (M == BoxMetric::kGIoULoss || M == BoxMetric::kDIoULoss || M == BoxMetric::kCIoULoss) {
    // torchvision _loss_inter_union: the intersection is set only where it is strictly positive.
    const V xk1 = coord_max(a.x1, b.x1);
    const V yk1 = coord_max(a.y1, b.y1);
    const V xk2 = coord_min(a.x2, b.x2);
    const V yk2 = coord_min(a.y2, b.y2);
    const V inter = where((yk2 > yk1) & (xk2 > xk1), (xk2 - xk1) * (yk2 - yk1), V(0));
    const V uni = a.area + b.area - inter;
    const V xc1 = coord_min(a.x1, b.x1);
    const V yc1 = coord_min(a.y1, b.y1);
    const V xc2 = coord_max(a.x2, b.x2);
    const V yc2 = coord_max(a.y2, b.y2);
    if constexpr (M == BoxMetric::kGIoULoss) {
      const V iou = inter / (uni + p.eps);
      const V area_c = (xc2 - xc1) * (yc2 - yc1);
      return S(1) - (iou - (area_c - uni) / (area_c + p.eps));
    } else {
      // torchvision's complete_box_iou_loss calls _diou_iou_loss without its eps: the DIoU part
      // always uses 1e-7 and `eps` only enters alpha. Reproduced for drop-in numerics.
      const S diou_eps = M == BoxMetric::kCIoULoss ? S(1e-7) : p.eps;
      const V iou = inter / (uni + diou_eps);
      const V wc = xc2 - xc1;
      const V hc = yc2 - yc1;
      const V diag = wc * wc + hc * hc + diou_eps;
      const V dx = a.cx - b.cx;
      const V dy = a.cy - b.cy;
      const V diou_loss = S(1) - iou + (dx * dx + dy * dy) / diag;
      if constexpr (M == BoxMetric::kDIoULoss) {
        return diou_loss;
      } else {
        const V da = b.aspect - a.aspect;
        const V v = S(kCIoUFactor) * (da * da);
        const V alpha = detach(v / (S(1) - iou + v + p.eps));
        return diou_loss + alpha * v;
      }
    }
  } else {
    // mmdet bbox_overlaps: overlap = clamp(rb - lt (+offset), 0); union clamped below by eps.
    // For iof the union is boxes1's area alone, so boxes2's NaN must propagate through the overlap.
    V w, h;
    if constexpr (M == BoxMetric::kMmIoF) {
      w = clamp_min(minimum(a.x2, b.x2) - maximum(a.x1, b.x1) + p.offset, S(0));
      h = clamp_min(minimum(a.y2, b.y2) - maximum(a.y1, b.y1) + p.offset, S(0));
    } else {
      w = clamp_min(coord_min(a.x2, b.x2) - coord_max(a.x1, b.x1) + p.offset, S(0));
      h = clamp_min(coord_min(a.y2, b.y2) - coord_max(a.y1, b.y1) + p.offset, S(0));
    }
    const V overlap = w * h;
    V uni;
    if constexpr (M == BoxMetric::kMmIoF) {
      uni = a.area;
    } else {
      uni = a.area + b.area - overlap;
    }
    uni = maximum(uni, V(p.eps));
    const V ious = overlap / uni;
    if constexpr (M != BoxMetric::kMmGIoU) {
      return ious;
    } else {
      const V ew = clamp_min(coord_max(a.x2, b.x2) - coord_min(a.x1, b.x1) + p.offset, S(0));
      const V eh = clamp_min(coord_max(a.y2, b.y2) - coord_min(a.y1, b.y1) + p.offset, S(0));
      const V enclose = maximum(ew * eh, V(p.eps));
      return ious - (enclose - uni) / enclose;
    }
  }
}

}  // namespace pydet
