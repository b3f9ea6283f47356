// RoIAlign's sampling, written once for the CPU and CUDA kernels, forward and backward.
//
// It is torchvision's roi_align (csrc/ops/cpu/roi_align_kernel.cpp) operation by operation: the same
// RoI geometry, sample coordinates, clamping and bilinear weights, in the same types and order, so
// with fused multiply-add disabled the kernels reproduce torchvision's results bit for bit (float16
// included, whose every intermediate torchvision rounds to float16: T = c10::Half here does too).
//
// Bilinear sampling is separable: a sample's four weights are products of one weight pair per axis
// (w1 = hy * hx, ...), so the kernels tabulate one Tap per (bin, sample) and axis and multiply the
// pairs per sample, as torchvision does, instead of storing four weights and offsets per sample.
//
// Where torchvision's behaviour is undefined, pydet defines it (README, "Differences"):
//  - a sample outside [-1, size] on either axis is skipped; torchvision adds 0 x pixel (0, 0), which
//    only differs when that pixel is inf or NaN. Skipping it bounds the work of huge RoIs: the
//    adaptive grid then has at most about 2 (size + 2) samples per axis inside the image, found by
//    binary search (sample coordinates are monotonic in the sample index);
//  - an RoI whose scaled corners or size are not finite is marked non-finite: its bins are NaN and it
//    adds nothing to the input's gradient (torchvision converts NaN to int: undefined);
//  - adaptive grids are capped at kMaxGrid samples per bin and axis (torchvision's int overflows).
#pragma once

