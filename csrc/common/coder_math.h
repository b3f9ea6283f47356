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

template <class S>
struct CoderParams {
  S weights[4];  // torchvision: (wx, wy, ww, wh); mmdet: target_stds; ssd: (sxy, sxy, swh, swh)
  S means[4];    // mmdet target_means (zero otherwise)
  S wh_min, wh_max;   // decode: clamp of the log-size deltas (-inf / +inf when unbounded)
  S center_clamp;     // decode, mmdet add_ctr_clamp: |centre shift| <= center_clamp (inf: off)
  // decode (torchvision, mmdet): x into [clip_lo, max_w], y into [clip_lo, max_h], as
  // clip_boxes_to_image with clip_lo = 0; without max_shape (-inf, +inf, +inf), where the clamp is the
  // identity (decode_box<C, kClip = false> skips it).
  S clip_lo, max_h, max_w;

  bool clips() const {
    return !(clip_lo == -std::numeric_limits<S>::infinity() && max_h == std::numeric_limits<S>::infinity() &&
             max_w == std::numeric_limits<S>::infinity());
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

// Deltas of target box `t` relative to reference box `r` (both xyxy, or both cxcywh for kSsd).
template <Coding C, class S>
PYDET_HD Box4<S> encode_box(const Box4<S>& r, const Box4<S>& t, const CoderParams<S>& p) {
  if constexpr (C == Coding::kTorchvision) {
    const S ew = r.c - r.a, eh = r.d - r.b;
    const S ex = r.a + S(0.5) * ew, ey = r.b + S(0.5) * eh;
    const S gw = t.c - t.a, gh = t.d - t.b;
    const S gx = t.a + S(0.5) * gw, gy = t.b + S(0.5) * gh;
    return {p.weights[0] * (gx - ex) / ew, p.weights[1] * (gy - ey) / eh, p.weights[2] * log_(gw / ew),
            p.weights[3] * log_(gh / eh)};
  } else if constexpr (C == Coding::kMmdet) {
    const S px = (r.a + r.c) * S(0.5), py = (r.b + r.d) * S(0.5);
    const S pw = r.c - r.a, ph = r.d - r.b;
    const S gx = (t.a + t.c) * S(0.5), gy = (t.b + t.d) * S(0.5);
    const S gw = t.c - t.a, gh = t.d - t.b;
    return {((gx - px) / pw - p.means[0]) / p.weights[0], ((gy - py) / ph - p.means[1]) / p.weights[1],
            (log_(gw / pw) - p.means[2]) / p.weights[2], (log_(gh / ph) - p.means[3]) / p.weights[3]};
  } else {
    return {((t.a - r.a) / r.c) / p.weights[0], ((t.b - r.b) / r.d) / p.weights[1], log_(t.c / r.c) / p.weights[2],
            log_(t.d / r.d) / p.weights[3]};
  }
}

// Box predicted by deltas `d` relative to reference box `r`. V is S, or a dual number seeded on the
// deltas for the backward kernel. kClip = false skips the clip to max_shape, an identity when there
// is none (the clip bounds are then infinite): a vectorised CPU loop saves its 8 min/max.
template <Coding C, bool kClip = true, class S, class V>
PYDET_HD Box4<V> decode_box(const Box4<S>& r, const Box4<V>& d, const CoderParams<S>& p) {
  if constexpr (C == Coding::kTorchvision) {
    const S widths = r.c - r.a, heights = r.d - r.b;
    const S cx = r.a + S(0.5) * widths, cy = r.b + S(0.5) * heights;
    const V dx = d.a / p.weights[0], dy = d.b / p.weights[1];
    const V dw = clamp(d.c / p.weights[2], p.wh_min, p.wh_max), dh = clamp(d.d / p.weights[3], p.wh_min, p.wh_max);
    const V pcx = dx * widths + cx, pcy = dy * heights + cy;
    const V half_w = S(0.5) * (exp_(dw) * widths), half_h = S(0.5) * (exp_(dh) * heights);
    const Box4<V> q{pcx - half_w, pcy - half_h, pcx + half_w, pcy + half_h};
    return kClip ? clip_box(q, p.max_h, p.max_w, p.clip_lo) : q;
  } else if constexpr (C == Coding::kMmdet) {
    const V dx = d.a * p.weights[0] + p.means[0], dy = d.b * p.weights[1] + p.means[1];
    const V dw = clamp(d.c * p.weights[2] + p.means[2], p.wh_min, p.wh_max);
    const V dh = clamp(d.d * p.weights[3] + p.means[3], p.wh_min, p.wh_max);
    const S px = (r.a + r.c) * S(0.5), py = (r.b + r.d) * S(0.5);
    const S pw = r.c - r.a, ph = r.d - r.b;
    const V gx = px + clamp(pw * dx, -p.center_clamp, p.center_clamp);
    const V gy = py + clamp(ph * dy, -p.center_clamp, p.center_clamp);
    const V half_w = (pw * exp_(dw)) * S(0.5), half_h = (ph * exp_(dh)) * S(0.5);
    const Box4<V> q{gx - half_w, gy - half_h, gx + half_w, gy + half_h};
    return kClip ? clip_box(q, p.max_h, p.max_w, p.clip_lo) : q;
  } else {
    return {(d.a * p.weights[0]) * r.c + r.a, (d.b * p.weights[1]) * r.d + r.b, exp_(d.c * p.weights[2]) * r.c,
            exp_(d.d * p.weights[3]) * r.d};
  }
}

}  // namespace pydet
