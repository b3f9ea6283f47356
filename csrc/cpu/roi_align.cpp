// CPU kernels of roi_align, multi_scale_roi_align and their backwards (front end: ops/roi_align.h;
// sampling: common/roi_align_math.h). roi_align is the one-level case.
//
// Both work on one image's channel block of one level at a time (kLanes channels transposed to [pixels][kLanes],
// cpu/channel_blocks.h; blocks in parallel) and pool every RoI of that image from it: each sample is
// then one vector operation across kLanes channels, on a block that stays in cache across the RoIs.
// torchvision's kernel walks RoI by RoI and channel by channel, one scalar sample at a time, missing
// the cache on almost every sample of a large feature map. The RoIs' sampling (taps per bin and axis)
// is tabulated once per call and shared by all blocks.
//
// Results are torchvision's bit for bit and do not depend on the thread count: a lane computes its
// channel's samples with torchvision's operations in its order, and in the backward one task owns a
// block of the input's gradient and adds to it in torchvision's order (RoI, bin, sample, corner).
// float16 is computed in float16 as there, by the same loops on c10::Half (not vectorised).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/roi_align_math.h"
#include "common/simd.h"
#include "cpu/channel_blocks.h"
#include "cpu/memory.h"
#include "cpu/roi_lanes.h"
#include "ops/roi_align.h"

namespace pydet::roi {
namespace {

// Lane-vector operations (samples and transposed pixels) one task should have before a call goes
// parallel: tens of microseconds.
constexpr int64_t kGrainWork = 1 << 15;

// Every RoI's sampling, in the order of the rois tensor, and the RoIs of each (level, image) group.
template <class T>
struct Sampling {
  std::vector<T> count;
  std::vector<uint8_t> finite;
  // The taps of RoI k's bin p are y_taps[y_first[k * PH + p] .. y_first[k * PH + p + 1]) (x likewise).
  std::vector<int64_t> y_first, x_first;
  std::vector<Tap<T>> y_taps, x_taps;
  // RoIs of group (level l, image b), gl = l * N + b: in_group[group_first[gl] .. group_first[gl + 1]),
  // in increasing order.
  std::vector<int64_t> in_group, group_first;
  int64_t samples = 0;                 // in-image samples of all RoIs (a pooling pass over one channel)
  std::vector<int64_t> group_samples;  // the same per group (bounds: each bin's largest grid)

  // levels: [K] (each RoI's level), or nullptr: all on level 0.
  Sampling(const T* rois, const int64_t* levels, const Geometry& g, const char* op)
      : count(g.rois),
        finite(g.rois),
        y_first(g.rois * g.pooled_h + 1),
        x_first(g.rois * g.pooled_w + 1),
        in_group(g.rois),
        group_first(groups(g) + 2, 0),
        group_samples(groups(g), 0) {
    const auto level_count = static_cast<int64_t>(g.levels.size());
    std::vector<int64_t> group(g.rois);
    for (int64_t k = 0; k < g.rois; ++k) {
      const T* roi = rois + 5 * k;
      if (!is_batch_index(roi[0], g.batch)) fail_batch_index(op, k, static_cast<double>(roi[0]), g.batch);
      const auto b = static_cast<compare_t<T>>(roi[0]);
      const int64_t l = levels ? levels[k] : 0;
      if (l < 0 || l >= level_count) fail_level(op, k, l, level_count);
      group[k] = l * g.batch + static_cast<int64_t>(b);
      ++group_first[group[k] + 2];
      const Level& lv = g.levels[l];
      const RoiGrid<T> r =
          roi_grid(roi, static_cast<T>(lv.spatial_scale), g.aligned, g.pooled_h, g.pooled_w, g.sampling_ratio);
      count[k] = r.count;
      finite[k] = r.finite;
      const int64_t ny = tabulate(r.y, g.pooled_h, lv.height, r.finite, &y_first[k * g.pooled_h], y_taps);
      const int64_t nx = tabulate(r.x, g.pooled_w, lv.width, r.finite, &x_first[k * g.pooled_w], x_taps);
      samples += ny * nx;
      group_samples[group[k]] += ny * nx;
    }
    y_first.back() = static_cast<int64_t>(y_taps.size());
    x_first.back() = static_cast<int64_t>(x_taps.size());
    for (int64_t gl = 0; gl < groups(g); ++gl) group_first[gl + 2] += group_first[gl + 1];
    for (int64_t k = 0; k < g.rois; ++k) in_group[group_first[group[k] + 1]++] = k;
  }

  static int64_t groups(const Geometry& g) { return static_cast<int64_t>(g.levels.size()) * g.batch; }
  bool empty(int64_t gl) const { return group_first[gl] == group_first[gl + 1]; }

