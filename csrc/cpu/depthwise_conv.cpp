// CPU kernels of depthwise_conv2d and its backward (front end and semantics: ops/depthwise_conv.h).
//
// Three layouts, chosen per call:
//  - plane path (forward, 3x3/5x5, stride 1, output rows >= kPlaneMinWidth): one (image, channel)
//    plane at a time, copied into a zero-padded scratch plane; each output accumulates its taps in a
//    register, vectorised across columns.
//  - row path (forward, 3x3 "same", stride 1, rows of more than half and at most a vector with their
//    padding: 14x14 planes in float32): one vector per row, read in place, no copy or transpose.
//  - channel-blocked path (everything else, and every backward): kLanes channels transposed
//    side by side, vectorised across channels, so short rows (7x7 planes) and any kernel,
//    stride or dilation still run at full vector width.
// Bias and activation are applied when an output is written, so conv + folded BatchNorm +
// activation read the input and write the output once. The backward recomputes the pre-activation
// to form dL/d(pre-activation). Channels are split across threads and a channel's images run in
// order, so results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/activation.h"
#include "common/simd.h"
#include "cpu/channel_blocks.h"
#include "cpu/memory.h"
#include "ops/depthwise_conv.h"

namespace pydet::depthwise {
namespace {

constexpr int64_t kPlaneMinWidth = 32;  // narrower output rows vectorise better across channels

// ---- plane path -------------------------------------------------------------------------------
// Square 3x3/5x5 kernels, stride 1, wide planes: the plane is copied into a zero-padded scratch
// plane, so every tap is a fixed offset and each output accumulates its kK x kK products in a
// register, vectorised across columns with unit-stride loads. The output rows are one flat span over
// the padded row pitch (the pitch - OW columns between rows are computed and dropped).
template <int64_t kK, class T>
PYDET_HD void conv_span(const T* __restrict base, const int64_t* __restrict offsets, const T* __restrict w, T bias,
                        int64_t count, T* __restrict pre) {
  for (int64_t i = 0; i < count; ++i) {
    T acc = bias;
    for (int64_t t = 0; t < kK * kK; ++t) acc += w[t] * base[offsets[t] + i];
    pre[i] = acc;
  }
}

struct PlaneScratch {
  int64_t pitch, rows;  // padded plane
  int64_t span;         // pre-activation span: output rows at the padded pitch
  explicit PlaneScratch(const Geometry& g)
      : pitch(g.w + 2 * g.pw), rows(g.h + 2 * g.ph), span((g.oh - 1) * pitch + g.ow) {}
};

template <Activation A, int64_t kK, class T>
PYDET_SIMD_INLINE void forward_plane(const T* __restrict in, const T* __restrict w, T bias, const Geometry& g,
                                     const PlaneScratch& sc, T* __restrict out, T* __restrict padded,
                                     T* __restrict pre) {
  std::fill(padded, padded + sc.rows * sc.pitch, T(0));
  for (int64_t r = 0; r < g.h; ++r) std::copy(in + r * g.w, in + (r + 1) * g.w, padded + (r + g.ph) * sc.pitch + g.pw);
  int64_t offsets[kK * kK];
  for (int64_t kh = 0; kh < kK; ++kh) {
    for (int64_t kw = 0; kw < kK; ++kw) offsets[kh * kK + kw] = (kh * sc.pitch + kw) * g.dh;
  }
  conv_span<kK>(padded, offsets, w, bias, sc.span, pre);
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    const T* p = pre + oh * sc.pitch;
    T* o = out + oh * g.ow;
    for (int64_t ow = 0; ow < g.ow; ++ow) o[ow] = activate<A>(p[ow]);
  }
}

// Backward of one plane on the plane path. The input gradient is the correlation of the (zero
// bordered) dL/d(pre-activation) with the flipped kernel, so it is one more flat conv_span; the
// weight gradient of a tap is a dot product over the plane, summed in kSumLanes interleaved partial
// sums (in a fixed order). dL/d(pre-activation) is laid out at the padded input's pitch with zeros
// in the columns between rows, so every tap's products are one flat loop too.
constexpr int64_t kSumLanes = 16;  // a multiple of simd::kV64 for float and double

struct PlaneBackwardScratch {
  PlaneScratch fwd;
  int64_t extent;         // (K - 1) d: the zero border around dL/d(pre-activation)
  int64_t gpitch, grows;  // bordered dL/d(pre-activation)
  int64_t sum_span;       // fwd.span rounded up to kSumLanes
  explicit PlaneBackwardScratch(const Geometry& g)
      : fwd(g),
        extent((g.kh - 1) * g.dh),
        gpitch(g.ow + 2 * extent),
        grows(g.oh + 2 * extent),
        sum_span((fwd.span + kSumLanes - 1) / kSumLanes * kSumLanes) {}
  int64_t padded_size() const {  // the padded input, with room for the last partial sum block
    return fwd.rows * fwd.pitch + kSumLanes;
  }
  int64_t gi_span(const Geometry& g) const { return (g.h - 1) * gpitch + g.w; }
};

template <Activation A, int64_t kK, class T>
PYDET_SIMD_INLINE void backward_plane(const T* __restrict grad, const T* __restrict in, const T* __restrict w, T bias,
                                      const Geometry& g, const PlaneBackwardScratch& sc, T* __restrict padded,
                                      T* __restrict gp, T* __restrict gp_border, T* __restrict gi_span,
                                      T* __restrict gi, T* __restrict gw_acc, T* __restrict gb_acc) {
  const int64_t d = g.dh, pitch = sc.fwd.pitch, e = sc.extent;
  std::fill(padded, padded + sc.padded_size(), T(0));
  for (int64_t r = 0; r < g.h; ++r) std::copy(in + r * g.w, in + (r + 1) * g.w, padded + (r + g.ph) * pitch + g.pw);
  int64_t offsets[kK * kK], flipped[kK * kK];
  for (int64_t kh = 0; kh < kK; ++kh) {
    for (int64_t kw = 0; kw < kK; ++kw) {
      offsets[kh * kK + kw] = (kh * pitch + kw) * d;
      flipped[kh * kK + kw] = (e - kh * d) * sc.gpitch + (e - kw * d);
    }
  }
  // gp[oh pitch + ow] = dL/d(pre-activation); zero between rows and past the span.
  if constexpr (A != Activation::kNone) {
    conv_span<kK>(padded, offsets, w, bias, sc.fwd.span, gp);
  }
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    T* row = gp + oh * pitch;
    const T* go = grad + oh * g.ow;
    if constexpr (A != Activation::kNone) {
      for (int64_t ow = 0; ow < g.ow; ++ow) row[ow] = go[ow] * activate_grad<A>(row[ow]);
    } else {
      std::copy(go, go + g.ow, row);
    }
    if (oh + 1 < g.oh) std::fill(row + g.ow, row + pitch, T(0));
  }
  std::fill(gp + sc.fwd.span, gp + sc.sum_span, T(0));
  // Weight and bias gradients, in explicit vector lanes (a float sum does not vectorise by itself).
  using V = simd::V64<T>;
  V sums[kK * kK] = {}, bsum = {};
  for (int64_t i0 = 0; i0 < sc.sum_span; i0 += simd::kV64<T>) {
    const V gv = simd::load64(gp + i0);
    bsum += gv;
    for (int64_t t = 0; t < kK * kK; ++t) sums[t] += gv * simd::load64(padded + offsets[t] + i0);
  }
  for (int64_t l = 0; l < simd::kV64<T>; ++l) {
    for (int64_t t = 0; t < kK * kK; ++t) gw_acc[t] += sums[t][l];
    *gb_acc += bsum[l];
  }
  // Input gradient: correlate the bordered gp with the flipped kernel.
  std::fill(gp_border, gp_border + sc.grows * sc.gpitch, T(0));
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    std::copy(gp + oh * pitch, gp + oh * pitch + g.ow, gp_border + (oh + e) * sc.gpitch + e);
  }
  conv_span<kK>(gp_border + g.ph * sc.gpitch + g.pw, flipped, w, T(0), sc.gi_span(g), gi_span);
  for (int64_t ih = 0; ih < g.h; ++ih)
    std::copy(gi_span + ih * sc.gpitch, gi_span + ih * sc.gpitch + g.w, gi + ih * g.w);
}

