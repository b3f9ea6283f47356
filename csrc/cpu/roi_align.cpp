// CPU kernels of roi_align and its backward (front end: ops/roi_align.h; sampling:
// common/roi_align_math.h).
//
// Both work on one image's channel block at a time (kLanes channels transposed to [pixels][kLanes],
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
#include "ops/roi_align.h"

namespace pydet::roi {
namespace {

using cpu::kLanes;

// Lane-vector operations (samples and transposed pixels) one task should have before a call goes
// parallel: tens of microseconds.
constexpr int64_t kGrainWork = 1 << 15;

// Every RoI's sampling, in the order of the rois tensor, and the RoIs of each image.
template <class T>
struct Sampling {
  std::vector<T> count;
  std::vector<uint8_t> finite;
  // The taps of RoI k's bin p are y_taps[y_first[k * PH + p] .. y_first[k * PH + p + 1]) (x likewise).
  std::vector<int64_t> y_first, x_first;
  std::vector<Tap<T>> y_taps, x_taps;
  // RoIs of image b: by_image[image_first[b] .. image_first[b + 1]), in increasing order.
  std::vector<int64_t> by_image, image_first;
  int64_t samples = 0;  // in-image samples of all RoIs (a pooling pass over one channel)

  Sampling(const T* rois, const Geometry& g, const char* op)
      : count(g.rois),
        finite(g.rois),
        y_first(g.rois * g.pooled_h + 1),
        x_first(g.rois * g.pooled_w + 1),
        by_image(g.rois),
        image_first(g.batch + 2, 0) {
    std::vector<int64_t> image(g.rois);
    for (int64_t k = 0; k < g.rois; ++k) {
      const T* roi = rois + 5 * k;
      const auto b = static_cast<compare_t<T>>(roi[0]);
      if (!(b >= 0 && b < static_cast<compare_t<T>>(g.batch) && b == std::floor(b))) {
        fail_batch_index(op, k, static_cast<double>(b), g.batch);
      }
      image[k] = static_cast<int64_t>(b);
      ++image_first[image[k] + 2];
      const RoiGrid<T> r =
          roi_grid(roi, static_cast<T>(g.spatial_scale), g.aligned, g.pooled_h, g.pooled_w, g.sampling_ratio);
      count[k] = r.count;
      finite[k] = r.finite;
      const int64_t ny = tabulate(r.y, g.pooled_h, g.height, r.finite, &y_first[k * g.pooled_h], y_taps);
      const int64_t nx = tabulate(r.x, g.pooled_w, g.width, r.finite, &x_first[k * g.pooled_w], x_taps);
      samples += ny * nx;
    }
    y_first.back() = static_cast<int64_t>(y_taps.size());
    x_first.back() = static_cast<int64_t>(x_taps.size());
    for (int64_t b = 0; b < g.batch; ++b) image_first[b + 2] += image_first[b + 1];
    for (int64_t k = 0; k < g.rois; ++k) by_image[image_first[image[k] + 1]++] = k;
  }

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

