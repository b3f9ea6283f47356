// CUDA kernels of sigmoid_focal_loss (+ backward): one thread per element, grid-stride loops, 64-bit
// indices. Front end: ops/losses.h; formulas: common/focal_math.h. The reductions write the
// per-element loss and let ATen sum it in float64 (a fixed reduction order, no atomics: deterministic).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/focal_math.h"
#include "cuda/launch.cuh"
#include "ops/losses.h"

namespace pydet::losses {
namespace {

using cuda::blocks_for;
using cuda::global_index;
using cuda::grid_stride;
using cuda::kThreads;

template <Gamma G, class T>
__global__ void focal_kernel(const T* x, const T* t, T* out, int64_t n, FocalParams<T> f) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) out[i] = focal_loss<G>(x[i], t[i], f);
}

template <Gamma G, bool kTargets, class T>
__global__ void focal_grad_kernel(const T* g, int64_t g_stride, T scale, const T* x, const T* t, T* gx, T* gt,
                                  int64_t n, FocalParams<T> f) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    const FocalGrad<T> d = focal_loss_grad<G, kTargets>(x[i], t[i], f);
    const T w = g[i * g_stride] * scale;
    gx[i] = w * d.dx;
    if constexpr (kTargets) gt[i] = w * d.dt;
  }
}

template <class T>
FocalParams<T> cast(const FocalParams<double>& p) {
  return {T(p.alpha), T(p.gamma), p.weighted};
}

struct CudaKernels {
  static void focal(const at::Tensor& x, const at::Tensor& t, at::Tensor& out, const FocalParams<double>& p) {
    const c10::cuda::CUDAGuard guard(x.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int64_t n = x.numel();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_focal_loss", [&] {
      dispatch_gamma(p.gamma, [&]<Gamma G>() {
        focal_kernel<G><<<blocks_for(n), kThreads, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n, cast<scalar_t>(p));
      });
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static at::Tensor focal_sum(const at::Tensor& x, const at::Tensor& t, const FocalParams<double>& p) {
    at::Tensor per_element = at::empty({x.numel()}, x.options());
    focal(x, t, per_element, p);
    return per_element.sum(at::kDouble);
  }

  static void focal_backward(const at::Tensor& grad, double scale, const at::Tensor& x, const at::Tensor& t,
                             at::Tensor& grad_x, at::Tensor* grad_t, const FocalParams<double>& p) {
    const c10::cuda::CUDAGuard guard(x.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int64_t n = x.numel(), g_stride = grad.numel() == 1 ? 0 : 1;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_sigmoid_focal_loss_backward", [&] {
      const scalar_t *gp = grad.const_data_ptr<scalar_t>(), *xp = x.const_data_ptr<scalar_t>(),
                     *tp = t.const_data_ptr<scalar_t>();
      scalar_t* gxp = grad_x.data_ptr<scalar_t>();
      dispatch_gamma(p.gamma, [&]<Gamma G>() {
        if (grad_t) {
          focal_grad_kernel<G, true><<<blocks_for(n), kThreads, 0, stream>>>(
              gp, g_stride, scalar_t(scale), xp, tp, gxp, grad_t->data_ptr<scalar_t>(), n, cast<scalar_t>(p));
        } else {
          focal_grad_kernel<G, false><<<blocks_for(n), kThreads, 0, stream>>>(
              gp, g_stride, scalar_t(scale), xp, tp, gxp, static_cast<scalar_t*>(nullptr), n, cast<scalar_t>(p));
        }
      });
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::losses
