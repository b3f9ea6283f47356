// Pieces of the NMS family shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common/box_math.h"

namespace pydet {

// The IoU threshold as a value of the compute type T such that, for every T value iou,
//   iou > threshold_below<T>(t)   <=>   double(iou) > t.
// torchvision compares a float IoU with a double threshold; comparing in T with the largest T not
// above t gives the same decisions without mixed-precision arithmetic in the kernels (and the
// same on every device).
template <class T>
inline T threshold_below(double t) {
  T v = static_cast<T>(t);
  if (static_cast<double>(v) > t) v = std::nextafter(v, -std::numeric_limits<T>::infinity());
  return v;
}

// The bound lo such that, for every T value v, v >= lo <=> v > t: the next T above t, NaN when t is
// +inf (v >= NaN is never true). Score scans test one comparison against it.
template <class T>
inline T bound_above(T t) {
  return t == std::numeric_limits<T>::infinity() ? std::numeric_limits<T>::quiet_NaN()
                                                 : std::nextafter(t, std::numeric_limits<T>::infinity());
}

// A box that can suppress another: finite, positive width and height. Any other box has IoU 0 or
// NaN with everything (zero intersection, or an infinite/NaN union), so it never suppresses and is
// never suppressed; NMS keeps it whenever its score is not NaN.
template <class T>
PYDET_HD bool can_suppress(T x1, T y1, T x2, T y2) {
  // x - x == 0 exactly when x is finite (inf - inf and NaN - NaN are NaN).
  return (x2 - x1 > T(0)) & (y2 - y1 > T(0)) & (x1 - x1 == T(0)) & (y1 - y1 == T(0)) & (x2 - x2 == T(0)) &
         (y2 - y2 == T(0));
}

// The IoU NMS uses: exactly torchvision's box_iou formula (box_math.h).
template <class T>
PYDET_HD T nms_iou(const BoxTerms<T>& a, const BoxTerms<T>& b) {
  return box_metric<BoxMetric::kIoU>(a, b, MetricParams<T>{T(0), T(0)});
}

template <class T>
PYDET_HD BoxTerms<T> nms_terms(T x1, T y1, T x2, T y2) {
  return box_terms<BoxMetric::kIoU>(x1, y1, x2, y2, MetricParams<T>{T(0), T(0)});
}

// soft_nms decay rules (mmcv): naive drops boxes with IoU >= threshold, linear scales them by
// (1 - IoU), gaussian scales every box by exp(-IoU^2 / sigma).
enum class SoftNmsMethod : int8_t { kNaive = 0, kLinear = 1, kGaussian = 2 };

}  // namespace pydet