  // Appends one axis's taps, bin by bin, recording where each bin's start; returns the largest bin's
  // count (a bound for the work estimate).
  static int64_t tabulate(const AxisGrid<T>& a, int64_t pooled, int64_t extent, bool finite, int64_t* first,
                          std::vector<Tap<T>>& taps) {
    int64_t most = 0;
    for (int64_t p = 0; p < pooled; ++p) {
      first[p] = static_cast<int64_t>(taps.size());
      if (!finite) continue;
      const SampleRange s = samples_inside(a, p, extent);
      for (int64_t i = s.begin; i < s.end; ++i) taps.push_back(tap_at(sample_at(a, p, i), extent));
      most = std::max(most, s.end - s.begin);
    }
    return most * pooled;
  }

  // (level, image, channel block) tasks per parallel chunk: enough for kGrainWork.
  int64_t block_grain(const Geometry& g) const {
    int64_t pixels = 0;
    for (const Level& lv : g.levels) pixels += lv.height * lv.width;
    const int64_t per_block = (samples / g.batch + pixels) / static_cast<int64_t>(g.levels.size());
    return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(per_block, 1));
  }
};

// Every RoI of group gl from its image's channel block [c0, c0 + used) on its level (width pixels a
// row, `pixel` elements apart: L in a transposed block, C in a channels_last map read in place): bins
// into tile[bin * L + lane], then out[k, c0 + lane] row by row.
template <int kNative, class T>
PYDET_SIMD_INLINE void pool_block(const Sampling<T>& s, const Geometry& g, int64_t gl, int64_t width, int64_t pixel,
                                  int64_t c0, int64_t used, const T* block, T* tile, T* out) {
  constexpr int64_t L = kLanes<T>;
  const int64_t bins = g.pooled_h * g.pooled_w, row = width * pixel;
  for (int64_t r = s.group_first[gl]; r < s.group_first[gl + 1]; ++r) {
    const int64_t k = s.in_group[r];
    if (!s.finite[k]) std::fill(tile, tile + bins * L, std::numeric_limits<T>::quiet_NaN());
    for (int64_t ph = 0; s.finite[k] && ph < g.pooled_h; ++ph) {
      const int64_t* yf = &s.y_first[k * g.pooled_h + ph];
      if (ph + 1 < g.pooled_h) {  // the next bin row's pixels: a new RoI's rows are rarely in cache
        for (int64_t ty = yf[1]; ty < yf[2]; ++ty) {
          const T* lo = block + s.y_taps[ty].low * row;
          const T* hi = block + s.y_taps[ty].high * row;
          for (int64_t tx = s.x_first[k * g.pooled_w]; tx < s.x_first[(k + 1) * g.pooled_w]; ++tx) {
            __builtin_prefetch(lo + s.x_taps[tx].low * pixel);
            __builtin_prefetch(lo + s.x_taps[tx].high * pixel);
            __builtin_prefetch(hi + s.x_taps[tx].low * pixel);
            __builtin_prefetch(hi + s.x_taps[tx].high * pixel);
          }
        }
      }
      for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
        const int64_t* xf = &s.x_first[k * g.pooled_w + pw];
        Lanes<kNative, T> sum{};
        for (int64_t ty = yf[0]; ty < yf[1]; ++ty) {
          const Tap<T>& y = s.y_taps[ty];
          const T* lo = block + y.low * row;
          const T* hi = block + y.high * row;
          for (int64_t tx = xf[0]; tx < xf[1]; ++tx) {
            const Tap<T>& x = s.x_taps[tx];
            sum = add_sample<kNative>(sum, weights(y, x), lo + x.low * pixel, lo + x.high * pixel, hi + x.low * pixel,
                                      hi + x.high * pixel);
          }
        }
        store_mean<kNative>(tile + (ph * g.pooled_w + pw) * L, sum, s.count[k]);
      }
    }
    tile_to_rows(tile, used, bins, out + (k * g.channels + c0) * bins);
  }
}

// The gradient of a channel block [c0, c0 + used) from every RoI of group gl, into the zeroed block
// (width pixels a row), in torchvision's order; tile holds one RoI's bin gradients as [bin][L].
template <class T>
PYDET_SIMD_INLINE void scatter_block(const Sampling<T>& s, const Geometry& g, int64_t gl, int64_t width, int64_t c0,
                                     int64_t used, const T* grad, T* tile, T* block) {
  constexpr int64_t L = kLanes<T>;
  const int64_t bins = g.pooled_h * g.pooled_w, row = width * L;
  for (int64_t r = s.group_first[gl]; r < s.group_first[gl + 1]; ++r) {
    const int64_t k = s.in_group[r];
    if (!s.finite[k]) continue;
    rows_to_tile(grad + (k * g.channels + c0) * bins, used, bins, tile);
    const T count = s.count[k];
    for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
      const int64_t* yf = &s.y_first[k * g.pooled_h + ph];
      for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
        const int64_t* xf = &s.x_first[k * g.pooled_w + pw];
        const T* gv = tile + (ph * g.pooled_w + pw) * L;
        for (int64_t ty = yf[0]; ty < yf[1]; ++ty) {
          const Tap<T>& y = s.y_taps[ty];
          T* lo = block + y.low * row;
          T* hi = block + y.high * row;
          for (int64_t tx = xf[0]; tx < xf[1]; ++tx) {
            const Tap<T>& x = s.x_taps[tx];
            const Weights<T> w = weights(y, x);
            // One corner after the other: at the last row or column two corners are one pixel.
            add_share(lo + x.low * L, gv, w.w1, count);
            add_share(lo + x.high * L, gv, w.w2, count);
            add_share(hi + x.low * L, gv, w.w3, count);
            add_share(hi + x.high * L, gv, w.w4, count);
          }
        }
      }
    }
  }
}

