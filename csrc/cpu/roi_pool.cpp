// CPU kernels of roi_pool, ps_roi_pool, ps_roi_align and their backwards (front end: ops/roi_pool.h;
// bins: common/roi_pool_math.h; ps_roi_align's sampling: common/roi_align_math.h).
//
// roi_pool's forward runs one task per (image, block of kLanes channels), as roi_align's kernel: the
// block is transposed to [pixels][kLanes] (cpu/roi_lanes.h) and every RoI of the image takes each
// bin's maximum across the block as vector compares and selects. The position-sensitive forwards read
// another channel for every bin, so they run one task per (RoI, output channel). All read each bin in
// torchvision's order, so every bin (and argmax) is torchvision's bit for bit. The backwards run one task per
// input plane (image, channel), which adds the gradient of every RoI on that image in torchvision's
// order (RoI, bin, pixel or sample, corner): no atomics, and results that do not depend on the thread
// count. torchvision's kernels run on one thread. float16 is computed in float16, as there.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/roi_align_math.h"
#include "common/roi_pool_math.h"
#include "cpu/memory.h"
#include "cpu/roi_lanes.h"
#include "ops/roi_pool.h"

namespace pydet::roi {
namespace {

// Pixel reads or samples one task should have before a call goes parallel: tens of microseconds.
constexpr int64_t kGrainWork = 1 << 14;

// roi_pool, whose bins' pixels are common/roi_pool_math.h's max_pool case.
bool max_pool(const PoolGeometry& g) {
  return g.pooling == Pooling::kMax;
}

template <class Range>
int64_t length(const Range& r) {
  return std::max<int64_t>(r.end - r.begin, 0);
}

// Each RoI's image (checked) and the RoIs of each image in increasing order; `work` is what a pass
// over one channel of every RoI visits (bins, and pixels or samples), for the parallel grain.
template <class T>
struct RoiTable {
  std::vector<int64_t> image, in_image, image_first;
  int64_t work = 0;

  RoiTable(const T* rois, const PoolGeometry& g, const char* op)
      : image(g.rois), in_image(g.rois), image_first(g.batch + 2, 0) {
    for (int64_t k = 0; k < g.rois; ++k) {
      const T* roi = rois + 5 * k;
      if (!is_batch_index(roi[0], g.batch)) fail_batch_index(op, k, static_cast<double>(roi[0]), g.batch);
      image[k] = static_cast<int64_t>(static_cast<compare_t<T>>(roi[0]));
      ++image_first[image[k] + 2];
      work += g.pooled_h * g.pooled_w + visits(roi, g);
    }
    for (int64_t b = 0; b < g.batch; ++b) image_first[b + 2] += image_first[b + 1];
    for (int64_t k = 0; k < g.rois; ++k) in_image[image_first[image[k] + 1]++] = k;
  }

  // The pixels or samples one channel of an RoI visits: the sum over bins of rows x columns.
  static int64_t visits(const T* roi, const PoolGeometry& g) {
    const T scale = static_cast<T>(g.spatial_scale);
    int64_t rows = 0, cols = 0;
    if (g.pooling == Pooling::kPsAlign) {
      const RoiGrid<T> r = roi_grid(roi, scale, true, g.pooled_h, g.pooled_w, g.sampling_ratio);
      if (!r.finite) return 0;
      for (int64_t p = 0; p < g.pooled_h; ++p) rows += length(samples_inside(r.y, p, g.height));
      for (int64_t p = 0; p < g.pooled_w; ++p) cols += length(samples_inside(r.x, p, g.width));
    } else {
      const PoolGrid<T> r = pool_grid(roi, scale, g.pooled_h, g.pooled_w, max_pool(g));
      if (!r.finite) return 0;
      for (int64_t p = 0; p < g.pooled_h; ++p) rows += length(pool_bin(r.y, p, g.height, max_pool(g)));
      for (int64_t p = 0; p < g.pooled_w; ++p) cols += length(pool_bin(r.x, p, g.width, max_pool(g)));
    }
    return rows * cols;
  }

