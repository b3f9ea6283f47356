// CUDA kernels of paste_masks_in_image (both conventions) and masks_to_boxes (front end: ops/masks.h;
// resampling: common/mask_math.h). Pasting: one thread per output pixel, which finds its mask's region
// and taps (the same operations as the CPU kernel, so the same values). masks_to_boxes: one block per
// mask, reducing each thread's rows.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common/mask_math.h"
#include "cuda/launch.cuh"
#include "ops/masks.h"

namespace pydet::masks {
namespace {

template <class B, class T>
__global__ void paste_torchvision_kernel(const T* masks, const B* boxes, PasteGeometry g, int64_t n, T* out) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const int64_t x = i % g.width, y = i / g.width % g.height, k = i / g.width / g.height;
    const B* box = boxes + 4 * k;
    const B scale = static_cast<B>(g.scale);
    const PixelBox bx = expanded_axis(box[0], box[2], scale), by = expanded_axis(box[1], box[3], scale);
    const Span rows = clipped(by.first, by.last + 1, g.height), cols = clipped(bx.first, bx.last + 1, g.width);
    if (!finite_box(box) || y < rows.begin || y >= rows.end || x < cols.begin || x >= cols.end) {
      out[i] = T(0);
      continue;
    }
    const int64_t w = bx.last - bx.first + 1 > 1 ? bx.last - bx.first + 1 : 1;
    const int64_t h = by.last - by.first + 1 > 1 ? by.last - by.first + 1 : 1;
    const ResizeTap<T> ty = resize_tap<T>(g.mask_h, h, y - by.first), tx = resize_tap<T>(g.mask_w, w, x - bx.first);
    const T* mask = masks + k * g.mask_h * g.mask_w;
    const T* low = mask + ty.low * g.mask_w;
    const T* high = mask + ty.high * g.mask_w;
    out[i] = resized(ty, tx, low[tx.low], low[tx.high], high[tx.low], high[tx.high]);
  }
}

template <class B, class T>
__global__ void paste_detectron2_kernel(const T* masks, const B* boxes, PasteGeometry g, int64_t n, uint8_t* out) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const int64_t x = i % g.width, y = i / g.width % g.height, k = i / g.width / g.height;
    const B* box = boxes + 4 * k;
    const Span rows = sampled_region(box[1], box[3], g.height), cols = sampled_region(box[0], box[2], g.width);
    if (!finite_box(box) || y < rows.begin || y >= rows.end || x < cols.begin || x >= cols.end) {
      out[i] = 0;
      continue;
    }
    const GridTap<T> ty = grid_tap<B, T>(y, box[1], box[3], g.mask_h);
    const GridTap<T> tx = grid_tap<B, T>(x, box[0], box[2], g.mask_w);
    const int64_t stride = g.mask_w + 2;  // the zero-bordered mask's rows
    const T* mask = masks + k * (g.mask_h + 2) * stride;
    out[i] = thresholded(sampled(ty, tx, mask + ty.low * stride, mask + ty.high * stride), g.threshold);
  }
}

// One block per mask: each thread scans rows y = threadIdx.x, + blockDim.x, ...; then a shared-memory
// reduction of (x1, y1, x2, y2).
template <class M>
__global__ void boxes_kernel(const M* masks, int64_t height, int64_t width, float* boxes) {
  __shared__ int64_t lo_x[cuda::kThreads], lo_y[cuda::kThreads], hi_x[cuda::kThreads], hi_y[cuda::kThreads];
  const M* mask = masks + blockIdx.x * height * width;
  int64_t x1 = width, y1 = height, x2 = -1, y2 = -1;
  for (int64_t y = threadIdx.x; y < height; y += blockDim.x) {
    for (int64_t x = 0; x < width; ++x) {
      if (mask[y * width + x] != M(0)) {
        x1 = x < x1 ? x : x1;
        x2 = x > x2 ? x : x2;
        y1 = y < y1 ? y : y1;
        y2 = y > y2 ? y : y2;
      }
    }
  }
  lo_x[threadIdx.x] = x1;
  lo_y[threadIdx.x] = y1;
  hi_x[threadIdx.x] = x2;
  hi_y[threadIdx.x] = y2;
  __syncthreads();
  for (unsigned int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      const unsigned int o = threadIdx.x + stride;
      lo_x[threadIdx.x] = lo_x[o] < lo_x[threadIdx.x] ? lo_x[o] : lo_x[threadIdx.x];
      lo_y[threadIdx.x] = lo_y[o] < lo_y[threadIdx.x] ? lo_y[o] : lo_y[threadIdx.x];
      hi_x[threadIdx.x] = hi_x[o] > hi_x[threadIdx.x] ? hi_x[o] : hi_x[threadIdx.x];
      hi_y[threadIdx.x] = hi_y[o] > hi_y[threadIdx.x] ? hi_y[o] : hi_y[threadIdx.x];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const bool empty = hi_y[0] < 0;
    float* box = boxes + 4 * blockIdx.x;
    box[0] = empty ? 0.f : static_cast<float>(lo_x[0]);
    box[1] = empty ? 0.f : static_cast<float>(lo_y[0]);
    box[2] = empty ? 0.f : static_cast<float>(hi_x[0]);
    box[3] = empty ? 0.f : static_cast<float>(hi_y[0]);
  }
}

struct CudaKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) { return st == at::kDouble ? st : at::kFloat; }

  static void paste(const at::Tensor& masks, const at::Tensor& boxes, at::Tensor& out, const PasteGeometry& g) {
    const c10::cuda::CUDAGuard guard(out.device());
    const int64_t n = out.numel();
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(masks.scalar_type(), "paste_masks_in_image", [&] {
      using T = scalar_t;
      AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "paste_masks_in_image", [&] {
        using B = scalar_t;
        if (g.convention == Convention::kTorchvision) {
          paste_torchvision_kernel<B, T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(
              masks.const_data_ptr<T>(), boxes.const_data_ptr<B>(), g, n, out.data_ptr<T>());
        } else {
          paste_detectron2_kernel<B, T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream>>>(
              masks.const_data_ptr<T>(), boxes.const_data_ptr<B>(), g, n, static_cast<uint8_t*>(out.data_ptr()));
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }

  static void boxes_of(const at::Tensor& masks, at::Tensor& boxes) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    const int64_t n = masks.size(0);
    AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, masks.scalar_type(), "masks_to_boxes", [&] {
      boxes_kernel<scalar_t><<<static_cast<unsigned int>(n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          masks.const_data_ptr<scalar_t>(), masks.size(1), masks.size(2), boxes.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::masks