struct CpuKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) {
    return st == at::kBFloat16 ? at::kFloat : st;  // float16 in float16 arithmetic, as torchvision's CPU kernel
  }
  static constexpr bool kReadsChannelsLast = true;

  // f(l, b, c0, used, block, tile) for every (level, image, channel block) task, in parallel; block and
  // tile are the task's scratch: [H_l * W_l][L] and [PH * PW][L].
  template <class T, class F>
  static void for_each_block(const Sampling<T>& s, const Geometry& g, const F& f) {
    constexpr int64_t L = kLanes<T>;
    const int64_t blocks = (g.channels + L - 1) / L;
    int64_t pixels = 0;
    for (const Level& lv : g.levels) pixels = std::max(pixels, lv.height * lv.width);
    at::parallel_for(0, Sampling<T>::groups(g) * blocks, s.block_grain(g), [&](int64_t begin, int64_t end) {
      cpu::AlignedVector<T> block(pixels * L), tile(g.pooled_h * g.pooled_w * L, T(0));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t gl = task / blocks, c0 = task % blocks * L;
        f(gl / g.batch, gl % g.batch, c0, std::min(L, g.channels - c0), block.data(), tile.data());
      }
    });
  }

  static void forward(const std::vector<at::Tensor>& features, const at::Tensor& rois, const at::Tensor& levels,
                      at::Tensor& out, const Geometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(out.scalar_type(), "roi_align", [&] {
      using T = scalar_t;
      const Sampling<T> s(rois.const_data_ptr<T>(), levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr, g,
                          levels.defined() ? "multi_scale_roi_align" : "roi_align");
      cpu::advise_huge_pages(out);
      T* o = out.data_ptr<T>();
      for_each_block(s, g, [&](int64_t l, int64_t b, int64_t c0, int64_t used, T* block, T* tile) {
        const int64_t gl = l * g.batch + b;
        if (s.empty(gl)) return;
        const at::Tensor& in = features[l];
        const Level& lv = g.levels[l];
        const bool channels_last = !in.is_contiguous();
        // A channels_last map is sampled in place, one line per corner pixel C channels apart, unless
        // its RoIs take more samples than it has pixels: such lines, scattered over the map's pages, then
        // cost more than transposing the block once (P2, 1,024 box-head RoIs: 1.3-1.8x).
        const bool in_place =
            channels_last && c0 + kLanes<T> <= g.channels && s.group_samples[gl] <= lv.height * lv.width;
        simd::dispatch([&](auto isa) {
          constexpr int kNative = decltype(isa)::kVectorBytes;
          if (in_place) {
            const T* pixels = in.const_data_ptr<T>() + b * lv.height * lv.width * g.channels + c0;
            pool_block<kNative>(s, g, gl, lv.width, g.channels, c0, used, pixels, tile, o);
            return;
          }
          to_block<kNative>(in.const_data_ptr<T>(), channels_last, b, c0, used, g.channels, lv.height, lv.width, block);
          pool_block<kNative>(s, g, gl, lv.width, kLanes<T>, c0, used, block, tile, o);
        });
      });
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& levels,
                       std::vector<at::Tensor>& grads, const Geometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad.scalar_type(), "_roi_align_backward", [&] {
      using T = scalar_t;
      const Sampling<T> s(rois.const_data_ptr<T>(), levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr, g,
                          levels.defined() ? "_multi_scale_roi_align_backward" : "_roi_align_backward");
      const T* go = grad.const_data_ptr<T>();
      for (at::Tensor& gi : grads) cpu::advise_huge_pages(gi);
      for_each_block(s, g, [&](int64_t l, int64_t b, int64_t c0, int64_t used, T* block, T* tile) {
        const Level& lv = g.levels[l];
        const int64_t plane = lv.height * lv.width;
        T* planes = grads[l].data_ptr<T>() + (b * g.channels + c0) * plane;
        const int64_t gl = l * g.batch + b;
        if (s.empty(gl)) {  // no RoI on this level of this image: no gradient
          std::fill(planes, planes + used * plane, T(0));
          return;
        }
        std::fill(block, block + plane * kLanes<T>, T(0));
        simd::dispatch([&](auto isa) {
          scatter_block(s, g, gl, lv.width, c0, used, go, tile, block);
          from_block<decltype(isa)::kVectorBytes>(block, used, lv.height, lv.width, planes);
        });
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

}  // namespace pydet::roi