// ---- row path ----------------------------------------------------------------------------------
// 3x3, stride 1, dilation 1, padding 1, and rows narrow enough that a row with its two padding
// columns fits one vector (MobileNet's 14x14 planes in float32; rows of half a vector or less, as 7x7
// planes, measured faster channel-blocked, 0.21 vs 0.50 ms on 8x960x7x7): each input row is loaded once, its
// three column taps are the row itself and the row shifted one lane either way (in-register
// shuffles, zeros shifted in as padding), and each output row is 9 vector multiply-adds. No scratch
// copy and no transpose. Same sums in the same order as the channel-blocked path (padding taps add
// w * 0 there and here).
template <class T>
constexpr int64_t kRowLanes = simd::kV64<T>;

// Only where the running variant's vectors are 64 bytes: the row shifts are 64-byte shuffles, which
// GCC lowers element by element for AVX2 and SSE (the blocked path then runs: 4x faster there).
template <class T>
bool row_path_fits(const Geometry& g) {
  return simd::vector_bytes() == 64 && g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 &&
         g.ph == 1 && g.pw == 1 && g.w + 2 <= kRowLanes<T> && 2 * g.w > kRowLanes<T>;
}

template <class T>
struct RowTaps {
  simd::V64<T> left, centre, right;  // lane x: input column x - 1, x, x + 1 (0 outside the row)
};