  // Tasks per parallel chunk when `tasks` tasks share `total` work.
  static int64_t grain(int64_t total, int64_t tasks) {
    return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, total / std::max<int64_t>(tasks, 1)));
  }
};

// The input channel position-sensitive bin (c, ph, pw) reads.
int64_t mapped_channel(const PoolGeometry& g, int64_t c, int64_t ph, int64_t pw) {
  return (c * g.pooled_h + ph) * g.pooled_w + pw;
}

// One RoI's bins of output channel c of the position-sensitive ops (planes: its image's), into out and
// index ([PH * PW] each).
template <class T>
void pool_roi(const T* roi, const T* planes, int64_t c, const PoolGeometry& g, T* out, int32_t* index) {
  const int64_t plane_size = g.height * g.width, bins = g.pooled_h * g.pooled_w;
  const T scale = static_cast<T>(g.spatial_scale);
  for (int64_t bin = 0; bin < bins; ++bin) index[bin] = static_cast<int32_t>(c * bins + bin);
  if (g.pooling == Pooling::kPsAverage) {
    const PoolGrid<T> r = pool_grid(roi, scale, g.pooled_h, g.pooled_w, max_pool(g));
    for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
      const PixelRange ys = pool_bin(r.y, ph, g.height, max_pool(g));
      for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
        const PixelRange xs = pool_bin(r.x, pw, g.width, max_pool(g));
        const T* plane = planes + mapped_channel(g, c, ph, pw) * plane_size;
        T sum = T(0);
        for (int64_t h = ys.begin; h < ys.end; ++h) {
          for (int64_t w = xs.begin; w < xs.end; ++w) sum += plane[h * g.width + w];
        }
        const bool empty = ys.end <= ys.begin || xs.end <= xs.begin;
        out[ph * g.pooled_w + pw] = !r.finite ? std::numeric_limits<T>::quiet_NaN()
                                    : empty   ? T(0)
                                              : sum / static_cast<T>(length(ys) * length(xs));
      }
    }
    return;
  }
  const RoiGrid<T> r = roi_grid(roi, scale, true, g.pooled_h, g.pooled_w, g.sampling_ratio);
  const T count = static_cast<T>(r.y.grid * r.x.grid);  // torchvision's: 0 (a NaN bin) for an empty grid
  // Each axis's taps once per bin row or column (torchvision recomputes them for every sample).
  thread_local std::vector<Tap<T>> y_taps, x_taps;
  thread_local std::vector<int64_t> y_first, x_first;
  const auto tabulate = [&](const AxisGrid<T>& a, int64_t pooled, int64_t extent, std::vector<Tap<T>>& taps,
                            std::vector<int64_t>& first) {
    taps.clear();
    first.assign(pooled + 1, 0);
    for (int64_t p = 0; r.finite && p < pooled; ++p) {
      const SampleRange range = samples_inside(a, p, extent);
      for (int64_t i = range.begin; i < range.end; ++i) taps.push_back(tap_at(sample_at(a, p, i), extent));
      first[p + 1] = static_cast<int64_t>(taps.size());
    }
  };
  tabulate(r.y, g.pooled_h, g.height, y_taps, y_first);
  tabulate(r.x, g.pooled_w, g.width, x_taps, x_first);
  for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
    for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
      const T* plane = planes + mapped_channel(g, c, ph, pw) * plane_size;
      T sum = T(0);
      for (int64_t ty = y_first[ph]; ty < y_first[ph + 1]; ++ty) {
        const Tap<T>& y = y_taps[ty];
        const T* lo = plane + y.low * g.width;
        const T* hi = plane + y.high * g.width;
        for (int64_t tx = x_first[pw]; tx < x_first[pw + 1]; ++tx) {
          const Tap<T>& x = x_taps[tx];
          sum = sum + interpolate(weights(y, x), lo[x.low], lo[x.high], hi[x.low], hi[x.high]);
        }
      }
      out[ph * g.pooled_w + pw] = r.finite ? sum / count : std::numeric_limits<T>::quiet_NaN();
    }
  }
}

