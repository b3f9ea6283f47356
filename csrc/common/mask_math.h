// Mask pasting, written once for the CPU and CUDA kernels: the two conventions of
// paste_masks_in_image, as one separable bilinear resampling (each output row and column has one tap
// pair; a pixel combines its row's and column's).
//
//  - torchvision's (models/detection/roi_heads.py): the mask, padded by `padding` zeros, is resized
//    bilinearly (F.interpolate, align_corners=False) to its box, which is scaled about its centre by
//    (M + 2 padding) / M and truncated to whole pixels (end - start + 1 wide); the box's pixels inside
//    the image take the resized values, the rest 0. Float results.
//  - detectron2's (layers/mask_ops.py): pixel (x, y) of the region [floor(x0) - 1, ceil(x1) + 1) x
//    [floor(y0) - 1, ceil(y1) + 1), clipped to the image, samples the mask bilinearly
//    (F.grid_sample, align_corners=False, zero padding) at ((x + 0.5 - x0) / (x1 - x0)) of its width
//    (y likewise); the value is thresholded (>= threshold) or, for a negative threshold, scaled to
//    0..255. Boolean or uint8 results.
//
// The operations are the libraries' (ATen's upsample and grid-sample formulas, in their types) without
// fused multiply-add: ATen's own results depend on the CPU capability it dispatches to (its AVX2 and
// AVX-512 builds contract multiply-adds), so pydet matches them within float rounding, not bit for bit.
// Defined where the libraries are not: a box with a non-finite coordinate pastes nothing (both convert
// NaN to an integer), whole-pixel coordinates saturate at +-kMaxPixel, and a box beyond the image's
// right or bottom edge pastes nothing (torchvision's slicing raises a shape error there).
#pragma once

#include "common/dual.h"  // PYDET_HD

#include <cmath>
#include <cstdint>