// Lane masks as the integer vectors GCC's vector ?: takes.
template <class T>
using RowMask = simd::V64<std::conditional_t<sizeof(T) == 4, int32_t, int64_t>>;

// Row r of a plane of `rows` x `width` (rows outside the plane are padding: zeros). A full-vector load
// when it stays inside the plane (the lanes past the row masked off by in_row), else a copy of the row.
template <class T, std::size_t... J>
__attribute__((always_inline)) inline RowTaps<T> row_taps(const T* __restrict plane, int64_t r, int64_t rows,
                                                          int64_t width, const RowMask<T>& in_row,
                                                          std::index_sequence<J...>) {
  using V = simd::V64<T>;
  constexpr std::size_t L = sizeof...(J);
  const V zero{};
  if (r < 0 || r >= rows) return {zero, zero, zero};
  V v = zero;
  if (r * width + int64_t(L) <= rows * width) {
    v = in_row ? simd::load64(plane + r * width) : zero;
  } else {
    std::memcpy(&v, plane + r * width, static_cast<size_t>(width) * sizeof(T));
  }
  return {__builtin_shufflevector(v, zero, (J == 0 ? L : J - 1)...), v,
          __builtin_shufflevector(v, zero, (J == L - 1 ? L : J + 1)...)};
}

template <Activation A, class T>
PYDET_SIMD_INLINE void forward_rows(const T* __restrict in, const T* __restrict w, T bias, int64_t rows, int64_t width,
                                    T* __restrict out) {
  using V = simd::V64<T>;
  constexpr int64_t L = kRowLanes<T>;
  constexpr auto lanes = std::make_index_sequence<L>{};
  RowMask<T> in_row;
  for (int64_t l = 0; l < L; ++l) in_row[l] = l < width ? -1 : 0;
  V wt[9];
  for (int64_t t = 0; t < 9; ++t) wt[t] = V{} + w[t];
  RowTaps<T> above = row_taps(in, -1, rows, width, in_row, lanes), here = row_taps(in, 0, rows, width, in_row, lanes);
  for (int64_t oh = 0; oh < rows; ++oh) {
    const RowTaps<T> below = row_taps(in, oh + 1, rows, width, in_row, lanes);
    V acc = V{} + bias;
    const RowTaps<T>* window[3] = {&above, &here, &below};
    for (int64_t kh = 0; kh < 3; ++kh) {
      acc += wt[3 * kh] * window[kh]->left;
      acc += wt[3 * kh + 1] * window[kh]->centre;
      acc += wt[3 * kh + 2] * window[kh]->right;
    }
    alignas(64) T y[L];
    for (int64_t l = 0; l < L; ++l) y[l] = activate<A>(acc[l]);
    if (oh * width + L <= rows * width) {  // lanes past the row land on the next rows, written later
      std::memcpy(out + oh * width, y, sizeof(y));
    } else {
      std::memcpy(out + oh * width, y, static_cast<size_t>(width) * sizeof(T));
    }
    above = here;
    here = below;
  }
}

