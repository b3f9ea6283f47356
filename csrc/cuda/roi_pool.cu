// CUDA kernels of roi_pool, ps_roi_pool, ps_roi_align and their backwards (front end: ops/roi_pool.h;
// bins: common/roi_pool_math.h; ps_roi_align's sampling: common/roi_align_math.h). One thread per
// output bin, as torchvision's kernels: the forward reads the bin in the CPU kernel's order (so the
// same bits in float32/float64); the backward adds with atomics, so gradients are within float
// rounding of the CPU's. float16/bfloat16 are computed in float32.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>

#include "common/roi_align_math.h"
#include "common/roi_pool_math.h"
#include "cuda/launch.cuh"
#include "ops/roi_pool.h"

namespace pydet::roi {
namespace {

// Output bin `index`: RoI k, output channel c, bin (ph, pw), on image b reading input channel c_in;
// valid is false for a bad batch index (then b = 0), after the device-side assert.
struct Bin {
  int64_t k, c, ph, pw, b, c_in;
  bool valid;
};

template <class T>
__device__ Bin bin_at(int64_t index, const T* rois, const PoolGeometry& g) {
  Bin bin;
  const int64_t bins = g.pooled_h * g.pooled_w;
  bin.pw = index % g.pooled_w;
  bin.ph = (index / g.pooled_w) % g.pooled_h;
  bin.c = (index / bins) % g.out_channels;
  bin.k = index / bins / g.out_channels;
  const T v = rois[5 * bin.k];
  bin.valid = is_batch_index(v, g.batch);
  CUDA_KERNEL_ASSERT(bin.valid && "pydet.roi_pool: a batch index out of range");
  bin.b = bin.valid ? static_cast<int64_t>(v) : 0;
  bin.c_in = g.pooling == Pooling::kMax ? bin.c : (bin.c * g.pooled_h + bin.ph) * g.pooled_w + bin.pw;
  return bin;
}

// The bin's pixels (roi_pool, ps_roi_pool).
template <class T>
__device__ void pixel_bounds(const T* roi, const Bin& bin, const PoolGeometry& g, PixelRange& ys, PixelRange& xs,
                             bool& finite) {
  const bool max = g.pooling == Pooling::kMax;
  const PoolGrid<T> r = pool_grid(roi, static_cast<T>(g.spatial_scale), g.pooled_h, g.pooled_w, max);
  ys = pool_bin(r.y, bin.ph, g.height, max);
  xs = pool_bin(r.x, bin.pw, g.width, max);
  finite = r.finite;
}

template <class T>
__global__ void forward_kernel(const T* input, const T* rois, PoolGeometry g, int64_t n, T* out, int32_t* index) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const Bin bin = bin_at(i, rois, g);
    const T* roi = rois + 5 * bin.k;
    const T* plane = input + (bin.b * g.channels + bin.c_in) * g.height * g.width;
    index[i] = static_cast<int32_t>(bin.c_in);
    if (g.pooling == Pooling::kPsAlign) {
      const RoiGrid<T> r =
          roi_grid(roi, static_cast<T>(g.spatial_scale), true, g.pooled_h, g.pooled_w, g.sampling_ratio);
      if (!bin.valid || !r.finite) {
        out[i] = NAN;
        continue;
      }
      const SampleRange ys = samples_inside(r.y, bin.ph, g.height), xs = samples_inside(r.x, bin.pw, g.width);
      T sum = T(0);
      for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
        const Tap<T> y = tap_at(sample_at(r.y, bin.ph, iy), g.height);
        const T* lo = plane + y.low * g.width;
        const T* hi = plane + y.high * g.width;
        for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
          const Tap<T> x = tap_at(sample_at(r.x, bin.pw, ix), g.width);
          sum = sum + interpolate(weights(y, x), lo[x.low], lo[x.high], hi[x.low], hi[x.high]);
        }
      }
      out[i] = sum / static_cast<T>(r.y.grid * r.x.grid);
      continue;
    }
    PixelRange ys, xs;
    bool finite;
    pixel_bounds(roi, bin, g, ys, xs, finite);
    if (!bin.valid || !finite) {
      out[i] = NAN;
      if (g.pooling == Pooling::kMax) index[i] = -1;
      continue;
    }
    const bool empty = ys.end <= ys.begin || xs.end <= xs.begin;
    if (g.pooling == Pooling::kMax) {
      T best = empty ? T(0) : max_pool_floor<T>();
      int64_t at = -1;
      for (int64_t h = ys.begin; h < ys.end; ++h) {
        for (int64_t w = xs.begin; w < xs.end; ++w) {
          if (plane[h * g.width + w] > best) {
            best = plane[h * g.width + w];
            at = h * g.width + w;
          }
        }
      }
      out[i] = best;
      index[i] = static_cast<int32_t>(at);
      continue;
    }
    T sum = T(0);
    for (int64_t h = ys.begin; h < ys.end; ++h) {
      for (int64_t w = xs.begin; w < xs.end; ++w) sum += plane[h * g.width + w];
    }
    out[i] = empty ? T(0) : sum / static_cast<T>((ys.end - ys.begin) * (xs.end - xs.begin));
  }
}

