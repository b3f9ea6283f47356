// CUDA kernels of roi_align, multi_scale_roi_align and their backwards (front end: ops/roi_align.h;
// sampling: common/roi_align_math.h). One thread per output bin, as torchvision's kernels (each reads
// its RoI's level from the level table): the forward is each
// bin's sum in the CPU kernel's order (so the same bits in float32/float64); the backward adds with
// atomics, so gradients are within float rounding of the CPU's. float16/bfloat16 are computed in
// float32 (torchvision's CUDA kernel computes in float16).
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common/roi_align_math.h"
#include "cuda/launch.cuh"
#include "ops/roi_align.h"

namespace pydet::roi {
namespace {

// The feature maps (or their gradients) and their geometry, by value: one kernel argument.
template <class P>
struct LevelTable {
  P data[kMaxLevels];
  int64_t height[kMaxLevels], width[kMaxLevels];
  double scale[kMaxLevels];
  int64_t count;
};

template <class P>
LevelTable<P> level_table(const std::vector<at::Tensor>& tensors, const Geometry& g) {
  LevelTable<P> t{};
  t.count = static_cast<int64_t>(g.levels.size());
  for (int64_t l = 0; l < t.count; ++l) {
    t.data[l] = static_cast<P>(tensors[l].data_ptr());
    t.height[l] = g.levels[l].height;
    t.width[l] = g.levels[l].width;
    t.scale[l] = g.levels[l].spatial_scale;
  }
  return t;
}

// The RoI's batch index b and level l, or false (and level 0) for a bad one, after the device-side assert.
template <class T, class P>
__device__ bool locate(const T* roi, const int64_t* levels, int64_t k, const LevelTable<P>& t, int64_t batch,
                       int64_t& b, int64_t& l) {
  const T v = roi[0];
  l = levels ? levels[k] : 0;
  const bool valid = v >= T(0) && v < static_cast<T>(batch) && v == floor(v) && l >= 0 && l < t.count;
  CUDA_KERNEL_ASSERT(valid && "pydet.roi_align: a batch index or level out of range");
  b = valid ? static_cast<int64_t>(v) : 0;
  l = valid ? l : 0;
  return valid;
}

template <class T>
__global__ void forward_kernel(LevelTable<const T*> t, const T* rois, const int64_t* levels, int64_t channels,
                               int64_t batch, int64_t pooled_h, int64_t pooled_w, int64_t ratio, bool aligned,
                               int64_t n, T* out) {
  const int64_t bins = pooled_h * pooled_w;
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const int64_t pw = index % pooled_w, ph = (index / pooled_w) % pooled_h;
    const int64_t c = (index / bins) % channels, k = index / bins / channels;
    const T* roi = rois + 5 * k;
    int64_t b, l;
    const bool valid = locate(roi, levels, k, t, batch, b, l);
    const RoiGrid<T> r = roi_grid(roi, static_cast<T>(t.scale[l]), aligned, pooled_h, pooled_w, ratio);
    if (!valid || !r.finite) {
      out[index] = NAN;
      continue;
    }
    const int64_t height = t.height[l], width = t.width[l];
    const T* plane = t.data[l] + (b * channels + c) * height * width;
    const SampleRange ys = samples_inside(r.y, ph, height), xs = samples_inside(r.x, pw, width);
    T sum = T(0);
    for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
      const Tap<T> y = tap_at(sample_at(r.y, ph, iy), height);
      const T* lo = plane + y.low * width;
      const T* hi = plane + y.high * width;
      for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
        const Tap<T> x = tap_at(sample_at(r.x, pw, ix), width);
        sum = sum + interpolate(weights(y, x), lo[x.low], lo[x.high], hi[x.low], hi[x.high]);
      }
    }
    out[index] = sum / r.count;
  }
}

template <class T>
__global__ void backward_kernel(const T* grad, const T* rois, const int64_t* levels, LevelTable<T*> t, int64_t channels,
                                int64_t batch, int64_t pooled_h, int64_t pooled_w, int64_t ratio, bool aligned,
                                int64_t n) {
  const int64_t bins = pooled_h * pooled_w;
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const int64_t pw = index % pooled_w, ph = (index / pooled_w) % pooled_h;
    const int64_t c = (index / bins) % channels, k = index / bins / channels;
    const T* roi = rois + 5 * k;
    int64_t b, l;
    const bool valid = locate(roi, levels, k, t, batch, b, l);
    const RoiGrid<T> r = roi_grid(roi, static_cast<T>(t.scale[l]), aligned, pooled_h, pooled_w, ratio);
    if (!valid || !r.finite) continue;
    const int64_t height = t.height[l], width = t.width[l];
    T* plane = t.data[l] + (b * channels + c) * height * width;
    const T bin_grad = grad[index];
    const SampleRange ys = samples_inside(r.y, ph, height), xs = samples_inside(r.x, pw, width);
    for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
      const Tap<T> y = tap_at(sample_at(r.y, ph, iy), height);
      for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
        const Tap<T> x = tap_at(sample_at(r.x, pw, ix), width);
        const Weights<T> w = weights(y, x);
        atomicAdd(plane + y.low * width + x.low, share(bin_grad, w.w1, r.count));
        atomicAdd(plane + y.low * width + x.high, share(bin_grad, w.w2, r.count));
        atomicAdd(plane + y.high * width + x.low, share(bin_grad, w.w3, r.count));
        atomicAdd(plane + y.high * width + x.high, share(bin_grad, w.w4, r.count));
      }
    }
  }
}

const int64_t* levels_data(const at::Tensor& levels) {
  return levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr;
}

struct CudaKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) { return pydet::compute_dtype(st); }
  static constexpr bool kReadsChannelsLast = false;

  static void forward(const std::vector<at::Tensor>& features, const at::Tensor& rois, const at::Tensor& levels,
                      at::Tensor& out, const Geometry& g) {
    const c10::cuda::CUDAGuard guard(out.device());
    const int64_t n = out.numel();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "roi_align", [&] {
      forward_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          level_table<const scalar_t*>(features, g), rois.const_data_ptr<scalar_t>(), levels_data(levels), g.channels,
          g.batch, g.pooled_h, g.pooled_w, g.sampling_ratio, g.aligned, n, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& levels,
                       std::vector<at::Tensor>& grads, const Geometry& g) {
    const c10::cuda::CUDAGuard guard(grad.device());
    for (at::Tensor& gi : grads) gi.zero_();
    const int64_t n = grad.numel();
    if (n == 0) return;
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "_roi_align_backward", [&] {
      backward_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), levels_data(levels),
          level_table<scalar_t*>(grads, g), g.channels, g.batch, g.pooled_h, g.pooled_w, g.sampling_ratio, g.aligned,
          n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::roi