// ---- channel-blocked path ----------------------------------------------------------------------
// kLanes channels at a time are transposed into a zero-padded [rows x pitch][kLanes] scratch plane,
// so each tap of an output pixel is one kLanes-wide vector operation across channels whatever the
// plane size, kernel, stride or dilation. The backward uses the same layout: the input gradient is
// scattered into a padded transposed plane and the weight/bias gradients accumulate per channel lane
// (no cross-lane reduction, so the sums keep a fixed order).
using cpu::kLanes;
using cpu::load_block;
using cpu::store_block;

struct BlockedScratch {
  int64_t pitch, rows;
  explicit BlockedScratch(const Geometry& g) : pitch(g.w + 2 * g.pw), rows(g.h + 2 * g.ph) {}
  int64_t padded() const { return pitch * rows; }
};

// Weights and bias of channels [c0, c0 + used) as [taps][L] and [L] (zero lanes past used).
template <class T>
void load_block_weights(const T* __restrict w, const T* __restrict b, int64_t c0, int64_t used, int64_t taps,
                        T* __restrict wl, T* __restrict bl) {
  constexpr int64_t L = kLanes<T>;
  std::fill(wl, wl + taps * L, T(0));
  std::fill(bl, bl + L, T(0));
  for (int64_t l = 0; l < used; ++l) {
    for (int64_t t = 0; t < taps; ++t) wl[t * L + l] = w[(c0 + l) * taps + t];
    bl[l] = b[c0 + l];
  }
}

// pre[p][l] = bias + sum over taps of w * input at output pixels (oh, ow + p), p < kPix, for kLanes
// channels. kPix pixels at once give kPix independent accumulation chains (one alone would wait on
// the add latency at every tap). kK: the (square) kernel size as a constant, 0 for any at run time.
template <int64_t kK, int64_t kPix, class T>
PYDET_HD void blocked_pre(const T* __restrict buf, const T* __restrict wl, const T* __restrict bl, const Geometry& g,
                          const BlockedScratch& s, int64_t oh, int64_t ow, T (&pre)[kPix][kLanes<T>]) {
  constexpr int64_t L = kLanes<T>;
  const int64_t kh_n = kK > 0 ? kK : g.kh, kw_n = kK > 0 ? kK : g.kw;
  for (int64_t p = 0; p < kPix; ++p) {
    for (int64_t l = 0; l < L; ++l) pre[p][l] = bl[l];
  }
  for (int64_t kh = 0; kh < kh_n; ++kh) {
    for (int64_t kw = 0; kw < kw_n; ++kw) {
      const T* src = buf + ((oh * g.sh + kh * g.dh) * s.pitch + ow * g.sw + kw * g.dw) * L;
      const T* wt = wl + (kh * kw_n + kw) * L;
      for (int64_t p = 0; p < kPix; ++p) {
        for (int64_t l = 0; l < L; ++l) pre[p][l] += wt[l] * src[p * g.sw * L + l];
      }
    }
  }
}

// Pre-activations of output pixels (oh, ow .. ow + kPix - 1) of a channel block, activated, into out_t.
template <Activation A, int64_t kPix, class T>
PYDET_HD void store_activated(const T (&pre)[kPix][kLanes<T>], const Geometry& g, int64_t oh, int64_t ow,
                              T* __restrict out_t) {
  constexpr int64_t L = kLanes<T>;
  T* o = out_t + (oh * g.ow + ow) * L;
  for (int64_t p = 0; p < kPix; ++p) {
    for (int64_t l = 0; l < L; ++l) o[p * L + l] = activate<A>(pre[p][l]);
  }
}

// Output pixels (oh, ow .. ow + kPix - 1) of a channel block, activated, into out_t.
template <Activation A, int64_t kK, int64_t kPix, class T>
PYDET_HD void forward_pixels(const T* __restrict buf, const T* __restrict wl, const T* __restrict bl, const Geometry& g,
                             const BlockedScratch& s, int64_t oh, int64_t ow, T* __restrict out_t) {
  alignas(64) T pre[kPix][kLanes<T>];
  blocked_pre<kK, kPix>(buf, wl, bl, g, s, oh, ow, pre);
  store_activated<A>(pre, g, oh, ow, out_t);
}