  // (image, channel block) tasks per parallel chunk: enough for kGrainWork.
  int64_t block_grain(const Geometry& g) const {
    const int64_t per_block = samples / std::max<int64_t>(g.batch, 1) + g.height * g.width;
    return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(per_block, 1));
  }
};

// Channels [c0, c0 + used) of image b -> block[pixel * L + lane], lanes >= used 0: from planes (NCHW),
// or from pixels of C channels (channels_last, read in place).
template <int kNative, class T>
PYDET_SIMD_INLINE void to_block(const T* input, bool channels_last, int64_t b, int64_t c0, int64_t used,
                                const Geometry& g, T* block) {
  const int64_t plane = g.height * g.width;
  if (channels_last) {
    constexpr int64_t L = kLanes<T>;
    const T* pixels = input + b * plane * g.channels + c0;
    for (int64_t p = 0; p < plane; ++p) {
      std::copy(pixels + p * g.channels, pixels + p * g.channels + used, block + p * L);
      std::fill(block + p * L + used, block + (p + 1) * L, T(0));
    }
    return;
  }
  const T* planes = input + (b * g.channels + c0) * plane;
  if constexpr (std::is_floating_point_v<T>) {
    cpu::load_block<kNative>(planes, used, g.height, g.width, 0, 0, g.width, block);
  } else {
    constexpr int64_t L = kLanes<T>;
    for (int64_t p = 0; p < plane; ++p) {
      for (int64_t l = 0; l < L; ++l) block[p * L + l] = l < used ? planes[l * plane + p] : T(0);
    }
  }
}

template <int kNative, class T>
PYDET_SIMD_INLINE void from_block(const T* block, int64_t used, const Geometry& g, T* planes) {
  if constexpr (std::is_floating_point_v<T>) {
    cpu::store_block<kNative>(block, g.width, g.height, g.width, used, planes, g.height * g.width);
  } else {
    constexpr int64_t L = kLanes<T>;
    const int64_t plane = g.height * g.width;
    for (int64_t l = 0; l < used; ++l) {
      for (int64_t p = 0; p < plane; ++p) planes[l * plane + p] = block[p * L + l];
    }
  }
}

// kLanes<T> channels of one pixel or bin, as a value: for float and double, 64 bytes as native vectors
// of kNative bytes (kept in registers across a bin's samples: the compiler neither vectorises lane
// loops over arrays here, as it cannot rule out aliasing, nor keeps a 64-byte vector in registers on a
// narrower ISA); for c10::Half, an array.
template <int kNative, class T, bool = std::is_floating_point_v<T>>
struct LanesOf {
  using type = std::array<T, kLanes<T>>;
};
template <int kNative, class T>
struct LanesOf<kNative, T, true> {
  using type = std::array<simd::Vec<T, kNative>, 64 / kNative>;
};
template <int kNative, class T>
using Lanes = typename LanesOf<kNative, T>::type;

// sum + the sample of pixels v1 .. v4 (kLanes channels each), lane by lane.
template <int kNative, class T>
PYDET_SIMD_INLINE Lanes<kNative, T> add_sample(Lanes<kNative, T> sum, const Weights<T>& w, const T* v1, const T* v2,
                                               const T* v3, const T* v4) {
  if constexpr (std::is_floating_point_v<T>) {
    using V = simd::Vec<T, kNative>;
    constexpr int64_t W = kNative / sizeof(T);
    for (size_t c = 0; c < sum.size(); ++c) {
      const int64_t at = int64_t(c) * W;
      sum[c] = sum[c] + interpolate(w, simd::load_vec<V>(v1 + at), simd::load_vec<V>(v2 + at),
                                    simd::load_vec<V>(v3 + at), simd::load_vec<V>(v4 + at));
    }
  } else {
    for (int64_t l = 0; l < kLanes<T>; ++l) sum[l] = sum[l] + interpolate(w, v1[l], v2[l], v3[l], v4[l]);
  }
  return sum;
}

// out[lane] = sum[lane] / count.
template <int kNative, class T>
PYDET_SIMD_INLINE void store_mean(T* out, const Lanes<kNative, T>& sum, T count) {
  if constexpr (std::is_floating_point_v<T>) {
    constexpr int64_t W = kNative / sizeof(T);
    for (size_t c = 0; c < sum.size(); ++c) simd::store_vec(out + int64_t(c) * W, sum[c] / count);
  } else {
    for (int64_t l = 0; l < kLanes<T>; ++l) out[l] = sum[l] / count;
  }
}

// pixel[lane] += the share of weight w of grad[lane], lane by lane.
template <class T>
PYDET_SIMD_INLINE void add_share(T* pixel, const T* grad, T w, T count) {
  if constexpr (std::is_floating_point_v<T>) {
    simd::store64(pixel, simd::load64(pixel) + share(simd::load64(grad), w, count));
  } else {
    for (int64_t l = 0; l < kLanes<T>; ++l) pixel[l] = pixel[l] + share(grad[l], w, count);
  }
}

// Every RoI of image b from its channel block [c0, c0 + used): bins into tile[bin * L + lane], then
// out[k, c0 + lane] row by row.
template <int kNative, class T>
PYDET_SIMD_INLINE void pool_block(const Sampling<T>& s, const Geometry& g, int64_t b, int64_t c0, int64_t used,
                                  const T* block, T* tile, T* out) {
  constexpr int64_t L = kLanes<T>;
  const int64_t bins = g.pooled_h * g.pooled_w, row = g.width * L;
  for (int64_t r = s.image_first[b]; r < s.image_first[b + 1]; ++r) {
    const int64_t k = s.by_image[r];
    if (!s.finite[k]) std::fill(tile, tile + bins * L, std::numeric_limits<T>::quiet_NaN());
    for (int64_t ph = 0; s.finite[k] && ph < g.pooled_h; ++ph) {
      const int64_t* yf = &s.y_first[k * g.pooled_h + ph];
      for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
        const int64_t* xf = &s.x_first[k * g.pooled_w + pw];
        Lanes<kNative, T> sum{};
        for (int64_t ty = yf[0]; ty < yf[1]; ++ty) {
          const Tap<T>& y = s.y_taps[ty];
          const T* lo = block + y.low * row;
          const T* hi = block + y.high * row;
          for (int64_t tx = xf[0]; tx < xf[1]; ++tx) {
            const Tap<T>& x = s.x_taps[tx];
            sum = add_sample<kNative>(sum, weights(y, x), lo + x.low * L, lo + x.high * L, hi + x.low * L,
                                      hi + x.high * L);
          }
        }
        store_mean<kNative>(tile + (ph * g.pooled_w + pw) * L, sum, s.count[k]);
      }
    }
    for (int64_t l = 0; l < used; ++l) {
      T* o = out + (k * g.channels + c0 + l) * bins;
      for (int64_t bin = 0; bin < bins; ++bin) o[bin] = tile[bin * L + l];
    }
  }
}

