// CPU kernels of sigmoid_focal_loss (+ backward). Front end: ops/losses.h; formulas:
// common/focal_math.h. Each loop is specialised on gamma and compiled per SIMD ISA; exp_/log_ are
// branch-free, so the compiler vectorises across elements. Sums are accumulated in float64 over
// fixed 4096-element blocks, then the blocks in order: the result does not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/focal_math.h"
#include "common/simd.h"
#include "ops/losses.h"

namespace pydet::losses {
namespace {

constexpr int64_t kBlock = 4096;

template <class T>
FocalParams<T> cast(const FocalParams<double>& p) {
  return {T(p.alpha), T(p.gamma), p.weighted};
}

template <Gamma G, class T>
PYDET_SIMD_INLINE void focal_range(const T* x, const T* t, T* out, int64_t n, FocalParams<T> f) {
  for (int64_t i = 0; i < n; ++i) out[i] = focal_loss<G>(x[i], t[i], f);
}

template <Gamma G, class T>
PYDET_SIMD_INLINE double focal_block_sum(const T* x, const T* t, int64_t n, FocalParams<T> f) {
  T buffer[kBlock];
  for (int64_t i = 0; i < n; ++i) buffer[i] = focal_loss<G>(x[i], t[i], f);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(buffer[i]);
  return s;
}

template <Gamma G, bool kTargets, class T>
PYDET_SIMD_INLINE void focal_grad_range(const T* g, int64_t g_stride, T scale, const T* x, const T* t, T* gx, T* gt,
                                        int64_t n, FocalParams<T> f) {
  for (int64_t i = 0; i < n; ++i) {
    const FocalGrad<T> d = focal_loss_grad<G, kTargets>(x[i], t[i], f);
    const T w = g[i * g_stride] * scale;
    gx[i] = w * d.dx;
    if constexpr (kTargets) gt[i] = w * d.dt;
  }
}

struct CpuKernels {
  static void focal(const at::Tensor& x, const at::Tensor& t, at::Tensor& out, const FocalParams<double>& p) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_focal_loss", [&] {
      const scalar_t *xp = x.const_data_ptr<scalar_t>(), *tp = t.const_data_ptr<scalar_t>();
      scalar_t* op = out.data_ptr<scalar_t>();
      dispatch_gamma(p.gamma, [&]<Gamma G>() {
        at::parallel_for(0, x.numel(), kBlock, [&](int64_t begin, int64_t end) {
          simd::dispatch([&] { focal_range<G>(xp + begin, tp + begin, op + begin, end - begin, cast<scalar_t>(p)); });
        });
      });
    });
  }

  static at::Tensor focal_sum(const at::Tensor& x, const at::Tensor& t, const FocalParams<double>& p) {
    const int64_t n = x.numel(), blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(size_t(blocks), 0.0);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_focal_loss", [&] {
      const scalar_t *xp = x.const_data_ptr<scalar_t>(), *tp = t.const_data_ptr<scalar_t>();
      dispatch_gamma(p.gamma, [&]<Gamma G>() {
        at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
          for (int64_t b = begin; b < end; ++b) {
            const int64_t lo = b * kBlock, len = std::min(n, lo + kBlock) - lo;
            partial[size_t(b)] =
                simd::dispatch([&] { return focal_block_sum<G>(xp + lo, tp + lo, len, cast<scalar_t>(p)); });
          }
        });
      });
    });
    double total = 0;
    for (double s : partial) total += s;
    return at::full({}, total, x.options().dtype(at::kDouble));
  }

  static void focal_backward(const at::Tensor& grad, double scale, const at::Tensor& x, const at::Tensor& t,
                             at::Tensor& grad_x, at::Tensor* grad_t, const FocalParams<double>& p) {
    const int64_t g_stride = grad.numel() == 1 ? 0 : 1;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_sigmoid_focal_loss_backward", [&] {
      const scalar_t *gp = grad.const_data_ptr<scalar_t>(), *xp = x.const_data_ptr<scalar_t>(),
                     *tp = t.const_data_ptr<scalar_t>();
      scalar_t* gxp = grad_x.data_ptr<scalar_t>();
      scalar_t* gtp = grad_t ? grad_t->data_ptr<scalar_t>() : nullptr;
      dispatch_gamma(p.gamma, [&]<Gamma G>() {
        at::parallel_for(0, x.numel(), kBlock, [&](int64_t begin, int64_t end) {
          const scalar_t* g = gp + begin * g_stride;
          simd::dispatch([&] {
            if (gtp) {
              focal_grad_range<G, true>(g, g_stride, scalar_t(scale), xp + begin, tp + begin, gxp + begin, gtp + begin,
                                        end - begin, cast<scalar_t>(p));
            } else {
              focal_grad_range<G, false>(g, g_stride, scalar_t(scale), xp + begin, tp + begin, gxp + begin, gtp,
                                         end - begin, cast<scalar_t>(p));  // gtp is null here
            }
          });
        });
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::losses
