// Deformable convolution's sampling, written once for the CPU and CUDA kernels, forward and backward.
//
// It is torchvision's deform_conv2d (csrc/ops/cpu/deform_conv2d_kernel.cpp) operation by operation:
// kernel tap (i, j) of output pixel (oy, ox) samples the input at
//   y = (oy sh - ph + i dh) + offset[2 (i KW + j)],  x = (ox sw - pw + j dw) + offset[2 (i KW + j) + 1]
// bilinearly, corners outside the map reading 0, and the column value is mask * (w1 v1 + w2 v2 +
// w3 v3 + w4 v4) with torchvision's weights, in its order: with fused multiply-add disabled the
// columns are torchvision's bits. The taps do not depend on the channel, so the kernels compute one
// Sample per (pixel, offset group, tap) and apply it to every channel of the group.
//
// The backward is torchvision's too: the input's gradient scatters mask x weight x column gradient to
// the corners whose weight is not 0 (col2im), the offsets' gradient is the column gradient times the
// mask times the derivative of the bilinear sample along y or x (get_coordinate_weight), and the mask's
// the column gradient times the sample.
//
// Where torchvision's behaviour is undefined (it converts floor(y) to int for any y), pydet defines
// it: a NaN coordinate samples NaN, and an infinite one samples 0 (outside the map) and gives the
// other axis's offset a NaN gradient, as torchvision's code computes on x86-64.
#pragma once

#include "common/dual.h"  // PYDET_HD

#include <cmath>
#include <cstdint>

namespace pydet::deform {

// One sample point of the input plane (height x width).
//   corner[4]: the pixel index (row * width + column) of the corners (y0, x0), (y0, x1), (y1, x0),
//              (y1, x1) with y0 = floor(y), y1 = y0 + 1 (x likewise); -1 where outside the map
//              (the value read is 0).
//   w[4]:      the forward's bilinear weights of those corners (NaN for a NaN coordinate).
//   fy, fx:    y - y0 and x - x0, the derivative's weights.
//   inside:    whether the forward samples at all: -1 < y < height and -1 < x < width (torchvision
//              returns 0 otherwise; its coordinate derivative still reads the corners, which differs
//              only at y = -1 or x = -1 exactly).
template <class T>
struct Sample {
  int64_t corner[4];
  T w[4];
  T fy, fx;
  bool inside;
};

template <class T>
PYDET_HD Sample<T> sample_at(T y, T x, int64_t height, int64_t width) {
  Sample<T> s;
  const T hf = static_cast<T>(height), wf = static_cast<T>(width);
  const T y0 = std::floor(y), x0 = std::floor(x);  // floating: no conversion of out-of-range values
  s.fy = y - y0;
  s.fx = x - x0;
  const bool nan = !(y == y) || !(x == x);
  s.inside = nan || (y > T(-1) && y < hf && x > T(-1) && x < wf);
  const bool row0 = y0 >= T(0) && y0 < hf, row1 = y0 + T(1) >= T(0) && y0 + T(1) < hf;
  const bool col0 = x0 >= T(0) && x0 < wf, col1 = x0 + T(1) >= T(0) && x0 + T(1) < wf;
  const int64_t r0 = row0 || row1 ? static_cast<int64_t>(y0) : 0;
  const int64_t c0 = col0 || col1 ? static_cast<int64_t>(x0) : 0;
  s.corner[0] = row0 && col0 ? r0 * width + c0 : -1;
  s.corner[1] = row0 && col1 ? r0 * width + c0 + 1 : -1;
  s.corner[2] = row1 && col0 ? (r0 + 1) * width + c0 : -1;
  s.corner[3] = row1 && col1 ? (r0 + 1) * width + c0 + 1 : -1;
  const T hy = T(1) - s.fy, hx = T(1) - s.fx;
  s.w[0] = hy * hx;
  s.w[1] = hy * s.fx;
  s.w[2] = s.fy * hx;
  s.w[3] = s.fy * s.fx;
  return s;
}

// A convolution's sizes: input [N, C, H, W], weight [OC, C / groups, KH, KW], output [N, OC, OH, OW];
// offset [N, offset_groups 2 KH KW, OH, OW] and mask [N, offset_groups KH KW, OH, OW].
struct Geometry {
  int64_t batch, channels, height, width;    // input
  int64_t out_channels, kernel_h, kernel_w;  // weight
  int64_t out_h, out_w;                      // output
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups, offset_groups;
  bool use_mask;

