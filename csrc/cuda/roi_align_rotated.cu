// CUDA kernels of roi_align_rotated and its backward (front end: ops/roi_align_rotated.h; sampling:
// common/roi_align_rotated_math.h). One thread per output bin, as detectron2's kernels: the forward is
// each bin's sum in the CPU kernel's order (so the same bits in float32/float64); the backward adds
// with atomics, so gradients are within float rounding of the CPU's. float16/bfloat16 are computed
// in float32.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>

#include "common/roi_align_rotated_math.h"
#include "cuda/launch.cuh"
#include "ops/roi_align_rotated.h"

namespace pydet::roi {
namespace {

// Output bin `index`: RoI k, channel c, bin (ph, pw), on image b with the RoI's grid; valid is false for
// a bad batch index or a negative size (then b = 0), after the device-side assert.
template <class T>
struct RotatedBin {
  int64_t k, c, ph, pw, b;
  RotatedGrid<T> r;
  bool valid;
};

template <class T>
__device__ RotatedBin<T> rotated_bin_at(int64_t index, const T* rois, const RotatedGeometry& g) {
  RotatedBin<T> bin;
  const int64_t bins = g.pooled_h * g.pooled_w;
  bin.pw = index % g.pooled_w;
  bin.ph = (index / g.pooled_w) % g.pooled_h;
  bin.c = (index / bins) % g.channels;
  bin.k = index / bins / g.channels;
  const T* roi = rois + 6 * bin.k;
  bin.r = rotated_grid(roi, static_cast<T>(g.spatial_scale), g.pooled_h, g.pooled_w, g.sampling_ratio);
  bin.valid = is_batch_index(roi[0], g.batch) && bin.r.sized;
  CUDA_KERNEL_ASSERT(bin.valid && "pydet.roi_align_rotated: a batch index out of range or a negative size");
  bin.b = bin.valid ? static_cast<int64_t>(roi[0]) : 0;
  return bin;
}

template <class T>
__global__ void forward_kernel(const T* input, const T* rois, RotatedGeometry g, int64_t n, T* out) {
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const RotatedBin<T> bin = rotated_bin_at(index, rois, g);
    if (!bin.valid || !bin.r.finite) {
      out[index] = NAN;
      continue;
    }
    const T* plane = input + (bin.b * g.channels + bin.c) * g.height * g.width;
    T sum = T(0);
    for (int64_t iy = 0; iy < bin.r.grid_h; ++iy) {
      for (int64_t ix = 0; ix < bin.r.grid_w; ++ix) {
        const Point<T> p = rotated_sample(bin.r, bin.ph, bin.pw, iy, ix);
        if (!sample_inside(p, g.height, g.width)) continue;
        const Tap<T> y = tap_at(p.y, g.height), x = tap_at(p.x, g.width);
        const T* lo = plane + y.low * g.width;
        const T* hi = plane + y.high * g.width;
        sum = sum + interpolate(weights(y, x), lo[x.low], lo[x.high], hi[x.low], hi[x.high]);
      }
    }
    out[index] = sum / bin.r.count;
  }
}

template <class T>
__global__ void backward_kernel(const T* grad, const T* rois, RotatedGeometry g, int64_t n, T* grad_input) {
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const RotatedBin<T> bin = rotated_bin_at(index, rois, g);
    if (!bin.valid || !bin.r.finite) continue;
    T* plane = grad_input + (bin.b * g.channels + bin.c) * g.height * g.width;
    const T bin_grad = grad[index];
    for (int64_t iy = 0; iy < bin.r.grid_h; ++iy) {
      for (int64_t ix = 0; ix < bin.r.grid_w; ++ix) {
        const Point<T> p = rotated_sample(bin.r, bin.ph, bin.pw, iy, ix);
        if (!sample_inside(p, g.height, g.width)) continue;
        const Tap<T> y = tap_at(p.y, g.height), x = tap_at(p.x, g.width);
        const Weights<T> w = weights(y, x);
        atomicAdd(plane + y.low * g.width + x.low, share(bin_grad, w.w1, bin.r.count));
        atomicAdd(plane + y.low * g.width + x.high, share(bin_grad, w.w2, bin.r.count));
        atomicAdd(plane + y.high * g.width + x.low, share(bin_grad, w.w3, bin.r.count));
        atomicAdd(plane + y.high * g.width + x.high, share(bin_grad, w.w4, bin.r.count));
      }
    }
  }
}

struct CudaKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) { return pydet::compute_dtype(st); }

  static void forward(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out, const RotatedGeometry& g) {
    const c10::cuda::CUDAGuard guard(out.device());
    const int64_t n = out.numel();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "roi_align_rotated", [&] {
      forward_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), g, n, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input,
                       const RotatedGeometry& g) {
    const c10::cuda::CUDAGuard guard(grad.device());
    grad_input.zero_();
    const int64_t n = grad.numel();
    if (n == 0) return;
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "_roi_align_rotated_backward", [&] {
      backward_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), g, n, grad_input.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  RotatedOps<CudaKernels>::register_all(m);
}

}  // namespace pydet::roi
