// CUDA kernels of deform_conv2d's sampling, forward and backward (front end and GEMMs:
// ops/deform_conv.h; sampling math: common/deform_conv_math.h). One thread per (pixel, tap, channel)
// for the columns and the input's gradient, so neighbouring threads read and write neighbouring
// channels of the channels_last input; the input's gradient is added with atomics (as torchvision's
// col2im), so it is within float rounding of the CPU's. One thread per (pixel, offset group, tap) for
// the offset and mask gradients, summing the group's channels in torchvision's order.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common/deform_conv_math.h"
#include "cuda/launch.cuh"
#include "ops/deform_conv.h"

namespace pydet::deform {
namespace {

// Corner i's value of channel c (0 outside the map).
template <class T>
__device__ __forceinline__ T corner_value(const Sample<T>& s, int i, const T* image, int64_t channels, int64_t c) {
  return s.corner[i] >= 0 ? image[s.corner[i] * channels + c] : T(0);
}

template <class T>
__global__ void columns_kernel(const T* input, const T* offset, const T* mask, Geometry g, int64_t first, int64_t n,
                               T* columns) {
  const int64_t taps = g.taps(), co = g.offset_group_channels();
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const int64_t c = index % g.channels, k = (index / g.channels) % taps, i = index / g.channels / taps;
    const Pixel px = pixel_at(g, first + i);
    const TapSample<T> t = tap_at(g, offset, mask, px, c / co, k);
    const T* image = input + px.b * g.height * g.width * g.channels;
    T value = T(0);
    if (t.s.inside) {
      value = interpolate(t.s, corner_value(t.s, 0, image, g.channels, c), corner_value(t.s, 1, image, g.channels, c),
                          corner_value(t.s, 2, image, g.channels, c), corner_value(t.s, 3, image, g.channels, c));
    }
    columns[i * g.column_width() + g.column(c, k)] = t.mask * value;
  }
}

template <class T>
__global__ void grad_input_kernel(const T* offset, const T* mask, const T* grad_columns, Geometry g, int64_t first,
                                  int64_t n, T* grad_input) {
  const int64_t taps = g.taps(), co = g.offset_group_channels();
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const int64_t c = index % g.channels, k = (index / g.channels) % taps, i = index / g.channels / taps;
    const Pixel px = pixel_at(g, first + i);
    const TapSample<T> t = tap_at(g, offset, mask, px, c / co, k);
    if (!t.s.inside) continue;
    const T grad = grad_columns[i * g.column_width() + g.column(c, k)];
    T* image = grad_input + px.b * g.height * g.width * g.channels;
    for (int corner = 0; corner < 4; ++corner) {
      if (t.s.corner[corner] < 0 || t.s.w[corner] == T(0)) continue;
      atomicAdd(image + t.s.corner[corner] * g.channels + c, (t.mask * t.s.w[corner]) * grad);
    }
  }
}

template <class T>
__global__ void coordinate_grads_kernel(const T* input, const T* offset, const T* mask, const T* grad_columns,
                                        Geometry g, int64_t first, int64_t n, T* grad_offset, T* grad_mask) {
  const int64_t taps = g.taps(), co = g.offset_group_channels();
  for (int64_t index = cuda::global_index(); index < n; index += cuda::grid_stride()) {
    const int64_t k = index % taps, o = (index / taps) % g.offset_groups, i = index / taps / g.offset_groups;
    const Pixel px = pixel_at(g, first + i);
    const TapSample<T> t = tap_at(g, offset, mask, px, o, k);
    const T* image = input + px.b * g.height * g.width * g.channels;
    const T* grad_row = grad_columns + i * g.column_width();
    T sy = T(0), sx = T(0), sm = T(0);
    for (int64_t c = o * co; c < (o + 1) * co; ++c) {
      const T v0 = corner_value(t.s, 0, image, g.channels, c), v1 = corner_value(t.s, 1, image, g.channels, c);
      const T v2 = corner_value(t.s, 2, image, g.channels, c), v3 = corner_value(t.s, 3, image, g.channels, c);
      const T grad = grad_row[g.column(c, k)];
      sy += (t.mask * d_dy(t.s, v0, v1, v2, v3)) * grad;
      sx += (t.mask * d_dx(t.s, v0, v1, v2, v3)) * grad;
      if (g.use_mask && t.s.inside) sm += grad * interpolate(t.s, v0, v1, v2, v3);
    }
    const int64_t at = offset_at(g, px, o, k);
    grad_offset[at] = sy;
    grad_offset[at + g.plane()] = sx;
    if (g.use_mask) grad_mask[mask_at(g, px, o, k)] = sm;
  }
}

struct CudaKernels {
  static int64_t column_bytes() { return int64_t(256) << 20; }

  static void columns(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, int64_t first,
                      at::Tensor& columns, const Geometry& g) {
    const c10::cuda::CUDAGuard guard(columns.device());
    const int64_t n = columns.size(0) * g.taps() * g.channels;
    if (n == 0) return;
    AT_DISPATCH_FLOATING_TYPES(columns.scalar_type(), "deform_conv2d", [&] {
      columns_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
          g.use_mask ? mask.const_data_ptr<scalar_t>() : nullptr, g, first, n, columns.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void columns_backward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, int64_t first,
                               const at::Tensor& grad_columns, at::Tensor& grad_input, at::Tensor& grad_offset,
                               at::Tensor& grad_mask, const Geometry& g) {
    const c10::cuda::CUDAGuard guard(grad_columns.device());
    const int64_t count = grad_columns.size(0);
    const int64_t n_values = count * g.taps() * g.channels, n_taps = count * g.offset_groups * g.taps();
    if (n_taps == 0) return;
    AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "_deform_conv2d_backward", [&] {
      const scalar_t* msk = g.use_mask ? mask.const_data_ptr<scalar_t>() : nullptr;
      const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
      if (n_values > 0) {
        grad_input_kernel<scalar_t><<<cuda::blocks_for(n_values), cuda::kThreads, 0, stream>>>(
            offset.const_data_ptr<scalar_t>(), msk, grad_columns.const_data_ptr<scalar_t>(), g, first, n_values,
            grad_input.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      coordinate_grads_kernel<scalar_t><<<cuda::blocks_for(n_taps), cuda::kThreads, 0, stream>>>(
          input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(), msk,
          grad_columns.const_data_ptr<scalar_t>(), g, first, n_taps, grad_offset.data_ptr<scalar_t>(),
          g.use_mask ? grad_mask.data_ptr<scalar_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::deform
