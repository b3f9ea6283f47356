// CPU kernels of roi_align_rotated and its backward (front end: ops/roi_align_rotated.h; sampling:
// common/roi_align_rotated_math.h).
//
// As roi_align's kernels (cpu/roi_align.cpp), both work on one image's channel block at a time
// (kLanes channels transposed to [pixels][kLanes], cpu/roi_lanes.h; blocks in parallel) and pool every
// RoI of that image from it: each sample's rotation and taps are computed once per block and applied
// as one vector operation across its channels, on a block that stays in cache across the RoIs.
// detectron2's kernel walks RoI by RoI and channel by channel on one thread, missing the cache on
// almost every sample of a large feature map. The backward scatters into such a block in detectron2's
// order (RoI, bin, sample, corner): no atomics, and results that do not depend on the thread count.
// Each lane computes its channel's sums with detectron2's operations in its order, so values are its
// bits. float16 is computed in float16, as there.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/roi_align_rotated_math.h"
#include "cpu/memory.h"
#include "cpu/roi_lanes.h"
#include "ops/roi_align_rotated.h"

namespace pydet::roi {
namespace {

// Lane-vector operations (samples and transposed pixels) one task should have before a call goes
// parallel: tens of microseconds.
constexpr int64_t kGrainWork = 1 << 15;

// Each RoI's grid and image (checked), the RoIs of each image in increasing order, and the samples of
// all RoIs (for the grain).
template <class T>
struct RotatedTable {
  std::vector<RotatedGrid<T>> grids;
  std::vector<int64_t> image, in_image, image_first;
  int64_t samples = 0;

  RotatedTable(const T* rois, const RotatedGeometry& g, const char* op)
      : grids(g.rois), image(g.rois), in_image(g.rois), image_first(g.batch + 2, 0) {
    for (int64_t k = 0; k < g.rois; ++k) {
      const T* roi = rois + 6 * k;
      if (!is_batch_index(roi[0], g.batch)) fail_batch_index(op, k, static_cast<double>(roi[0]), g.batch);
      grids[k] = rotated_grid(roi, static_cast<T>(g.spatial_scale), g.pooled_h, g.pooled_w, g.sampling_ratio);
      if (!grids[k].sized) {
        fail_rotated_size(op, k, static_cast<double>(roi[3] * static_cast<T>(g.spatial_scale)),
                          static_cast<double>(roi[4] * static_cast<T>(g.spatial_scale)));
      }
      image[k] = static_cast<int64_t>(static_cast<compare_t<T>>(roi[0]));
      ++image_first[image[k] + 2];
      samples += g.pooled_h * g.pooled_w * (1 + grids[k].grid_h * grids[k].grid_w);
    }
    for (int64_t b = 0; b < g.batch; ++b) image_first[b + 2] += image_first[b + 1];
    for (int64_t k = 0; k < g.rois; ++k) in_image[image_first[image[k] + 1]++] = k;
  }
};

// f(y_tap, x_tap) for every sample of bin (ph, pw) inside the feature map, in detectron2's order.
template <class T, class F>
PYDET_SIMD_INLINE void for_each_sample(const RotatedGrid<T>& r, int64_t ph, int64_t pw, const RotatedGeometry& g,
                                       const F& f) {
  for (int64_t iy = 0; iy < r.grid_h; ++iy) {
    for (int64_t ix = 0; ix < r.grid_w; ++ix) {
      const Point<T> p = rotated_sample(r, ph, pw, iy, ix);
      if (sample_inside(p, g.height, g.width)) f(tap_at(p.y, g.height), tap_at(p.x, g.width));
    }
  }
}

// Every RoI of image b from its channel block [c0, c0 + used) (width pixels a row): bins into
// tile[bin * L + lane], then out[k, c0 + lane] bin by bin.
template <int kNative, class T>
PYDET_SIMD_INLINE void pool_block(const RotatedTable<T>& table, const RotatedGeometry& g, int64_t b, int64_t c0,
                                  int64_t used, const T* block, T* tile, T* out) {
  constexpr int64_t L = kLanes<T>;
  const int64_t bins = g.pooled_h * g.pooled_w;
  for (int64_t i = table.image_first[b]; i < table.image_first[b + 1]; ++i) {
    const int64_t k = table.in_image[i];
    const RotatedGrid<T>& r = table.grids[k];
    for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
      for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
        Lanes<kNative, T> sum{};
        for_each_sample(r, ph, pw, g, [&](const Tap<T>& y, const Tap<T>& x) {
          const T* lo = block + y.low * g.width * L;
          const T* hi = block + y.high * g.width * L;
          sum =
              add_sample<kNative>(sum, weights(y, x), lo + x.low * L, lo + x.high * L, hi + x.low * L, hi + x.high * L);
        });
        store_mean<kNative>(tile + (ph * g.pooled_w + pw) * L, sum, r.count);
      }
    }
    if (!r.finite) std::fill(tile, tile + bins * L, std::numeric_limits<T>::quiet_NaN());
    tile_to_rows(tile, used, bins, out + (k * g.channels + c0) * bins);
  }
}

