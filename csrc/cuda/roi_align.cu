// CUDA kernels of roi_align and its backward (front end: ops/roi_align.h; sampling:
// common/roi_align_math.h). One thread per output bin, as torchvision's kernels: the forward is each
// bin's sum in the CPU kernel's order (so the same bits in float32/float64); the backward adds with
// atomics, so gradients are within float rounding of the CPU's. float16/bfloat16 are computed in
// float32 (torchvision's CUDA kernel computes in float16).
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>

#include "common/roi_align_math.h"
#include "cuda/launch.cuh"
#include "ops/roi_align.h"

namespace pydet::roi {
namespace {

// The RoI's batch index, or -1 for a bad one (after the device-side assert).
template <class T>
__device__ int64_t batch_of(const T* roi, int64_t batch) {
  const T b = roi[0];
  const bool valid = b >= T(0) && b < static_cast<T>(batch) && b == floor(b);
  CUDA_KERNEL_ASSERT(valid && "pydet.roi_align: rois[k, 0] must be an integer batch index in [0, N)");
  return valid ? static_cast<int64_t>(b) : -1;
}

template <class T>
__global__ void forward_kernel(const T* input, const T* rois, Geometry g, int64_t n, T* out) {
  const int64_t bins = g.pooled_h * g.pooled_w;
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const int64_t pw = index % g.pooled_w, ph = (index / g.pooled_w) % g.pooled_h;
    const int64_t c = (index / bins) % g.channels, k = index / bins / g.channels;
    const T* roi = rois + 5 * k;
    const int64_t b = batch_of(roi, g.batch);
    const RoiGrid<T> r =
        roi_grid(roi, static_cast<T>(g.spatial_scale), g.aligned, g.pooled_h, g.pooled_w, g.sampling_ratio);
    if (b < 0 || !r.finite) {
      out[index] = NAN;
      continue;
    }
    const T* plane = input + (b * g.channels + c) * g.height * g.width;
    const SampleRange ys = samples_inside(r.y, ph, g.height), xs = samples_inside(r.x, pw, g.width);
    T sum = T(0);
    for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
      const Tap<T> y = tap_at(sample_at(r.y, ph, iy), g.height);
      for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
        const Tap<T> x = tap_at(sample_at(r.x, pw, ix), g.width);
        const T* lo = plane + y.low * g.width;
        const T* hi = plane + y.high * g.width;
        sum = sum + interpolate(weights(y, x), lo[x.low], lo[x.high], hi[x.low], hi[x.high]);
      }
    }
    out[index] = sum / r.count;
  }
}

template <class T>
__global__ void backward_kernel(const T* grad, const T* rois, Geometry g, int64_t n, T* grad_input) {
  const int64_t bins = g.pooled_h * g.pooled_w;
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const int64_t pw = index % g.pooled_w, ph = (index / g.pooled_w) % g.pooled_h;
    const int64_t c = (index / bins) % g.channels, k = index / bins / g.channels;
    const T* roi = rois + 5 * k;
    const int64_t b = batch_of(roi, g.batch);
    const RoiGrid<T> r =
        roi_grid(roi, static_cast<T>(g.spatial_scale), g.aligned, g.pooled_h, g.pooled_w, g.sampling_ratio);
    if (b < 0 || !r.finite) continue;
    T* plane = grad_input + (b * g.channels + c) * g.height * g.width;
    const T bin_grad = grad[index];
    const SampleRange ys = samples_inside(r.y, ph, g.height), xs = samples_inside(r.x, pw, g.width);
    for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
      const Tap<T> y = tap_at(sample_at(r.y, ph, iy), g.height);
      for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
        const Tap<T> x = tap_at(sample_at(r.x, pw, ix), g.width);
        const Weights<T> w = weights(y, x);
        atomicAdd(plane + y.low * g.width + x.low, share(bin_grad, w.w1, r.count));
        atomicAdd(plane + y.low * g.width + x.high, share(bin_grad, w.w2, r.count));
        atomicAdd(plane + y.high * g.width + x.low, share(bin_grad, w.w3, r.count));
        atomicAdd(plane + y.high * g.width + x.high, share(bin_grad, w.w4, r.count));
      }
    }
  }
}

struct CudaKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) { return pydet::compute_dtype(st); }
  static constexpr bool kReadsChannelsLast = false;

  static void forward(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out, const Geometry& g) {
    const c10::cuda::CUDAGuard guard(input.device());
    const int64_t n = out.numel();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align", [&] {
      forward_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), g, n, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input, const Geometry& g) {
    const c10::cuda::CUDAGuard guard(grad.device());
    grad_input.zero_();
    const int64_t n = grad.numel();
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "_roi_align_backward", [&] {
      backward_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), g, n, grad_input.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::roi