template <class T>
__global__ void backward_kernel(const T* grad, const T* rois, const int32_t* argmax, PoolGeometry g, int64_t n,
                                T* grad_input) {
  const int64_t plane_size = g.height * g.width;
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const Bin bin = bin_at(i, rois, g);
    if (!bin.valid) continue;
    const T* roi = rois + 5 * bin.k;
    T* plane = grad_input + (bin.b * g.channels + bin.c_in) * plane_size;
    if (g.pooling == Pooling::kMax) {
      const int64_t pixel = argmax[i];
      CUDA_KERNEL_ASSERT(pixel >= -1 && pixel < plane_size && "pydet._roi_pool_backward: argmax out of range");
      if (pixel >= 0 && pixel < plane_size) atomicAdd(plane + pixel, grad[i]);
      continue;
    }
    if (g.pooling == Pooling::kPsAverage) {
      PixelRange ys, xs;
      bool finite;
      pixel_bounds(roi, bin, g, ys, xs, finite);
      if (!finite || ys.end <= ys.begin || xs.end <= xs.begin) continue;
      const T share_of_pixel = grad[i] / static_cast<T>((ys.end - ys.begin) * (xs.end - xs.begin));
      for (int64_t h = ys.begin; h < ys.end; ++h) {
        for (int64_t w = xs.begin; w < xs.end; ++w) atomicAdd(plane + h * g.width + w, share_of_pixel);
      }
      continue;
    }
    const RoiGrid<T> r = roi_grid(roi, static_cast<T>(g.spatial_scale), true, g.pooled_h, g.pooled_w, g.sampling_ratio);
    if (!r.finite) continue;
    const T count = static_cast<T>(r.y.grid * r.x.grid);
    const SampleRange ys = samples_inside(r.y, bin.ph, g.height), xs = samples_inside(r.x, bin.pw, g.width);
    for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
      const Tap<T> y = tap_at(sample_at(r.y, bin.ph, iy), g.height);
      for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
        const Tap<T> x = tap_at(sample_at(r.x, bin.pw, ix), g.width);
        const Weights<T> w = weights(y, x);
        atomicAdd(plane + y.low * g.width + x.low, share(grad[i], w.w1, count));
        atomicAdd(plane + y.low * g.width + x.high, share(grad[i], w.w2, count));
        atomicAdd(plane + y.high * g.width + x.low, share(grad[i], w.w3, count));
        atomicAdd(plane + y.high * g.width + x.high, share(grad[i], w.w4, count));
      }
    }
  }
}

struct CudaKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) { return pydet::compute_dtype(st); }

  static void forward(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out, at::Tensor& index,
                      const PoolGeometry& g) {
    const c10::cuda::CUDAGuard guard(out.device());
    const int64_t n = out.numel();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "roi_pool", [&] {
      forward_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), g, n, out.data_ptr<scalar_t>(),
          index.data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax, at::Tensor& grad_input,
                       const PoolGeometry& g) {
    const c10::cuda::CUDAGuard guard(grad.device());
    grad_input.zero_();
    const int64_t n = grad.numel();
    if (n == 0) return;
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "_roi_pool_backward", [&] {
      backward_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
          argmax.defined() ? argmax.const_data_ptr<int32_t>() : nullptr, g, n, grad_input.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  PoolOps<CudaKernels>::register_all(m);
}

}  // namespace pydet::roi
