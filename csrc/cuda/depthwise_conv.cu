// CUDA kernels of depthwise_conv2d and its backward (front end and semantics: ops/depthwise_conv.h).
// float32/float64 and float16/bfloat16 natively, accumulating in float32 (at::opmath_type).
//   forward:      one thread per output element: the taps, bias and activation in registers.
//   grad_pre:     dL/d(pre-activation) = grad * act'(recomputed pre-activation), when an activation is fused.
//   grad_input:   one thread per input element, gathering the outputs whose taps cover it.
//   grad_weight:  one block per (channel, tap) and one per channel for the bias, reducing over
//                 (n, oh, ow) in a fixed order (strided per-thread sums, then a shared-memory tree),
//                 so results are deterministic.
// Indices are 64-bit.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/activation.h"
#include "cuda/launch.cuh"
#include "ops/depthwise_conv.h"

namespace pydet::depthwise {
namespace {

template <class T>
using Acc = at::opmath_type<T>;

template <class T>
__device__ __forceinline__ Acc<T> pre_activation(const T* __restrict__ in, const T* __restrict__ w, Acc<T> bias,
                                                 const Geometry& g, int64_t plane, int64_t c, int64_t oh, int64_t ow) {
  Acc<T> acc = bias;
  const T* ip = in + plane * g.h * g.w;
  const T* wp = w + c * g.kh * g.kw;
  for (int64_t kh = 0; kh < g.kh; ++kh) {
    const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
    if (ih < 0 || ih >= g.h) continue;
    for (int64_t kw = 0; kw < g.kw; ++kw) {
      const int64_t iw = ow * g.sw - g.pw + kw * g.dw;
      if (iw < 0 || iw >= g.w) continue;
      acc += Acc<T>(wp[kh * g.kw + kw]) * Acc<T>(ip[ih * g.w + iw]);
    }
  }
  return acc;
}

template <Activation A, class T>
__global__ void forward_kernel(const T* __restrict__ in, const T* __restrict__ w, const T* __restrict__ bias,
                               Geometry g, int64_t total, T* __restrict__ out) {
  for (int64_t i = cuda::global_index(); i < total; i += cuda::grid_stride()) {
    const int64_t ow = i % g.ow, oh = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh), c = plane % g.c;
    out[i] = T(activate<A>(pre_activation(in, w, Acc<T>(bias[c]), g, plane, c, oh, ow)));
  }
}

template <Activation A, class T>
__global__ void grad_pre_kernel(const T* __restrict__ grad, const T* __restrict__ in, const T* __restrict__ w,
                                const T* __restrict__ bias, Geometry g, int64_t total, T* __restrict__ out) {
  for (int64_t i = cuda::global_index(); i < total; i += cuda::grid_stride()) {
    const int64_t ow = i % g.ow, oh = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh), c = plane % g.c;
    const Acc<T> pre = pre_activation(in, w, Acc<T>(bias[c]), g, plane, c, oh, ow);
    out[i] = T(Acc<T>(grad[i]) * activate_grad<A>(pre));
  }
}

template <class T>
__global__ void grad_input_kernel(const T* __restrict__ gp, const T* __restrict__ w, Geometry g, int64_t total,
                                  T* __restrict__ gi) {
  for (int64_t i = cuda::global_index(); i < total; i += cuda::grid_stride()) {
    const int64_t iw = i % g.w, ih = (i / g.w) % g.h, plane = i / (g.w * g.h), c = plane % g.c;
    const T* gpp = gp + plane * g.oh * g.ow;
    const T* wp = w + c * g.kh * g.kw;
    Acc<T> acc = 0;
    for (int64_t kh = 0; kh < g.kh; ++kh) {
      const int64_t th = ih + g.ph - kh * g.dh;  // = oh * sh
      if (th < 0 || th % g.sh != 0 || th / g.sh >= g.oh) continue;
      for (int64_t kw = 0; kw < g.kw; ++kw) {
        const int64_t tw = iw + g.pw - kw * g.dw;
        if (tw < 0 || tw % g.sw != 0 || tw / g.sw >= g.ow) continue;
        acc += Acc<T>(wp[kh * g.kw + kw]) * Acc<T>(gpp[(th / g.sh) * g.ow + tw / g.sw]);
      }
    }
    gi[i] = T(acc);
  }
}

