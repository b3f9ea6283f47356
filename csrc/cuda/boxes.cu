// CUDA kernels for box_area, box_convert, clip_boxes_to_image, remove_small_boxes (+ backward): one
// thread per box, grid-stride loops, 64-bit indices. Formulas: common/box_math.h; front ends:
// ops/boxes.h.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/nonzero.h>
#include <torch/library.h>

#include "common/box_math.h"
#include "common/rows.h"
#include "cuda/launch.cuh"
#include "ops/boxes.h"

namespace pydet::boxes {
namespace {

using cuda::global_index;
using cuda::grid_stride;

template <class T>
__global__ void area_kernel(BoxRows<T> in, BoxFormat fmt, T* out) {
  for (int64_t k = global_index(); k < in.size; k += grid_stride()) out[k] = box_area(fmt, in[k]);
}

template <class T>
__global__ void area_backward_kernel(const T* grad, int64_t grad_stride, BoxRows<T> in, BoxFormat fmt, T* out) {
  for (int64_t k = global_index(); k < in.size; k += grid_stride()) {
    const auto a = box_area(fmt, seed_box(in[k]));
    const T g = grad[k * grad_stride];
    store_row(out, k, Box4<T>{g * a.d[0], g * a.d[1], g * a.d[2], g * a.d[3]});
  }
}

template <class T>
__global__ void convert_kernel(BoxRows<T> in, T* out, BoxFormat fi, BoxFormat fo) {
  for (int64_t k = global_index(); k < in.size; k += grid_stride())
    store_row(out, k, from_xyxy(fo, to_xyxy(fi, in[k])));
}

template <class T>
__global__ void convert_backward_kernel(BoxRows<T> grad, T* out, BoxFormat fi, BoxFormat fo) {
  // Linear conversions: the Jacobian is the same everywhere.
  const auto jac = from_xyxy(fo, to_xyxy(fi, seed_box(Box4<T>{0, 0, 0, 0})));
  for (int64_t k = global_index(); k < grad.size; k += grid_stride()) store_row(out, k, pull_back(jac, grad[k]));
}

template <class T>
__global__ void clip_kernel(BoxRows<T> in, T* out, T height, T width) {
  for (int64_t k = global_index(); k < in.size; k += grid_stride()) store_row(out, k, clip_box(in[k], height, width));
}

template <class T>
__global__ void clip_backward_kernel(BoxRows<T> grad, BoxRows<T> in, T* out, T height, T width) {
  for (int64_t k = global_index(); k < in.size; k += grid_stride()) {
    store_row(out, k, pull_back(clip_box(seed_box(in[k]), height, width), grad[k]));
  }
}

template <class T>
__global__ void large_mask_kernel(BoxRows<T> in, T min_size, bool* mask) {
  for (int64_t k = global_index(); k < in.size; k += grid_stride()) {
    const Box4<T> q = in[k];
    mask[k] = (q.c - q.a) >= min_size && (q.d - q.b) >= min_size;
  }
}

struct CudaKernels {
  static void area(const at::Tensor& boxes, at::Tensor& out, BoxFormat fmt) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "box_area", [&] {
      const BoxRows<scalar_t> in(boxes);
      area_kernel<<<cuda::blocks_for(in.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          in, fmt, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void area_backward(const at::Tensor& grad, const at::Tensor& boxes, at::Tensor& grad_boxes, BoxFormat fmt) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "box_area_backward", [&] {
      const BoxRows<scalar_t> in(boxes);
      area_backward_kernel<<<cuda::blocks_for(in.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          grad.const_data_ptr<scalar_t>(), grad.stride(0), in, fmt, grad_boxes.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void convert(const at::Tensor& boxes, at::Tensor& out, BoxFormat fi, BoxFormat fo) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "box_convert", [&] {
      const BoxRows<scalar_t> in(boxes);
      convert_kernel<<<cuda::blocks_for(in.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          in, out.data_ptr<scalar_t>(), fi, fo);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void convert_backward(const at::Tensor& grad, at::Tensor& grad_boxes, BoxFormat fi, BoxFormat fo) {
    const c10::cuda::CUDAGuard guard(grad.device());
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "box_convert_backward", [&] {
      const BoxRows<scalar_t> g(grad);
      convert_backward_kernel<<<cuda::blocks_for(g.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          g, grad_boxes.data_ptr<scalar_t>(), fi, fo);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void clip(const at::Tensor& boxes, at::Tensor& out, double height, double width) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "clip_boxes_to_image", [&] {
      const BoxRows<scalar_t> in(boxes);
      clip_kernel<<<cuda::blocks_for(in.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          in, out.data_ptr<scalar_t>(), scalar_t(height), scalar_t(width));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void clip_backward(const at::Tensor& grad, const at::Tensor& boxes, at::Tensor& grad_boxes, double height,
                            double width) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "clip_boxes_to_image_backward", [&] {
      const BoxRows<scalar_t> in(boxes), g(grad);
      clip_backward_kernel<<<cuda::blocks_for(in.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          g, in, grad_boxes.data_ptr<scalar_t>(), scalar_t(height), scalar_t(width));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  // The number of kept boxes decides the output size, so this op synchronises with the host, as
  // torchvision's remove_small_boxes (torch.where) does.
  static at::Tensor keep_large(const at::Tensor& boxes, double min_size) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    at::Tensor mask = at::empty({boxes.size(0)}, boxes.options().dtype(at::kBool));
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "remove_small_boxes", [&] {
      const BoxRows<scalar_t> in(boxes);
      large_mask_kernel<<<cuda::blocks_for(in.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          in, scalar_t(min_size), mask.data_ptr<bool>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return at::nonzero(mask).view({-1});
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::boxes