// Stride 1, dilation 1, a square kK kernel: kPix outputs of a row read the kPix + kK - 1 source
// vectors of each kernel row once and use each for up to kK taps, from registers (the general
// blocked_pre loads a source vector per tap). Same sums in the same order as blocked_pre.
template <Activation A, int64_t kK, int64_t kPix, class T>
PYDET_HD void forward_pixels_unit(const T* __restrict buf, const T* __restrict wl, const T* __restrict bl,
                                  const Geometry& g, const BlockedScratch& s, int64_t oh, int64_t ow,
                                  T* __restrict out_t) {
  constexpr int64_t L = kLanes<T>;
  using V = simd::V64<T>;
  const V bias = simd::load64(bl);
  V acc[kPix];
  for (int64_t p = 0; p < kPix; ++p) acc[p] = bias;
  for (int64_t kh = 0; kh < kK; ++kh) {
    const T* row = buf + ((oh + kh) * s.pitch + ow) * L;
    V src[kPix + kK - 1];
    for (int64_t j = 0; j < kPix + kK - 1; ++j) src[j] = simd::load64(row + j * L);
    for (int64_t kw = 0; kw < kK; ++kw) {
      const V wt = simd::load64(wl + (kh * kK + kw) * L);
      for (int64_t p = 0; p < kPix; ++p) acc[p] += wt * src[p + kw];
    }
  }
  alignas(64) T pre[kPix][L];
  for (int64_t p = 0; p < kPix; ++p) simd::store64(pre[p], acc[p]);
  store_activated<A>(pre, g, oh, ow, out_t);
}

// A row's pixels go in groups of 4, then 2, then 1 (14-wide rows: 4 + 4 + 4 + 2); with unit stride
// and dilation and a 3x3/5x5 kernel, in groups of 8, 4, 2, 1 of forward_pixels_unit.
template <Activation A, int64_t kK, class T>
PYDET_SIMD_INLINE void forward_block(const T* __restrict buf, const T* __restrict wl, const T* __restrict bl,
                                     const Geometry& g, const BlockedScratch& s, T* __restrict out_t) {
  const bool unit = kK > 0 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    int64_t ow = 0;
    if constexpr (kK > 0) {
      if (unit) {
        for (; ow + 8 <= g.ow; ow += 8) forward_pixels_unit<A, kK, 8>(buf, wl, bl, g, s, oh, ow, out_t);
        for (; ow + 4 <= g.ow; ow += 4) forward_pixels_unit<A, kK, 4>(buf, wl, bl, g, s, oh, ow, out_t);
        for (; ow + 2 <= g.ow; ow += 2) forward_pixels_unit<A, kK, 2>(buf, wl, bl, g, s, oh, ow, out_t);
        for (; ow < g.ow; ++ow) forward_pixels_unit<A, kK, 1>(buf, wl, bl, g, s, oh, ow, out_t);
      }
    }
    for (; ow + 4 <= g.ow; ow += 4) forward_pixels<A, kK, 4>(buf, wl, bl, g, s, oh, ow, out_t);
    if (ow + 2 <= g.ow) {
      forward_pixels<A, kK, 2>(buf, wl, bl, g, s, oh, ow, out_t);
      ow += 2;
    }
    if (ow < g.ow) forward_pixels<A, kK, 1>(buf, wl, bl, g, s, oh, ow, out_t);
  }
}