// blockIdx.x = channel, blockIdx.y = tap (taps = kh * kw) or the bias (blockIdx.y == taps).
template <class T>
__global__ void grad_weight_kernel(const T* __restrict__ gp, const T* __restrict__ in, Geometry g, T* __restrict__ gw,
                                   T* __restrict__ gb) {
  __shared__ Acc<T> partial[cuda::kThreads];
  const int64_t c = blockIdx.x, taps = g.kh * g.kw, tap = blockIdx.y;
  const int64_t kh = tap / g.kw, kw = tap % g.kw, per_plane = g.oh * g.ow;
  Acc<T> acc = 0;
  for (int64_t j = threadIdx.x; j < g.n * per_plane; j += blockDim.x) {
    const int64_t n = j / per_plane, o = j % per_plane, oh = o / g.ow, ow = o % g.ow;
    const int64_t plane = n * g.c + c;
    const Acc<T> go = Acc<T>(gp[plane * per_plane + o]);
    if (tap == taps) {
      acc += go;
      continue;
    }
    const int64_t ih = oh * g.sh - g.ph + kh * g.dh, iw = ow * g.sw - g.pw + kw * g.dw;
    if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) acc += go * Acc<T>(in[(plane * g.h + ih) * g.w + iw]);
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (tap == taps) {
      gb[c] = T(partial[0]);
    } else {
      gw[c * taps + tap] = T(partial[0]);
    }
  }
}

struct CudaKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) { return st; }

  static void forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& out,
                      const Geometry& g, Activation act) {
    const c10::cuda::CUDAGuard guard(out.device());
    const int64_t total = out.numel();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "depthwise_conv2d", [&] {
      using T = scalar_t;
      with_activation(act, [&](auto a) {
        forward_kernel<decltype(a)::value, T>
            <<<cuda::blocks_for(total), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                input.const_data_ptr<T>(), weight.const_data_ptr<T>(), bias.const_data_ptr<T>(), g, total,
                out.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                       const at::Tensor& bias, at::Tensor& grad_input, at::Tensor& grad_weight, at::Tensor& grad_bias,
                       const Geometry& g, Activation act) {
    const c10::cuda::CUDAGuard guard(grad_input.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int64_t outputs = grad.numel(), inputs = grad_input.numel();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "depthwise_conv2d_backward", [&] {
      using T = scalar_t;
      at::Tensor grad_pre = grad;
      if (act != Activation::kNone && outputs > 0) {
        grad_pre = at::empty(grad.sizes(), grad.options());
        with_activation(act, [&](auto a) {
          grad_pre_kernel<decltype(a)::value, T><<<cuda::blocks_for(outputs), cuda::kThreads, 0, stream>>>(
              grad.const_data_ptr<T>(), input.const_data_ptr<T>(), weight.const_data_ptr<T>(), bias.const_data_ptr<T>(),
              g, outputs, grad_pre.data_ptr<T>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      }
      if (inputs > 0) {
        grad_input_kernel<T><<<cuda::blocks_for(inputs), cuda::kThreads, 0, stream>>>(
            grad_pre.const_data_ptr<T>(), weight.const_data_ptr<T>(), g, inputs, grad_input.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      const dim3 blocks(static_cast<unsigned int>(g.c), static_cast<unsigned int>(g.kh * g.kw + 1));
      grad_weight_kernel<T><<<blocks, cuda::kThreads, 0, stream>>>(grad_pre.const_data_ptr<T>(),
                                                                   input.const_data_ptr<T>(), g,
                                                                   grad_weight.data_ptr<T>(), grad_bias.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::depthwise