// roi_pool's maximum of one bin for the kLanes channels of a block ([pixels][kLanes], width pixels a
// row): lane by lane the scalar kernel's strict comparison in its row-major order (so the same maximum
// and the first pixel holding it; NaN never wins). For float and double as native vectors of kNative
// bytes, compares and selects (GCC's vector extensions: written as scalar lane loops the compiler
// unrolls them and vectorises nothing), with the argmax in lanes of the value's width.
template <int kNative, class T>
PYDET_SIMD_INLINE void max_of_bin(const T* block, int64_t width, const PixelRange& ys, const PixelRange& xs, T* best,
                                  int32_t* at) {
  constexpr int64_t L = kLanes<T>;
  if constexpr (std::is_floating_point_v<T>) {
    using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
    using V = simd::Vec<T, kNative>;
    using M = simd::Vec<I, kNative>;
    constexpr int64_t W = kNative / int64_t(sizeof(T)), kParts = L / W;
    V m[kParts];
    M a[kParts];
    for (int64_t j = 0; j < kParts; ++j) {
      I lanes[W];
      for (int64_t l = 0; l < W; ++l) lanes[l] = at[j * W + l];
      m[j] = simd::load_vec<V>(best + j * W);
      a[j] = simd::load_vec<M>(lanes);
    }
    for (int64_t h = ys.begin; h < ys.end; ++h) {
      for (int64_t w = xs.begin; w < xs.end; ++w) {
        const T* v = block + (h * width + w) * L;
        const M pixel = M{} + static_cast<I>(h * width + w);
        for (int64_t j = 0; j < kParts; ++j) {
          const V x = simd::load_vec<V>(v + j * W);
          const M greater = x > m[j];
          m[j] = greater ? x : m[j];
          a[j] = greater ? pixel : a[j];
        }
      }
    }
    for (int64_t j = 0; j < kParts; ++j) {
      I lanes[W];
      simd::store_vec(best + j * W, m[j]);
      simd::store_vec(lanes, a[j]);
      for (int64_t l = 0; l < W; ++l) at[j * W + l] = static_cast<int32_t>(lanes[l]);
    }
  } else {  // float16: lane by lane
    for (int64_t h = ys.begin; h < ys.end; ++h) {
      for (int64_t w = xs.begin; w < xs.end; ++w) {
        const T* v = block + (h * width + w) * L;
        for (int64_t l = 0; l < L; ++l) {
          if (v[l] > best[l]) {
            best[l] = v[l];
            at[l] = static_cast<int32_t>(h * width + w);
          }
        }
      }
    }
  }
}

// Every RoI of image b from its channel block [c0, c0 + used): bins into values[bin * L + lane] and
// argmax[bin * L + lane], then into out and index at [k, c0 + lane].
template <int kNative, class T>
PYDET_SIMD_INLINE void max_pool_block(const RoiTable<T>& table, const T* rois, const PoolGeometry& g, int64_t b,
                                      int64_t c0, int64_t used, const T* block, T* values, int32_t* argmax, T* out,
                                      int32_t* index) {
  constexpr int64_t L = kLanes<T>;
  const int64_t bins = g.pooled_h * g.pooled_w;
  const T scale = static_cast<T>(g.spatial_scale);
  for (int64_t i = table.image_first[b]; i < table.image_first[b + 1]; ++i) {
    const int64_t k = table.in_image[i];
    const PoolGrid<T> r = pool_grid(rois + 5 * k, scale, g.pooled_h, g.pooled_w, true);
    for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
      const PixelRange ys = pool_bin(r.y, ph, g.height, true);
      for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
        const PixelRange xs = pool_bin(r.x, pw, g.width, true);
        const bool empty = ys.end <= ys.begin || xs.end <= xs.begin;
        T* best = values + (ph * g.pooled_w + pw) * L;
        int32_t* at = argmax + (ph * g.pooled_w + pw) * L;
        std::fill(best, best + L, !r.finite ? std::numeric_limits<T>::quiet_NaN() : empty ? T(0) : max_pool_floor<T>());
        std::fill(at, at + L, -1);
        if (r.finite) max_of_bin<kNative>(block, g.width, ys, xs, best, at);
      }
    }
    tile_to_rows(values, used, bins, out + (k * g.channels + c0) * bins);
    for (int64_t l = 0; l < used; ++l) {
      for (int64_t bin = 0; bin < bins; ++bin) index[(k * g.channels + c0 + l) * bins + bin] = argmax[bin * L + l];
    }
  }
}

