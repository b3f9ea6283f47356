// ROIAlignRotated's sampling (detectron2's layers/csrc/ROIAlignRotated), written once for the CPU and
// CUDA kernels, forward and backward: the same RoI geometry, sample points, rotation and bilinear
// weights, in the same types and order (the bilinear taps are roi_align's: common/roi_align_math.h).
//
// An RoI row is (batch index, cx, cy, w, h, angle in degrees, counter-clockwise). Corners are continuous
// (the centre is shifted by -0.5 pixel, as roi_align's aligned=True); bins are laid out in the RoI's
// own frame, from -h/2 and -w/2, and every sample is rotated about the centre. Rotation couples the
// axes, so each sample has its own four taps (no per-axis tables as in roi_align).
//
// Where detectron2's behaviour is undefined or unbounded, pydet defines it (README, "Differences"): a
// sample outside [-1, size] on either axis is skipped (detectron2 adds 0 x pixel (0, 0)); an RoI whose
// scaled centre, size or angle is not finite gives NaN bins and no gradient; adaptive grids are capped
// at kMaxRotatedGrid samples per bin and axis (detectron2 visits its whole grid: an RoI of 10^9 pixels
// would not finish).
#pragma once

#include "common/roi_align_math.h"  // Tap, tap_at, weights, interpolate, share, compare_t, is_finite

#include <cmath>
#include <cstdint>

namespace pydet::roi {

inline constexpr int64_t kMaxRotatedGrid = 1024;

template <class T>
struct RotatedGrid {
  T center_h, center_w, start_h, start_w, bin_h, bin_w, cos_theta, sin_theta;
  int64_t grid_h, grid_w;
  T count;      // the forward's divisor: max(grid_h * grid_w, 1)
  bool finite;  // false: the RoI's bins are NaN
  bool sized;   // false: a negative scaled width or height (the kernels reject it)
};

template <class T>
PYDET_HD int64_t rotated_grid_size(T size, int64_t pooled, int64_t sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  const double grid = std::ceil(static_cast<double>(static_cast<compare_t<T>>(size / static_cast<T>(pooled))));
  return grid >= double(kMaxRotatedGrid) ? kMaxRotatedGrid : grid > 0 ? static_cast<int64_t>(grid) : 0;
}

// rois row: (batch index, cx, cy, w, h, angle in degrees).
template <class T>
PYDET_HD RotatedGrid<T> rotated_grid(const T* roi, T spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                     int64_t sampling_ratio) {
  RotatedGrid<T> r;
  r.center_w = roi[1] * spatial_scale - static_cast<T>(0.5);
  r.center_h = roi[2] * spatial_scale - static_cast<T>(0.5);
  const T width = roi[3] * spatial_scale, height = roi[4] * spatial_scale;
  const T theta = static_cast<T>(static_cast<double>(roi[5]) * M_PI / 180.0);  // detectron2: in double, then T
  r.cos_theta = static_cast<T>(std::cos(static_cast<compare_t<T>>(theta)));
  r.sin_theta = static_cast<T>(std::sin(static_cast<compare_t<T>>(theta)));
  r.bin_h = height / static_cast<T>(pooled_h);
  r.bin_w = width / static_cast<T>(pooled_w);
  r.start_h = static_cast<T>(-static_cast<double>(height) / 2.0);
  r.start_w = static_cast<T>(-static_cast<double>(width) / 2.0);
  r.finite =
      is_finite(r.center_w) && is_finite(r.center_h) && is_finite(width) && is_finite(height) && is_finite(theta);
  r.sized = !(static_cast<compare_t<T>>(width) < 0) && !(static_cast<compare_t<T>>(height) < 0);
  r.grid_h = r.finite ? rotated_grid_size(height, pooled_h, sampling_ratio) : 0;
  r.grid_w = r.finite ? rotated_grid_size(width, pooled_w, sampling_ratio) : 0;
  const int64_t samples = r.grid_h * r.grid_w;
  r.count = static_cast<T>(samples > 1 ? samples : 1);
  return r;
}

// Sample (iy, ix) of bin (ph, pw), rotated about the centre: (y, x) in feature-map coordinates.
template <class T>
struct Point {
  T y, x;
};

template <class T>
PYDET_HD Point<T> rotated_sample(const RotatedGrid<T>& r, int64_t ph, int64_t pw, int64_t iy, int64_t ix) {
  const T yy = r.start_h + static_cast<T>(ph) * r.bin_h +
               static_cast<T>(static_cast<float>(iy) + .5f) * r.bin_h / static_cast<T>(r.grid_h);
  const T xx = r.start_w + static_cast<T>(pw) * r.bin_w +
               static_cast<T>(static_cast<float>(ix) + .5f) * r.bin_w / static_cast<T>(r.grid_w);
  return {yy * r.cos_theta - xx * r.sin_theta + r.center_h, yy * r.sin_theta + xx * r.cos_theta + r.center_w};
}

// Whether a sample is inside [-1, height] x [-1, width] (detectron2 weights the others by 0).
template <class T>
PYDET_HD bool sample_inside(const Point<T>& p, int64_t height, int64_t width) {
  using C = compare_t<T>;
  const C y = static_cast<C>(p.y), x = static_cast<C>(p.x);
  return y >= C(-1) && y <= static_cast<C>(height) && x >= C(-1) && x <= static_cast<C>(width) && height > 0 &&
         width > 0;
}

}  // namespace pydet::roi
