// roi_pool's and ps_roi_pool's bins, written once for the CPU and CUDA kernels, forward and backward.
//
// It is torchvision's roi_pool and ps_roi_pool (csrc/ops/cpu/{roi_pool,ps_roi_pool}_kernel.cpp)
// operation by operation: corners scaled and rounded to whole pixels (half away from zero), the RoI
// divided into PH x PW bins with floor/ceil pixel bounds, each bin clipped to the image. The two
// differ in two legacy details, kept: roi_pool sizes an RoI end - start + 1 pixels (ps_roi_pool:
// end - start), and ps_roi_pool's forward clips bins to [0, size - 1], leaving out the last row and
// column (roi_pool: [0, size]).
//
// Where torchvision's behaviour is undefined, pydet defines it (README, "Differences"): rounded corners
// are saturated to +-kMaxCorner (torchvision's int overflows), and an RoI whose scaled corners are not
// finite is marked non-finite: its bins are NaN and it adds nothing to the input's gradient.
#pragma once

#include "common/roi_align_math.h"  // compare_t, is_finite

#include <cmath>
#include <cstdint>

namespace pydet::roi {

inline constexpr double kMaxCorner = 2147483647.0;

// One axis of an RoI's pixel bins.
template <class T>
struct PoolAxis {
  int64_t start;  // the rounded first edge
  T bin;          // bin size in pixels
};

template <class T>
struct PoolGrid {
  PoolAxis<T> y, x;
  bool finite;  // false: the RoI's bins are NaN
};

// A whole-pixel value saturated to +-kMaxCorner (NaN: 0; callers mark those RoIs non-finite first).
PYDET_HD int64_t saturated(double v) {
  return v > kMaxCorner ? int64_t(kMaxCorner) : v < -kMaxCorner ? -int64_t(kMaxCorner) : v == v ? int64_t(v) : 0;
}

// max_pool: roi_pool (an RoI is end - start + 1 pixels), else ps_roi_pool (end - start).
template <class T>
PYDET_HD PoolAxis<T> pool_axis(T first, T last, T spatial_scale, int64_t pooled, bool max_pool) {
  const int64_t extra = max_pool ? 1 : 0;
  const int64_t start = saturated(std::round(static_cast<double>(static_cast<compare_t<T>>(first * spatial_scale))));
  const int64_t end = saturated(std::round(static_cast<double>(static_cast<compare_t<T>>(last * spatial_scale))));
  const int64_t size = end - start + extra > 1 ? end - start + extra : 1;  // malformed RoIs are one pixel
  return {start, static_cast<T>(size) / static_cast<T>(pooled)};
}

// rois row: (batch index, x1, y1, x2, y2) in image coordinates.
template <class T>
PYDET_HD PoolGrid<T> pool_grid(const T* roi, T spatial_scale, int64_t pooled_h, int64_t pooled_w, bool max_pool) {
  PoolGrid<T> r;
  r.finite = is_finite(roi[1] * spatial_scale) && is_finite(roi[2] * spatial_scale) &&
             is_finite(roi[3] * spatial_scale) && is_finite(roi[4] * spatial_scale);
  r.x = pool_axis(roi[1], roi[3], spatial_scale, pooled_w, max_pool);
  r.y = pool_axis(roi[2], roi[4], spatial_scale, pooled_h, max_pool);
  return r;
}

// Pixels [begin, end) of one axis of a bin.
struct PixelRange {
  int64_t begin, end;
};

// Bin p's pixels on an axis of `size` pixels, clipped to [0, size] for roi_pool (max_pool) and to
// [0, size - 1] for ps_roi_pool (as torchvision clamps: max with 0 first, then min with the limit).
template <class T>
PYDET_HD PixelRange pool_bin(const PoolAxis<T>& a, int64_t p, int64_t size, bool max_pool) {
  const int64_t limit = max_pool ? size : size - 1;
  using C = compare_t<T>;
  const int64_t lo = saturated(std::floor(static_cast<double>(static_cast<C>(static_cast<T>(p) * a.bin)))) + a.start;
  const int64_t hi = saturated(std::ceil(static_cast<double>(static_cast<C>(static_cast<T>(p + 1) * a.bin)))) + a.start;
  auto clip = [limit](int64_t v) {
    const int64_t at_least_zero = v > 0 ? v : 0;
    return at_least_zero < limit ? at_least_zero : limit;
  };
  return {clip(lo), clip(hi)};
}

// The most negative value roi_pool's running maximum starts from: torchvision's -FLT_MAX in T (so a
// float64 bin whose values are all below it pools to -FLT_MAX with no argmax, as there; -inf in
// float16).
template <class T>
PYDET_HD T max_pool_floor() {
  return static_cast<T>(-3.402823466e+38f);
}

}  // namespace pydet::roi