// RoI k's gradient into input plane c of its image (zeroed before the first RoI), in torchvision's
// order; grad: the output's gradient [K, C_out, PH, PW].
template <class T>
void unpool_roi(const T* roi, int64_t k, const T* grad, const int32_t* argmax, int64_t c, const PoolGeometry& g,
                T* plane) {
  const int64_t plane_size = g.height * g.width, bins = g.pooled_h * g.pooled_w;
  const T scale = static_cast<T>(g.spatial_scale);
  if (g.pooling == Pooling::kMax) {
    const int64_t first = (k * g.out_channels + c) * bins;
    for (int64_t bin = 0; bin < bins; ++bin) {
      const int64_t pixel = argmax[first + bin];
      if (pixel == -1) continue;
      if (pixel < -1 || pixel >= plane_size) fail_argmax("_roi_pool_backward", first + bin, pixel, plane_size);
      plane[pixel] += grad[first + bin];
    }
    return;
  }
  // The one bin of RoI k that reads plane c.
  const int64_t pw = c % g.pooled_w, ph = c / g.pooled_w % g.pooled_h, c_out = c / bins;
  const T bin_grad = grad[(k * g.out_channels + c_out) * bins + ph * g.pooled_w + pw];
  if (g.pooling == Pooling::kPsAverage) {
    const PoolGrid<T> r = pool_grid(roi, scale, g.pooled_h, g.pooled_w, max_pool(g));
    const PixelRange ys = pool_bin(r.y, ph, g.height, max_pool(g)), xs = pool_bin(r.x, pw, g.width, max_pool(g));
    if (!r.finite || ys.end <= ys.begin || xs.end <= xs.begin) return;
    const T share_of_pixel = bin_grad / static_cast<T>(length(ys) * length(xs));
    for (int64_t h = ys.begin; h < ys.end; ++h) {
      for (int64_t w = xs.begin; w < xs.end; ++w) plane[h * g.width + w] += share_of_pixel;
    }
    return;
  }
  const RoiGrid<T> r = roi_grid(roi, scale, true, g.pooled_h, g.pooled_w, g.sampling_ratio);
  if (!r.finite) return;
  const T count = static_cast<T>(r.y.grid * r.x.grid);
  const SampleRange ys = samples_inside(r.y, ph, g.height), xs = samples_inside(r.x, pw, g.width);
  for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
    const Tap<T> y = tap_at(sample_at(r.y, ph, iy), g.height);
    T* lo = plane + y.low * g.width;
    T* hi = plane + y.high * g.width;
    for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
      const Tap<T> x = tap_at(sample_at(r.x, pw, ix), g.width);
      const Weights<T> w = weights(y, x);
      // One corner after the other: at the last row or column two corners are one pixel.
      lo[x.low] += share(bin_grad, w.w1, count);
      lo[x.high] += share(bin_grad, w.w2, count);
      hi[x.low] += share(bin_grad, w.w3, count);
      hi[x.high] += share(bin_grad, w.w4, count);
    }
  }
}