namespace pydet::masks {

inline constexpr double kMaxPixel = 1099511627776.0;  // 2^40: beyond any image, far from int64 overflow

// A whole-pixel value saturated to +-kMaxPixel; NaN gives 0 (callers skip non-finite boxes, but the
// conversion itself must stay defined).
PYDET_HD int64_t whole_pixels(double v) {
  return v > kMaxPixel ? int64_t(kMaxPixel) : v < -kMaxPixel ? -int64_t(kMaxPixel) : v == v ? int64_t(v) : 0;
}

template <class B>
PYDET_HD bool finite_box(const B* box) {
  bool finite = true;
  for (int i = 0; i < 4; ++i) finite = finite && box[i] - box[i] == B(0);
  return finite;
}

// Pixels [begin, end) of one axis of the output.
struct Span {
  int64_t begin, end;
};

PYDET_HD Span clipped(int64_t begin, int64_t end, int64_t size) {
  const int64_t b = begin > 0 ? begin : 0, e = end < size ? end : size;
  return {b < e ? b : 0, b < e ? e : 0};
}

// ---- torchvision -----------------------------------------------------------------------------------
// One axis of a box scaled about its centre (expand_boxes, in the boxes' type) and truncated:
// whole-pixel first and last (inclusive) coordinates.
struct PixelBox {
  int64_t first, last;
};

template <class B>
PYDET_HD PixelBox expanded_axis(B first, B last, B scale) {
  const B half = (last - first) * B(0.5) * scale;
  const B centre = (last + first) * B(0.5);
  return {whole_pixels(static_cast<double>(centre - half)), whole_pixels(static_cast<double>(centre + half))};
}

// Output index i of a resize from `in` to `out` pixels: two source indices and weights (ATen's
// compute_source_index_and_lambda; T is the float type it computes in).
template <class T>
struct ResizeTap {
  int64_t low, high;
  T l, h;  // the weights of high and low
};

template <class T>
PYDET_HD ResizeTap<T> resize_tap(int64_t in, int64_t out, int64_t i) {
  if (in == out) return {i, i, T(0), T(1)};
  const T ratio = static_cast<T>(in) / static_cast<T>(out);
  T src = ratio * (static_cast<T>(i) + T(0.5)) - T(0.5);
  if (src < T(0)) src = T(0);
  ResizeTap<T> t;
  const auto fl = static_cast<int64_t>(floorf(static_cast<float>(src)));  // ATen's floorf, also for double
  t.low = fl < in - 1 ? fl : in - 1;
  const T l = src - static_cast<T>(t.low);
  t.l = l < T(0) ? T(0) : l > T(1) ? T(1) : l;
  t.high = t.low + (t.low < in - 1 ? 1 : 0);
  t.h = T(1) - t.l;
  return t;
}

// The resized value from the four source pixels (row low: v00 v01; row high: v10 v11).
template <class T>
PYDET_HD T resized(const ResizeTap<T>& y, const ResizeTap<T>& x, T v00, T v01, T v10, T v11) {
  return (v00 * x.h + v01 * x.l) * y.h + (v10 * x.h + v11 * x.l) * y.l;
}

// ---- detectron2 ------------------------------------------------------------------------------------
// The region detectron2 samples for a box axis [first, last], clipped to [0, size).
template <class B>
PYDET_HD Span sampled_region(B first, B last, int64_t size) {
  return clipped(whole_pixels(std::floor(static_cast<double>(first)) - 1.0),
                 whole_pixels(std::ceil(static_cast<double>(last)) + 1.0), size);
}

// Pixel p of one axis of a box spanning `size` mask pixels: grid_sample's two taps and weights. The
// taps index the mask with a one-pixel zero border (0 .. size + 1): a tap outside the mask, which
// grid_sample reads as 0 (zero padding), lands on the border, so sampling needs no branches.
template <class T>
struct GridTap {
  int64_t low, high;  // bordered indices of floor(source) and floor(source) + 1
  T frac, rest;       // the weights of high and low
};

// B: the boxes' type (the grid is computed in it), T: the mask's.
template <class B, class T>
PYDET_HD GridTap<T> grid_tap(int64_t pixel, B first, B last, int64_t size) {
  const B g = (static_cast<B>(static_cast<float>(pixel) + 0.5f) - first) / (last - first) * B(2) - B(1);
  const T src = (static_cast<T>(g) + T(1)) * (static_cast<T>(size) / T(2)) - T(0.5);
  const T fl = std::floor(src);
  GridTap<T> t;
  t.frac = src - fl;
  t.rest = T(1) - t.frac;
  const T extent = static_cast<T>(size);
  auto bordered = [extent](T v) {  // [-1, size] -> [0, size + 1]; NaN -> the border
    return static_cast<int64_t>(v >= T(-1) ? (v <= extent ? v : extent) : T(-1)) + 1;
  };
  t.low = bordered(fl);
  t.high = bordered(fl + T(1));
  return t;
}

// The sampled value from the zero-bordered mask's rows y.low and y.high, in grid_sample's order:
// nw + ne + sw + se.
template <class T>
PYDET_HD T sampled(const GridTap<T>& y, const GridTap<T>& x, const T* row_low, const T* row_high) {
  return row_low[x.low] * (y.rest * x.rest) + row_low[x.high] * (y.rest * x.frac) +
         row_high[x.low] * (y.frac * x.rest) + row_high[x.high] * (y.frac * x.frac);
}

// detectron2's result: value >= threshold (compared in T, as a tensor with a Python float), or for a
// negative threshold value * 255 as uint8 (saturated; NaN gives 0).
template <class T>
PYDET_HD uint8_t thresholded(T value, double threshold) {
  if (threshold >= 0) return value >= static_cast<T>(threshold) ? 1 : 0;
  const T scaled = value * T(255);
  return scaled >= T(255) ? 255 : scaled > T(0) ? static_cast<uint8_t>(scaled) : 0;
}

}  // namespace pydet::masks