#include "common/dual.h"  // PYDET_HD

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace pydet::roi {

inline constexpr int64_t kMaxGrid = (int64_t(1) << 31) - 1;

// The type torchvision's comparisons happen in: a float16 value converts to float, a float to float.
template <class T>
using compare_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// One axis of an RoI: its bins and their sampling grid.
template <class T>
struct AxisGrid {
  T start;       // the RoI's first edge in feature-map coordinates
  T bin;         // bin size (negative for an inverted RoI with aligned=true)
  int64_t grid;  // samples per bin (<= 0: none)
};

template <class T>
struct RoiGrid {
  AxisGrid<T> y, x;
  T count;      // the divisor of every bin: max(grid_h * grid_w, 1), samples outside the image included
  bool finite;  // false: the RoI's bins are NaN
};

// rois row: (batch index, x1, y1, x2, y2) in image coordinates.
template <class T>
PYDET_HD AxisGrid<T> axis_grid(T first, T last, T spatial_scale, bool aligned, int64_t pooled, int64_t sampling_ratio) {
  const T offset = aligned ? T(0.5) : T(0.0);
  const T start = first * spatial_scale - offset;
  const T end = last * spatial_scale - offset;
  T size = end - start;
  if (!aligned && size < T(1)) size = T(1);  // std::max(size, 1): a NaN size stays NaN
  AxisGrid<T> a{start, size / static_cast<T>(pooled), sampling_ratio};
  if (sampling_ratio <= 0) {
    const double grid = std::ceil(static_cast<double>(static_cast<compare_t<T>>(size / static_cast<T>(pooled))));
    const double cap = static_cast<double>(kMaxGrid);
    a.grid = grid >= cap ? kMaxGrid : grid <= -cap ? -kMaxGrid : grid == grid ? static_cast<int64_t>(grid) : 0;
  }
  return a;
}

template <class T>
PYDET_HD bool is_finite(T v) {
  const compare_t<T> c = static_cast<compare_t<T>>(v);
  return c - c == compare_t<T>(0);  // false for inf and NaN
}

template <class T>
PYDET_HD RoiGrid<T> roi_grid(const T* roi, T spatial_scale, bool aligned, int64_t pooled_h, int64_t pooled_w,
                             int64_t sampling_ratio) {
  RoiGrid<T> r;
  r.x = axis_grid(roi[1], roi[3], spatial_scale, aligned, pooled_w, sampling_ratio);
  r.y = axis_grid(roi[2], roi[4], spatial_scale, aligned, pooled_h, sampling_ratio);
  const int64_t samples = r.y.grid * r.x.grid;
  r.count = static_cast<T>(samples > 1 ? samples : 1);
  r.finite = is_finite(r.x.start) && is_finite(r.y.start) && is_finite(r.x.bin) && is_finite(r.y.bin);
  return r;
}

// Whether an RoI's first column is a batch index: an integer in [0, batch) (torchvision converts it
// to int unchecked).
template <class T>
PYDET_HD bool is_batch_index(T value, int64_t batch) {
  const compare_t<T> v = static_cast<compare_t<T>>(value);
  return v >= compare_t<T>(0) && v < static_cast<compare_t<T>>(batch) && v == std::floor(v);
}

// Sample i of bin p: roi_start + p * bin + (i + .5f) * bin / grid, with torchvision's types.
template <class T>
PYDET_HD T sample_at(const AxisGrid<T>& a, int64_t p, int64_t i) {
  return a.start + static_cast<T>(p) * a.bin +
         static_cast<T>(static_cast<float>(i) + .5f) * a.bin / static_cast<T>(a.grid);
}

struct SampleRange {
  int64_t begin, end;
};

// The samples of bin p inside [-1, extent] (an empty range when extent is 0: there is no pixel).
// Coordinates are monotonic in i (each rounding step is), increasing for bin >= 0 and decreasing
// otherwise, so the range is found by two binary searches over the exact coordinates.
template <class T>
PYDET_HD SampleRange samples_inside(const AxisGrid<T>& a, int64_t p, int64_t extent) {
  if (extent <= 0 || a.grid <= 0) return {0, 0};
  using C = compare_t<T>;
  const C hi = static_cast<C>(extent);
  const bool increasing = !(a.bin < T(0));
  // The first i in [0, grid) for which `past(i)` holds; past must be false then true along i.
  auto first_past = [&](auto past) {
    int64_t lo = 0, n = a.grid;
    while (n > 0) {
      const int64_t half = n / 2;
      if (past(lo + half)) {
        n = half;
      } else {
        lo += half + 1;
        n -= half + 1;
      }
    }
    return lo;
  };
  auto below = [&](int64_t i) { return static_cast<C>(sample_at(a, p, i)) < C(-1); };
  auto above = [&](int64_t i) { return static_cast<C>(sample_at(a, p, i)) > hi; };
  if (increasing) {
    return {first_past([&](int64_t i) { return !below(i); }), first_past(above)};
  }
  return {first_past([&](int64_t i) { return !above(i); }), first_past(below)};
}

// One axis of a bilinear sample: the two pixel indices and their weights (high gets l, low gets h).
template <class T>
struct Tap {
  int64_t low, high;
  T l, h;
};

// torchvision's bilinear_interpolate for a coordinate inside [-1, extent], one axis.
template <class T>
PYDET_HD Tap<T> tap_at(T v, int64_t extent) {
  if (static_cast<compare_t<T>>(v) <= compare_t<T>(0)) v = T(0);
  Tap<T> t;
  t.low = static_cast<int64_t>(static_cast<compare_t<T>>(v));
  if (t.low >= extent - 1) {
    t.high = t.low = extent - 1;
    v = static_cast<T>(t.low);
  } else {
    t.high = t.low + 1;
  }
  t.l = v - static_cast<T>(t.low);
  t.h = static_cast<T>(1. - static_cast<double>(t.l));  // torchvision: `T hy = 1. - ly;`, in double
  return t;
}

// A sample's four bilinear weights: w1 (low y, low x), w2 (low y, high x), w3 (high y, low x), w4.
template <class T>
struct Weights {
  T w1, w2, w3, w4;
};
template <class T>
PYDET_HD Weights<T> weights(const Tap<T>& y, const Tap<T>& x) {
  return {y.h * x.h, y.h * x.l, y.l * x.h, y.l * x.l};
}

// A sample's value from its four pixels, left to right as torchvision adds them. V is T, or a vector
// of T holding one channel per lane (the CPU kernels), each lane computing exactly what T would.
template <class V, class T>
PYDET_HD V interpolate(const Weights<T>& w, V v1, V v2, V v3, V v4) {
  return w.w1 * v1 + w.w2 * v2 + w.w3 * v3 + w.w4 * v4;
}

// One pixel's share of a bin's gradient from one sample: grad * w / count (torchvision's g1 .. g4).
template <class V, class T>
PYDET_HD V share(V grad, T w, T count) {
  return grad * w / count;
}

}  // namespace pydet::roi