const char* op_name(const PoolGeometry& g, bool backward) {
  switch (g.pooling) {
    case Pooling::kMax:
      return backward ? "_roi_pool_backward" : "roi_pool";
    case Pooling::kPsAverage:
      return backward ? "_ps_roi_pool_backward" : "ps_roi_pool";
    case Pooling::kPsAlign:
      break;
  }
  return backward ? "_ps_roi_align_backward" : "ps_roi_align";
}

struct CpuKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) {
    return st == at::kBFloat16 ? at::kFloat : st;  // float16 in float16 arithmetic, as torchvision's CPU kernels
  }

  static void forward(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out, at::Tensor& index,
                      const PoolGeometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(out.scalar_type(), "roi_pool", [&] {
      using T = scalar_t;
      const T* r = rois.const_data_ptr<T>();
      const RoiTable<T> table(r, g, op_name(g, false));
      const T* in = input.const_data_ptr<T>();
      T* o = out.data_ptr<T>();
      int32_t* idx = index.data_ptr<int32_t>();
      const int64_t bins = g.pooled_h * g.pooled_w;
      if (g.pooling == Pooling::kMax) {  // (image, channel block) tasks, as roi_align's kernel
        constexpr int64_t L = kLanes<T>;
        const int64_t blocks = (g.channels + L - 1) / L, tasks = g.batch * blocks;
        const int64_t work = table.work * L + g.height * g.width * L * g.batch;  // reads, transposes
        at::parallel_for(0, tasks, RoiTable<T>::grain(work * blocks, tasks), [&](int64_t lo, int64_t hi) {
          cpu::AlignedVector<T> block(g.height * g.width * L), values(bins * L);
          std::vector<int32_t> argmax(bins * L);
          for (int64_t task = lo; task < hi; ++task) {
            const int64_t b = task / blocks, c0 = task % blocks * L, used = std::min(L, g.channels - c0);
            if (table.image_first[b] == table.image_first[b + 1]) continue;
            simd::dispatch([&](auto isa) {
              constexpr int kNative = decltype(isa)::kVectorBytes;
              to_block<kNative>(in, false, b, c0, used, g.channels, g.height, g.width, block.data());
              max_pool_block<kNative>(table, r, g, b, c0, used, block.data(), values.data(), argmax.data(), o, idx);
            });
          }
        });
        return;
      }
      const int64_t tasks = g.rois * g.out_channels;
      at::parallel_for(0, tasks, RoiTable<T>::grain(table.work * g.out_channels, tasks), [&](int64_t lo, int64_t hi) {
        for (int64_t task = lo; task < hi; ++task) {
          const int64_t k = task / g.out_channels, c = task % g.out_channels;
          pool_roi(r + 5 * k, in + table.image[k] * g.channels * g.height * g.width, c, g, o + task * bins,
                   idx + task * bins);
        }
      });
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax, at::Tensor& grad_input,
                       const PoolGeometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad.scalar_type(), "_roi_pool_backward", [&] {
      using T = scalar_t;
      const T* r = rois.const_data_ptr<T>();
      const RoiTable<T> table(r, g, op_name(g, true));
      const T* go = grad.const_data_ptr<T>();
      const int32_t* am = argmax.defined() ? argmax.const_data_ptr<int32_t>() : nullptr;
      T* gi = grad_input.data_ptr<T>();
      const int64_t plane_size = g.height * g.width, planes = g.batch * g.channels;
      at::parallel_for(0, planes, RoiTable<T>::grain(table.work * g.out_channels, planes), [&](int64_t lo, int64_t hi) {
        for (int64_t task = lo; task < hi; ++task) {
          const int64_t b = task / g.channels, c = task % g.channels;
          T* plane = gi + task * plane_size;
          std::fill(plane, plane + plane_size, T(0));
          for (int64_t i = table.image_first[b]; i < table.image_first[b + 1]; ++i) {
            const int64_t k = table.in_image[i];
            unpool_roi(r + 5 * k, k, go, am, c, g, plane);
          }
        }
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  PoolOps<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  PoolOps<CpuKernels>::register_all(m);
}

}  // namespace pydet::roi