  PYDET_HD int64_t taps() const { return kernel_h * kernel_w; }
  PYDET_HD int64_t plane() const { return out_h * out_w; }
  PYDET_HD int64_t pixels() const { return batch * out_h * out_w; }  // output pixels of all images
  PYDET_HD int64_t group_channels() const { return channels / groups; }
  PYDET_HD int64_t offset_group_channels() const { return channels / offset_groups; }
  PYDET_HD int64_t column_width() const { return channels * taps(); }
  // Where channel c of tap k sits in an output pixel's row of columns: [weight group][tap][channel].
  PYDET_HD int64_t column(int64_t c, int64_t k) const {
    const int64_t cw = group_channels(), wg = c / cw;
    return (wg * taps() + k) * cw + (c - wg * cw);
  }
};

// Output pixel q (counted over all images): its image b, index p in the image's plane, row and column.
struct Pixel {
  int64_t b, p, oy, ox;
};
PYDET_HD Pixel pixel_at(const Geometry& g, int64_t q) {
  const int64_t b = q / g.plane(), p = q - b * g.plane();
  return Pixel{b, p, p / g.out_w, p % g.out_w};
}

// Tap k of offset group o at a pixel: its offsets' index (dy there, dx one plane further) and its mask's.
PYDET_HD int64_t offset_at(const Geometry& g, const Pixel& px, int64_t o, int64_t k) {
  return ((px.b * g.offset_groups + o) * 2 * g.taps() + 2 * k) * g.plane() + px.p;
}
PYDET_HD int64_t mask_at(const Geometry& g, const Pixel& px, int64_t o, int64_t k) {
  return ((px.b * g.offset_groups + o) * g.taps() + k) * g.plane() + px.p;
}

// A tap's sample and its mask value (1 without a mask).
template <class T>
struct TapSample {
  Sample<T> s;
  T mask;
};

template <class T>
PYDET_HD TapSample<T> tap_at(const Geometry& g, const T* offset, const T* mask, const Pixel& px, int64_t o, int64_t k) {
  const int64_t i = k / g.kernel_w, j = k - i * g.kernel_w, at = offset_at(g, px, o, k);
  const T y = static_cast<T>(px.oy * g.stride_h - g.pad_h + i * g.dilation_h) + offset[at];
  const T x = static_cast<T>(px.ox * g.stride_w - g.pad_w + j * g.dilation_w) + offset[at + g.plane()];
  return {sample_at(y, x, g.height, g.width), g.use_mask ? mask[mask_at(g, px, o, k)] : T(1)};
}

// The bilinear sample of corner values v[4] (0 where outside), in torchvision's order.
template <class T, class V>
PYDET_HD V interpolate(const Sample<T>& s, V v0, V v1, V v2, V v3) {
  return s.w[0] * v0 + s.w[1] * v1 + s.w[2] * v2 + s.w[3] * v3;
}

// d sample / d y and d sample / d x (torchvision's get_coordinate_weight).
template <class T, class V>
PYDET_HD V d_dy(const Sample<T>& s, V v0, V v1, V v2, V v3) {
  return s.fx * (v3 - v1) + (T(1) - s.fx) * (v2 - v0);
}
template <class T, class V>
PYDET_HD V d_dx(const Sample<T>& s, V v0, V v1, V v2, V v3) {
  return s.fy * (v3 - v2) + (T(1) - s.fy) * (v1 - v0);
}

}  // namespace pydet::deform