// The gradient of image b's channel block [c0, c0 + used) from every RoI of that image, into the zeroed
// block, in detectron2's order; tile holds one RoI's bin gradients as [bin][L].
template <class T>
PYDET_SIMD_INLINE void scatter_block(const RotatedTable<T>& table, const RotatedGeometry& g, int64_t b, int64_t c0,
                                     int64_t used, const T* grad, T* tile, T* block) {
  constexpr int64_t L = kLanes<T>;
  const int64_t bins = g.pooled_h * g.pooled_w;
  for (int64_t i = table.image_first[b]; i < table.image_first[b + 1]; ++i) {
    const int64_t k = table.in_image[i];
    const RotatedGrid<T>& r = table.grids[k];
    if (!r.finite) continue;
    rows_to_tile(grad + (k * g.channels + c0) * bins, used, bins, tile);
    for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
      for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
        const T* gv = tile + (ph * g.pooled_w + pw) * L;
        for_each_sample(r, ph, pw, g, [&](const Tap<T>& y, const Tap<T>& x) {
          const Weights<T> w = weights(y, x);
          T* lo = block + y.low * g.width * L;
          T* hi = block + y.high * g.width * L;
          // One corner after the other: at the last row or column two corners are one pixel.
          add_share(lo + x.low * L, gv, w.w1, r.count);
          add_share(lo + x.high * L, gv, w.w2, r.count);
          add_share(hi + x.low * L, gv, w.w3, r.count);
          add_share(hi + x.high * L, gv, w.w4, r.count);
        });
      }
    }
  }
}

struct CpuKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) {
    return st == at::kBFloat16 ? at::kFloat : st;  // float16 in float16 arithmetic, as detectron2's CPU kernel
  }

  // f(b, c0, used, block, tile) for every (image, channel block) task, in parallel; block and tile are
  // the task's scratch: [H * W][L] and [PH * PW][L].
  template <class T, class F>
  static void for_each_block(const RotatedTable<T>& table, const RotatedGeometry& g, const F& f) {
    constexpr int64_t L = kLanes<T>;
    const int64_t blocks = (g.channels + L - 1) / L, tasks = g.batch * blocks;
    const int64_t per_task = std::max<int64_t>(1, (table.samples / std::max<int64_t>(g.batch, 1)) + g.height * g.width);
    at::parallel_for(0, tasks, std::max<int64_t>(1, kGrainWork / per_task), [&](int64_t begin, int64_t end) {
      cpu::AlignedVector<T> block(g.height * g.width * L), tile(g.pooled_h * g.pooled_w * L, T(0));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / blocks, c0 = task % blocks * L;
        f(b, c0, std::min(L, g.channels - c0), block.data(), tile.data());
      }
    });
  }

  static void forward(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out, const RotatedGeometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(out.scalar_type(), "roi_align_rotated", [&] {
      using T = scalar_t;
      const RotatedTable<T> table(rois.const_data_ptr<T>(), g, "roi_align_rotated");
      const T* in = input.const_data_ptr<T>();
      T* o = out.data_ptr<T>();
      for_each_block(table, g, [&](int64_t b, int64_t c0, int64_t used, T* block, T* tile) {
        if (table.image_first[b] == table.image_first[b + 1]) return;
        simd::dispatch([&](auto isa) {
          constexpr int kNative = decltype(isa)::kVectorBytes;
          to_block<kNative>(in, false, b, c0, used, g.channels, g.height, g.width, block);
          pool_block<kNative>(table, g, b, c0, used, block, tile, o);
        });
      });
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input,
                       const RotatedGeometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad.scalar_type(), "_roi_align_rotated_backward", [&] {
      using T = scalar_t;
      const RotatedTable<T> table(rois.const_data_ptr<T>(), g, "_roi_align_rotated_backward");
      const T* go = grad.const_data_ptr<T>();
      T* gi = grad_input.data_ptr<T>();
      const int64_t plane = g.height * g.width;
      for_each_block(table, g, [&](int64_t b, int64_t c0, int64_t used, T* block, T* tile) {
        T* planes = gi + (b * g.channels + c0) * plane;
        if (table.image_first[b] == table.image_first[b + 1]) {  // no RoI on this image: no gradient
          std::fill(planes, planes + used * plane, T(0));
          return;
        }
        std::fill(block, block + plane * kLanes<T>, T(0));
        simd::dispatch([&](auto isa) {
          scatter_block(table, g, b, c0, used, go, tile, block);
          from_block<decltype(isa)::kVectorBytes>(block, used, g.height, g.width, planes);
        });
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  RotatedOps<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  RotatedOps<CpuKernels>::register_all(m);
}

}  // namespace pydet::roi
