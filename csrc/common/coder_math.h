// Box coding formulas (encode ground truth against reference boxes, decode regression deltas), written
// once for CPU and CUDA, forward and backward (decode runs on dual numbers for its gradient, see
// dual.h). Each convention reproduces its library's eager expression operation by operation, so with
// fused multiply-add disabled the results equal the library's bit for bit, except where exp/log
// enter: pydet's exp_/log_ are within 1 ulp of the exact value, like PyTorch's own (which are not
// the same function on every CPU either).
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/box_math.h"

namespace pydet {

enum class Coding : int8_t {
  // torchvision BoxCoder / detectron2 Box2BoxTransform: centres x1 + 0.5 w; deltas multiplied by the
  // weights (wx, wy, ww, wh) when encoding, divided when decoding; log-size deltas clamped from
  // above only.
  kTorchvision,
  // mmdet DeltaXYWHBBoxCoder: centres (x1 + x2) * 0.5; deltas normalised by (target_means,
  // target_stds); log-size deltas clamped on both sides (from above only with add_ctr_clamp, which
  // also clamps the centre shift in pixels); optional clip to the image.
  kMmdet,
  // SSD (original / NVIDIA / super-gradients): boxes and priors in (cx, cy, w, h); deltas divided by
  // (scale_xy, scale_xy, scale_wh, scale_wh) when encoding, multiplied when decoding.
  kSsd,
};

// Every coding treats x and y alike, each with its own parameters (AxisParams), so its formulas are
// written for one axis (box_math.h's Axis; deltas (dx, dw) or (dy, dh)); the CPU's vectorised loop
// computes the x and y of a run of boxes in alternate lanes.
template <class S>
struct AxisParams {
  S weight_center, weight_size;  // CoderParams::weights[k], weights[k + 2] for axis k
  S mean_center, mean_size;      // means[k], means[k + 2]
  S size_min, size_max, center_clamp;
  S clip_lo, clip_hi;  // clip_hi: max_w for x, max_h for y
};

template <class S>
struct CoderParams {
  S weights[4];      // torchvision: (wx, wy, ww, wh); mmdet: target_stds; ssd: (sxy, sxy, swh, swh)
  S means[4];        // mmdet target_means (zero otherwise)
  S wh_min, wh_max;  // decode: clamp of the log-size deltas (-inf / +inf when unbounded)
  S center_clamp;    // decode, mmdet add_ctr_clamp: |centre shift| <= center_clamp (inf: off)
  // decode (torchvision, mmdet): x into [clip_lo, max_w], y into [clip_lo, max_h], as
  // clip_boxes_to_image with clip_lo = 0; without max_shape (-inf, +inf, +inf), where the clamp is the
  // identity (decode_axis<C, kClip = false> skips it).
  S clip_lo, max_h, max_w;

