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

// What every thread needs besides the level table and the tensors.
struct Pooling {
  int64_t channels, batch, pooled_h, pooled_w, sampling_ratio;
  bool aligned;
};

// The output bin `index` is: RoI k, channel c, bin (ph, pw) of its RoI on image b at level l, and
// that RoI's sampling grid; valid is false for a bad batch index or level (then b = l = 0), after
// the device-side assert.
template <class T>
struct Bin {
  int64_t k, c, ph, pw, b, l;
  RoiGrid<T> r;
  bool valid;
};

template <class T, class P>
__device__ Bin<T> bin_at(int64_t index, const T* rois, const int64_t* levels, const LevelTable<P>& t,
                         const Pooling& p) {
  Bin<T> bin;
  const int64_t bins = p.pooled_h * p.pooled_w;
  bin.pw = index % p.pooled_w;
  bin.ph = (index / p.pooled_w) % p.pooled_h;
  bin.c = (index / bins) % p.channels;
  bin.k = index / bins / p.channels;
  const T* roi = rois + 5 * bin.k;
  const T v = roi[0];
  const int64_t l = levels ? levels[bin.k] : 0;
  bin.valid = is_batch_index(v, p.batch) && l >= 0 && l < t.count;
  CUDA_KERNEL_ASSERT(bin.valid && "pydet.roi_align: a batch index or level out of range");
  bin.b = bin.valid ? static_cast<int64_t>(v) : 0;
  bin.l = bin.valid ? l : 0;
  bin.r = roi_grid(roi, static_cast<T>(t.scale[bin.l]), p.aligned, p.pooled_h, p.pooled_w, p.sampling_ratio);
  return bin;
}

template <class T>
__global__ void forward_kernel(LevelTable<const T*> t, const T* rois, const int64_t* levels, Pooling p, int64_t n,
                               T* out) {
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const Bin<T> bin = bin_at(index, rois, levels, t, p);
    if (!bin.valid || !bin.r.finite) {
      out[index] = NAN;
      continue;
    }
    const int64_t height = t.height[bin.l], width = t.width[bin.l];
    const T* plane = t.data[bin.l] + (bin.b * p.channels + bin.c) * height * width;
    const SampleRange ys = samples_inside(bin.r.y, bin.ph, height), xs = samples_inside(bin.r.x, bin.pw, width);
    T sum = T(0);
    for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
      const Tap<T> y = tap_at(sample_at(bin.r.y, bin.ph, iy), height);
      const T* lo = plane + y.low * width;
      const T* hi = plane + y.high * width;
      for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
        const Tap<T> x = tap_at(sample_at(bin.r.x, bin.pw, ix), width);
        sum = sum + interpolate(weights(y, x), lo[x.low], lo[x.high], hi[x.low], hi[x.high]);
      }
    }
    out[index] = sum / bin.r.count;
  }
}

template <class T>
__global__ void backward_kernel(const T* grad, const T* rois, const int64_t* levels, LevelTable<T*> t, Pooling p,
                                int64_t n) {
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const Bin<T> bin = bin_at(index, rois, levels, t, p);
    if (!bin.valid || !bin.r.finite) continue;
    const int64_t height = t.height[bin.l], width = t.width[bin.l];
    T* plane = t.data[bin.l] + (bin.b * p.channels + bin.c) * height * width;
    const T bin_grad = grad[index];
    const SampleRange ys = samples_inside(bin.r.y, bin.ph, height), xs = samples_inside(bin.r.x, bin.pw, width);
    for (int64_t iy = ys.begin; iy < ys.end; ++iy) {
      const Tap<T> y = tap_at(sample_at(bin.r.y, bin.ph, iy), height);
      for (int64_t ix = xs.begin; ix < xs.end; ++ix) {
        const Tap<T> x = tap_at(sample_at(bin.r.x, bin.pw, ix), width);
        const Weights<T> w = weights(y, x);
        atomicAdd(plane + y.low * width + x.low, share(bin_grad, w.w1, bin.r.count));
        atomicAdd(plane + y.low * width + x.high, share(bin_grad, w.w2, bin.r.count));
        atomicAdd(plane + y.high * width + x.low, share(bin_grad, w.w3, bin.r.count));
        atomicAdd(plane + y.high * width + x.high, share(bin_grad, w.w4, bin.r.count));
      }
    }
  }
}

Pooling pooling(const Geometry& g) {
  return Pooling{g.channels, g.batch, g.pooled_h, g.pooled_w, g.sampling_ratio, g.aligned};
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
          level_table<const scalar_t*>(features, g), rois.const_data_ptr<scalar_t>(), levels_data(levels), pooling(g),
          n, out.data_ptr<scalar_t>());
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
          level_table<scalar_t*>(grads, g), pooling(g), n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::roi