// The gradient of image b's channel block [c0, c0 + used) from every RoI of the image, into the
// zeroed block, in torchvision's order; tile holds one RoI's bin gradients as [bin][L].
template <class T>
PYDET_SIMD_INLINE void scatter_block(const Sampling<T>& s, const Geometry& g, int64_t b, int64_t c0, int64_t used,
                                     const T* grad, T* tile, T* block) {
  constexpr int64_t L = kLanes<T>;
  const int64_t bins = g.pooled_h * g.pooled_w, row = g.width * L;
  for (int64_t r = s.image_first[b]; r < s.image_first[b + 1]; ++r) {
    const int64_t k = s.by_image[r];
    if (!s.finite[k]) continue;
    for (int64_t l = 0; l < used; ++l) {
      const T* src = grad + (k * g.channels + c0 + l) * bins;
      for (int64_t bin = 0; bin < bins; ++bin) tile[bin * L + l] = src[bin];
    }
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

  // f(b, c0, used, block, tile) for every (image, channel block) task, in parallel; block and tile are
  // the task's scratch: [H * W][L] and [PH * PW][L].
  template <class T, class F>
  static void for_each_block(const Sampling<T>& s, const Geometry& g, const F& f) {
    constexpr int64_t L = kLanes<T>;
    const int64_t blocks = (g.channels + L - 1) / L;
    at::parallel_for(0, g.batch * blocks, s.block_grain(g), [&](int64_t begin, int64_t end) {
      cpu::AlignedVector<T> block(g.height * g.width * L), tile(g.pooled_h * g.pooled_w * L, T(0));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / blocks, c0 = task % blocks * L;
        f(b, c0, std::min(L, g.channels - c0), block.data(), tile.data());
      }
    });
  }

  static void forward(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out, const Geometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(input.scalar_type(), "roi_align", [&] {
      using T = scalar_t;
      const Sampling<T> s(rois.const_data_ptr<T>(), g, "roi_align");
      const T* in = input.const_data_ptr<T>();
      const bool channels_last = !input.is_contiguous();
      cpu::advise_huge_pages(out);
      T* o = out.data_ptr<T>();
      for_each_block(s, g, [&](int64_t b, int64_t c0, int64_t used, T* block, T* tile) {
        if (s.image_first[b] == s.image_first[b + 1]) return;  // no RoI in this image
        simd::dispatch([&](auto isa) {
          constexpr int kNative = decltype(isa)::kVectorBytes;
          to_block<kNative>(in, channels_last, b, c0, used, g, block);
          pool_block<kNative>(s, g, b, c0, used, block, tile, o);
        });
      });
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input, const Geometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad.scalar_type(), "_roi_align_backward", [&] {
      using T = scalar_t;
      const Sampling<T> s(rois.const_data_ptr<T>(), g, "_roi_align_backward");
      const T* go = grad.const_data_ptr<T>();
      cpu::advise_huge_pages(grad_input);
      T* gi = grad_input.data_ptr<T>();
      for_each_block(s, g, [&](int64_t b, int64_t c0, int64_t used, T* block, T* tile) {
        T* planes = gi + (b * g.channels + c0) * g.height * g.width;
        if (s.image_first[b] == s.image_first[b + 1]) {  // no RoI in this image: no gradient
          std::fill(planes, planes + used * g.height * g.width, T(0));
          return;
        }
        std::fill(block, block + g.height * g.width * kLanes<T>, T(0));
        simd::dispatch([&](auto isa) {
          scatter_block(s, g, b, c0, used, go, tile, block);
          from_block<decltype(isa)::kVectorBytes>(block, used, g, planes);
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