  bool clips() const {
    return !(clip_lo == -std::numeric_limits<S>::infinity() && max_h == std::numeric_limits<S>::infinity() &&
             max_w == std::numeric_limits<S>::infinity());
  }
  // Axis k: 0 for x, 1 for y.
  PYDET_HD AxisParams<S> axis(int k) const {
    return {weights[k], weights[k + 2], means[k], means[k + 2],          wh_min,
            wh_max,     center_clamp,   clip_lo,  k == 0 ? max_w : max_h};
  }
};

// f(std::integral_constant<Coding, c>{}): the runtime convention as a compile-time one (host side).
template <class F>
void with_coding(Coding c, const F& f) {
  switch (c) {
    case Coding::kTorchvision:
      return f(std::integral_constant<Coding, Coding::kTorchvision>{});
    case Coding::kMmdet:
      return f(std::integral_constant<Coding, Coding::kMmdet>{});
    default:
      return f(std::integral_constant<Coding, Coding::kSsd>{});
  }
}

template <class T>
CoderParams<T> cast_params(const CoderParams<double>& p) {
  CoderParams<T> q;
  for (int k = 0; k < 4; ++k) {
    q.weights[k] = T(p.weights[k]);
    q.means[k] = T(p.means[k]);
  }
  q.wh_min = T(p.wh_min);
  q.wh_max = T(p.wh_max);
  q.center_clamp = T(p.center_clamp);
  q.clip_lo = T(p.clip_lo);
  q.max_h = T(p.max_h);
  q.max_w = T(p.max_w);
  return q;
}

// Deltas (centre, size) of target `t` relative to reference `r` along one axis (both xyxy, or both
// cxcywh for kSsd).
template <Coding C, class S>
PYDET_HD Axis<S> encode_axis(const Axis<S>& r, const Axis<S>& t, const AxisParams<S>& p) {
  if constexpr (C == Coding::kTorchvision) {
    const S ew = r.second - r.first;
    const S ex = r.first + S(0.5) * ew;
    const S gw = t.second - t.first;
    const S gx = t.first + S(0.5) * gw;
    return {p.weight_center * (gx - ex) / ew, p.weight_size * log_(gw / ew)};
  } else if constexpr (C == Coding::kMmdet) {
    const S px = (r.first + r.second) * S(0.5), pw = r.second - r.first;
    const S gx = (t.first + t.second) * S(0.5), gw = t.second - t.first;
    return {((gx - px) / pw - p.mean_center) / p.weight_center, (log_(gw / pw) - p.mean_size) / p.weight_size};
  } else {
    return {((t.first - r.first) / r.second) / p.weight_center, log_(t.second / r.second) / p.weight_size};
  }
}

// The reference axis moved by deltas `d`. V is S, or a dual number seeded on the deltas for the
// backward kernel. kClip = false skips the clip to max_shape, an identity when there is none (the
// clip bounds are then infinite): a vectorised CPU loop saves its min/max.
template <Coding C, bool kClip = true, class S, class V>
PYDET_HD Axis<V> decode_axis(const Axis<S>& r, const Axis<V>& d, const AxisParams<S>& p) {
  if constexpr (C == Coding::kTorchvision) {
    const S widths = r.second - r.first;
    const S cx = r.first + S(0.5) * widths;
    const V dx = d.first / p.weight_center;
    const V dw = clamp(d.second / p.weight_size, p.size_min, p.size_max);
    const V pcx = dx * widths + cx;
    const V half_w = S(0.5) * (exp_(dw) * widths);
    const Axis<V> q{pcx - half_w, pcx + half_w};
    if constexpr (kClip) return clip_axis(q, p.clip_lo, p.clip_hi);
    return q;
  } else if constexpr (C == Coding::kMmdet) {
    const V dx = d.first * p.weight_center + p.mean_center;
    const V dw = clamp(d.second * p.weight_size + p.mean_size, p.size_min, p.size_max);
    const S px = (r.first + r.second) * S(0.5), pw = r.second - r.first;
    const V gx = px + clamp(pw * dx, -p.center_clamp, p.center_clamp);
    const V half_w = (pw * exp_(dw)) * S(0.5);
    const Axis<V> q{gx - half_w, gx + half_w};
    if constexpr (kClip) return clip_axis(q, p.clip_lo, p.clip_hi);
    return q;
  } else {
    return {(d.first * p.weight_center) * r.second + r.first, exp_(d.second * p.weight_size) * r.second};
  }
}

// Whole boxes: both axes (the CUDA kernels, one thread per box).
template <Coding C, class S>
PYDET_HD Box4<S> encode_box(const Box4<S>& r, const Box4<S>& t, const CoderParams<S>& p) {
  return join_axes(encode_axis<C>(x_of(r), x_of(t), p.axis(0)), encode_axis<C>(y_of(r), y_of(t), p.axis(1)));
}
template <Coding C, class S, class V>
PYDET_HD Box4<V> decode_box(const Box4<S>& r, const Box4<V>& d, const CoderParams<S>& p) {
  return join_axes(decode_axis<C>(x_of(r), x_of(d), p.axis(0)), decode_axis<C>(y_of(r), y_of(d), p.axis(1)));
}

// Gradient of decode_axis with respect to the deltas, given the output's upstream gradient `g`: the
// formula run on dual numbers seeded on (d.first, d.second). (Per axis: an output's gradient reaches
// only its own axis' deltas.)
template <Coding C, class S>
PYDET_HD Axis<S> decode_axis_backward(const Axis<S>& r, const Axis<S>& d, const Axis<S>& g, const AxisParams<S>& p) {
  using D = Dual<S, 2>;
  const Axis<D> q = decode_axis<C>(r, Axis<D>{D::variable(d.first, 0), D::variable(d.second, 1)}, p);
  return {g.first * q.first.d[0] + g.second * q.second.d[0], g.first * q.first.d[1] + g.second * q.second.d[1]};
}
template <Coding C, class S>
PYDET_HD Box4<S> decode_box_backward(const Box4<S>& r, const Box4<S>& d, const Box4<S>& g, const CoderParams<S>& p) {
  return join_axes(decode_axis_backward<C>(x_of(r), x_of(d), x_of(g), p.axis(0)),
                   decode_axis_backward<C>(y_of(r), y_of(d), y_of(g), p.axis(1)));
}

}  // namespace pydet