// One image of a channel block. grad_t [OH * OW][L] becomes dL/d(pre-activation) in place; gi_t
// (padded, transposed) receives the input gradient; gw_acc [taps][L] and gb_acc [L] accumulate the
// weight and bias gradients. The weight gradient of a tap sums over pixels in kChains interleaved
// partial sums (independent add chains), combined in a fixed order.
template <Activation A, int64_t kK, class T>
PYDET_SIMD_INLINE void backward_block(T* __restrict grad_t, const T* __restrict buf, const T* __restrict wl,
                                      const T* __restrict bl, const Geometry& g, const BlockedScratch& s,
                                      T* __restrict gi_t, T* __restrict gw_acc, T* __restrict gb_acc) {
  constexpr int64_t L = kLanes<T>, kPix = 4, kChains = 4;
  const int64_t pixels = g.oh * g.ow;
  if constexpr (A != Activation::kNone) {
    alignas(64) T pre[kPix][L];
    alignas(64) T one[1][L];
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      int64_t ow = 0;
      for (; ow + kPix <= g.ow; ow += kPix) {
        blocked_pre<kK, kPix>(buf, wl, bl, g, s, oh, ow, pre);
        T* go = grad_t + (oh * g.ow + ow) * L;
        for (int64_t p = 0; p < kPix; ++p) {
          for (int64_t l = 0; l < L; ++l) go[p * L + l] *= activate_grad<A>(pre[p][l]);
        }
      }
      for (; ow < g.ow; ++ow) {
        blocked_pre<kK, 1>(buf, wl, bl, g, s, oh, ow, one);
        T* go = grad_t + (oh * g.ow + ow) * L;
        for (int64_t l = 0; l < L; ++l) go[l] *= activate_grad<A>(one[0][l]);
      }
    }
  }
  for (int64_t i = 0; i < pixels; ++i) {
    for (int64_t l = 0; l < L; ++l) gb_acc[l] += grad_t[i * L + l];
  }
  std::fill(gi_t, gi_t + s.padded() * L, T(0));
  for (int64_t kh = 0; kh < g.kh; ++kh) {
    for (int64_t kw = 0; kw < g.kw; ++kw) {
      const T* wt = wl + (kh * g.kw + kw) * L;
      alignas(64) T sums[kChains][L] = {};
      for (int64_t oh = 0; oh < g.oh; ++oh) {
        const int64_t row = ((oh * g.sh + kh * g.dh) * s.pitch + kw * g.dw) * L;
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          const int64_t pos = row + ow * g.sw * L;
          const T* gp = grad_t + (oh * g.ow + ow) * L;
          T* sum = sums[ow % kChains];
          for (int64_t l = 0; l < L; ++l) {
            gi_t[pos + l] += wt[l] * gp[l];
            sum[l] += gp[l] * buf[pos + l];
          }
        }
      }
      T* acc = gw_acc + (kh * g.kw + kw) * L;
      for (int64_t k = 0; k < kChains; ++k) {
        for (int64_t l = 0; l < L; ++l) acc[l] += sums[k][l];
      }
    }
  }
}

// f(std::integral_constant<int64_t, K>): K = 3 or 5 for those square kernels, 0 (run time) otherwise.
template <class F>
void with_square_kernel(const Geometry& g, const F& f) {
  if (g.kh == 3 && g.kw == 3) return f(std::integral_constant<int64_t, 3>{});
  if (g.kh == 5 && g.kw == 5) return f(std::integral_constant<int64_t, 5>{});
  return f(std::integral_constant<int64_t, 0>{});
}

struct CpuKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) { return pydet::compute_dtype(st); }

  // Measured on 2 vCPUs (AVX-512): the plane path wins for stride-1 rows of 32 and more (56x56,
  // 112x112 MobileNet planes); narrower rows and stride 2 are faster on the row path (when it
  // applies) or channel-blocked.
  static bool plane_path(const Geometry& g) {
    return g.kh == g.kw && (g.kh == 3 || g.kh == 5) && g.sh == 1 && g.sw == 1 && g.dh == g.dw && g.ow >= kPlaneMinWidth;
  }

  template <Activation A, class T>
  static void forward_planes(const T* in, const T* w, const T* b, T* o, const Geometry& g) {
    const PlaneScratch sc(g);
    at::parallel_for(0, g.n * g.c, 1, [&](int64_t begin, int64_t end) {
      cpu::AlignedVector<T> padded(static_cast<size_t>(sc.rows * sc.pitch)), pre(static_cast<size_t>(sc.span));
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c = p % g.c;
        const T* ip = in + p * g.h * g.w;
        const T* wp = w + c * g.kh * g.kw;
        T* op = o + p * g.oh * g.ow;
        simd::dispatch([&] {
          if (g.kh == 3) {
            forward_plane<A, 3>(ip, wp, b[c], g, sc, op, padded.data(), pre.data());
          } else {
            forward_plane<A, 5>(ip, wp, b[c], g, sc, op, padded.data(), pre.data());
          }
        });
      }
    });
  }

  template <Activation A, class T>
  static void forward_row_planes(const T* in, const T* w, const T* b, T* o, const Geometry& g) {
    at::parallel_for(0, g.n * g.c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c = p % g.c;
        simd::dispatch([&] { forward_rows<A>(in + p * g.h * g.w, w + c * 9, b[c], g.h, g.w, o + p * g.h * g.w); });
      }
    });
  }

  template <Activation A, class T>
  static void forward_blocks(const T* in, const T* w, const T* b, T* o, const Geometry& g) {
    constexpr int64_t L = kLanes<T>;
    const BlockedScratch s(g);
    const int64_t blocks = (g.c + L - 1) / L, taps = g.kh * g.kw, out_plane = g.oh * g.ow;
    at::parallel_for(0, g.n * blocks, 1, [&](int64_t begin, int64_t end) {
      cpu::AlignedVector<T> buf(static_cast<size_t>(s.padded() * L)), out_t(static_cast<size_t>(out_plane * L));
      cpu::AlignedVector<T> wl(static_cast<size_t>(taps * L)), bl(static_cast<size_t>(L));
      // Tasks run block-major (all images of a channel block in turn): a block's weights are
      // transposed once per run of tasks, not once per image.
      int64_t loaded = -1;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t block = task / g.n, n = task % g.n, c0 = block * L, used = std::min(L, g.c - c0);
        if (block != loaded) {
          load_block_weights(w, b, c0, used, taps, wl.data(), bl.data());
          loaded = block;
        }
        simd::dispatch([&](auto isa) {
          constexpr int kNative = decltype(isa)::kVectorBytes;
          load_block<kNative>(in + (n * g.c + c0) * g.h * g.w, used, g.h, g.w, g.ph, g.pw, s.pitch, buf.data());
          with_square_kernel(g, [&](auto k) {
            forward_block<A, decltype(k)::value>(buf.data(), wl.data(), bl.data(), g, s, out_t.data());
          });
          store_block<kNative>(out_t.data(), g.ow, g.oh, g.ow, used, o + (n * g.c + c0) * out_plane, out_plane);
        });
      }
    });
  }

  static void forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& out,
                      const Geometry& g, Activation act) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "depthwise_conv2d", [&] {
      using T = scalar_t;
      const T* in = input.const_data_ptr<T>();
      const T* w = weight.const_data_ptr<T>();
      const T* b = bias.const_data_ptr<T>();
      T* o = out.data_ptr<T>();
      with_activation(act, [&](auto a) {
        constexpr Activation kA = decltype(a)::value;
        if (row_path_fits<T>(g)) {
          forward_row_planes<kA>(in, w, b, o, g);
        } else if (plane_path(g)) {
          forward_planes<kA>(in, w, b, o, g);
        } else {
          forward_blocks<kA>(in, w, b, o, g);
        }
      });
    });
  }

  // Backward: channels are split across threads and each channel's images run in order.
  template <Activation A, class T>
  static void backward_planes(const T* go, const T* in, const T* w, const T* b, T* gi, T* gw, T* gb,
                              const Geometry& g) {
    const PlaneBackwardScratch sc(g);
    const int64_t taps = g.kh * g.kw, in_plane = g.h * g.w, out_plane = g.oh * g.ow;
    at::parallel_for(0, g.c, 1, [&](int64_t begin, int64_t end) {
      cpu::AlignedVector<T> padded(static_cast<size_t>(sc.padded_size())), gp(static_cast<size_t>(sc.sum_span)),
          gp_border(static_cast<size_t>(sc.grows * sc.gpitch)), gi_span(static_cast<size_t>(sc.gi_span(g))),
          gw_acc(static_cast<size_t>(taps));
      for (int64_t c = begin; c < end; ++c) {
        std::fill(gw_acc.begin(), gw_acc.end(), T(0));
        T gb_acc = 0;
        for (int64_t n = 0; n < g.n; ++n) {
          const int64_t p = n * g.c + c;
          const T* wp = w + c * taps;
          simd::dispatch([&] {
            if (g.kh == 3) {
              backward_plane<A, 3>(go + p * out_plane, in + p * in_plane, wp, b[c], g, sc, padded.data(), gp.data(),
                                   gp_border.data(), gi_span.data(), gi + p * in_plane, gw_acc.data(), &gb_acc);
            } else {
              backward_plane<A, 5>(go + p * out_plane, in + p * in_plane, wp, b[c], g, sc, padded.data(), gp.data(),
                                   gp_border.data(), gi_span.data(), gi + p * in_plane, gw_acc.data(), &gb_acc);
            }
          });
        }
        std::copy(gw_acc.begin(), gw_acc.end(), gw + c * taps);
        gb[c] = gb_acc;
      }
    });
  }

  template <Activation A, class T>
  static void backward_blocks(const T* go, const T* in, const T* w, const T* b, T* gi, T* gw, T* gb,
                              const Geometry& g) {
    constexpr int64_t L = kLanes<T>;
    const BlockedScratch s(g);
    const int64_t blocks = (g.c + L - 1) / L, taps = g.kh * g.kw, out_plane = g.oh * g.ow;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      cpu::AlignedVector<T> buf(static_cast<size_t>(s.padded() * L)), gi_t(static_cast<size_t>(s.padded() * L));
      cpu::AlignedVector<T> grad_t(static_cast<size_t>(out_plane * L)), wl(static_cast<size_t>(taps * L)),
          bl(static_cast<size_t>(L)), gw_acc(static_cast<size_t>(taps * L)), gb_acc(static_cast<size_t>(L));
      for (int64_t block = begin; block < end; ++block) {
        const int64_t c0 = block * L, used = std::min(L, g.c - c0);
        load_block_weights(w, b, c0, used, taps, wl.data(), bl.data());
        std::fill(gw_acc.begin(), gw_acc.end(), T(0));
        std::fill(gb_acc.begin(), gb_acc.end(), T(0));
        for (int64_t n = 0; n < g.n; ++n) {
          const int64_t first = n * g.c + c0;
          simd::dispatch([&](auto isa) {
            constexpr int kNative = decltype(isa)::kVectorBytes;
            load_block<kNative>(in + first * g.h * g.w, used, g.h, g.w, g.ph, g.pw, s.pitch, buf.data());
            load_block<kNative>(go + first * out_plane, used, g.oh, g.ow, 0, 0, g.ow, grad_t.data());
            with_square_kernel(g, [&](auto k) {
              backward_block<A, decltype(k)::value>(grad_t.data(), buf.data(), wl.data(), bl.data(), g, s, gi_t.data(),
                                                    gw_acc.data(), gb_acc.data());
            });
            store_block<kNative>(gi_t.data() + (g.ph * s.pitch + g.pw) * L, s.pitch, g.h, g.w, used,
                                 gi + first * g.h * g.w, g.h * g.w);
          });
        }
        for (int64_t l = 0; l < used; ++l) {
          for (int64_t t = 0; t < taps; ++t) gw[(c0 + l) * taps + t] = gw_acc[t * L + l];
          gb[c0 + l] = gb_acc[l];
        }
      }
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                       const at::Tensor& bias, at::Tensor& grad_input, at::Tensor& grad_weight, at::Tensor& grad_bias,
                       const Geometry& g, Activation act) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "depthwise_conv2d_backward", [&] {
      using T = scalar_t;
      const T* go = grad.const_data_ptr<T>();
      const T* in = input.const_data_ptr<T>();
      const T* w = weight.const_data_ptr<T>();
      const T* b = bias.const_data_ptr<T>();
      T* gi = grad_input.data_ptr<T>();
      T* gw = grad_weight.data_ptr<T>();
      T* gb = grad_bias.data_ptr<T>();
      with_activation(act, [&](auto a) {
        constexpr Activation kA = decltype(a)::value;
        if (plane_path(g)) {
          backward_planes<kA>(go, in, w, b, gi, gw, gb, g);
        } else {
          backward_blocks<kA>(go, in, w, b, gi, gw, gb, g);
        }
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::depthwise
