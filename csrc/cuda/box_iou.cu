// CUDA kernels for the IoU family (pairwise, aligned, losses, backward). Formulas: common/box_math.h;
// front ends: ops/box_iou.h.
//
// Pairwise forward: a block owns 256 consecutive columns and walks tiles of 16 rows; the rows'
// per-box terms sit in shared memory, each thread keeps its column's terms in registers and writes
// one coalesced output element per row. Backward: grad w.r.t. the row boxes is a warp reduction per
// row, grad w.r.t. the column boxes a per-thread loop over shared-memory row tiles; both reduce in a
// fixed order in float64 (deterministic, no atomics).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/box_math.h"
#include "common/rows.h"
#include "cuda/launch.cuh"
#include "ops/box_iou.h"

namespace pydet::box_iou {
namespace {

using cuda::global_index;
using cuda::grid_stride;

constexpr int kRowTile = 16;
constexpr int kColsPerBlock = cuda::kThreads;

// Terms as dual-number constants (zero partials).
template <class D, class T>
__device__ __forceinline__ BoxTerms<D> as_constant(const BoxTerms<T>& t) {
  BoxTerms<D> r;
  r.x1 = D(t.x1);
  r.y1 = D(t.y1);
  r.x2 = D(t.x2);
  r.y2 = D(t.y2);
  r.area = D(t.area);
  r.cx = D(t.cx);
  r.cy = D(t.cy);
  r.aspect = D(t.aspect);
  return r;
}

// grid: x = column blocks, y = (batch, row tile) pairs (grid-stride).
template <BoxMetric M, class T>
__global__ void pairwise_kernel(BoxRows<T> rows1, BoxRows<T> rows2, int64_t B, int64_t M_, int64_t N, BoxFormat fmt,
                                MetricParams<T> p, T* out) {
  __shared__ BoxTerms<T> tile[kRowTile];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + threadIdx.x;
  const int64_t row_tiles = (M_ + kRowTile - 1) / kRowTile;
  for (int64_t t = blockIdx.y; t < B * row_tiles; t += gridDim.y) {
    const int64_t b = t / row_tiles, i0 = (t % row_tiles) * kRowTile;
    const int rows = static_cast<int>(M_ - i0 < kRowTile ? M_ - i0 : kRowTile);
    __syncthreads();  // the previous tile is no longer read
    if (threadIdx.x < rows) tile[threadIdx.x] = box_terms<M>(fmt, rows1.at(b, i0 + threadIdx.x), p);
    __syncthreads();
    if (j < N) {
      const BoxTerms<T> col = box_terms<M>(fmt, rows2.at(b, j), p);
      T* o = out + (b * M_ + i0) * N + j;
      for (int r = 0; r < rows; ++r) o[r * N] = box_metric<M>(tile[r], col, p);
    }
  }
}

// One warp per (batch, row): grad1[b, i] = sum_j grad[b, i, j] * d metric / d boxes1[b, i].
template <BoxMetric M, class T>
__global__ void pairwise_backward_rows_kernel(const T* grad, BoxRows<T> rows1, BoxRows<T> rows2, int64_t B, int64_t M_,
                                              int64_t N, BoxFormat fmt, MetricParams<T> p, T* grad1) {
  using D = Dual<T, 4>;
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid_stride() / 32;
  for (int64_t w = global_index() / 32; w < B * M_; w += warps) {
    const int64_t b = w / M_;
    const BoxTerms<D> a = box_terms<M>(fmt, seed_box(rows1.at(b, w % M_)), p);
    double acc[4] = {0, 0, 0, 0};
    for (int64_t j = lane; j < N; j += 32) {
      const D r = box_metric<M>(a, as_constant<D>(box_terms<M>(fmt, rows2.at(b, j), p)), p);
      const double g = double(grad[w * N + j]);
      for (int k = 0; k < 4; ++k) acc[k] += g * double(r.d[k]);
    }
    for (int k = 0; k < 4; ++k) {
      for (int off = 16; off > 0; off /= 2) acc[k] += __shfl_down_sync(0xffffffffu, acc[k], off);
    }
    if (lane == 0) {
      for (int k = 0; k < 4; ++k) grad1[4 * w + k] = T(acc[k]);
    }
  }
}

// One thread per (batch, column), rows read through shared-memory tiles:
// grad2[b, j] = sum_i grad[b, i, j] * d metric / d boxes2[b, j].
template <BoxMetric M, class T>
__global__ void pairwise_backward_cols_kernel(const T* grad, BoxRows<T> rows1, BoxRows<T> rows2, int64_t B, int64_t M_,
                                              int64_t N, BoxFormat fmt, MetricParams<T> p, T* grad2) {
  using D = Dual<T, 4>;
  __shared__ BoxTerms<T> tile[kRowTile];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + threadIdx.x;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    BoxTerms<D> col;
    if (j < N) col = box_terms<M>(fmt, seed_box(rows2.at(b, j)), p);
    double acc[4] = {0, 0, 0, 0};
    for (int64_t i0 = 0; i0 < M_; i0 += kRowTile) {
      const int rows = static_cast<int>(M_ - i0 < kRowTile ? M_ - i0 : kRowTile);
      __syncthreads();
      if (threadIdx.x < rows) tile[threadIdx.x] = box_terms<M>(fmt, rows1.at(b, i0 + threadIdx.x), p);
      __syncthreads();
      if (j < N) {
        for (int r = 0; r < rows; ++r) {
          const D v = box_metric<M>(as_constant<D>(tile[r]), col, p);
          const double g = double(grad[(b * M_ + i0 + r) * N + j]);
          for (int k = 0; k < 4; ++k) acc[k] += g * double(v.d[k]);
        }
      }
    }
    if (j < N) {
      for (int k = 0; k < 4; ++k) grad2[(b * N + j) * 4 + k] = T(acc[k]);
    }
  }
}

template <BoxMetric M, class T>
__global__ void aligned_kernel(BoxRows<T> rows1, BoxRows<T> rows2, MetricParams<T> p, T* out) {
  for (int64_t k = global_index(); k < rows1.size; k += grid_stride()) {
    const Box4<T> q1 = rows1[k], q2 = rows2[k];
    out[k] = box_metric<M>(box_terms<M>(q1.a, q1.b, q1.c, q1.d, p), box_terms<M>(q2.a, q2.b, q2.c, q2.d, p), p);
  }
}

template <BoxMetric M, class T>
__global__ void aligned_backward_kernel(const T* grad, int64_t grad_stride, T grad_scale, BoxRows<T> rows1,
                                        BoxRows<T> rows2, MetricParams<T> p, T* grad1, T* grad2) {
  using D = Dual<T, 8>;
  for (int64_t k = global_index(); k < rows1.size; k += grid_stride()) {
    const Box4<T> q1 = rows1[k], q2 = rows2[k];
    const BoxTerms<D> a =
        box_terms<M>(D::variable(q1.a, 0), D::variable(q1.b, 1), D::variable(q1.c, 2), D::variable(q1.d, 3), p);
    const BoxTerms<D> b =
        box_terms<M>(D::variable(q2.a, 4), D::variable(q2.b, 5), D::variable(q2.c, 6), D::variable(q2.d, 7), p);
    const D r = box_metric<M>(a, b, p);
    const T g = grad[k * grad_stride] * grad_scale;
    for (int c = 0; c < 4; ++c) {
      grad1[4 * k + c] = g * r.d[c];
      grad2[4 * k + c] = g * r.d[4 + c];
    }
  }
}

dim3 pairwise_grid(int64_t B, int64_t M_, int64_t N) {
  const int64_t col_blocks = (N + kColsPerBlock - 1) / kColsPerBlock;
  const int64_t row_tiles = B * ((M_ + kRowTile - 1) / kRowTile);
  TORCH_CHECK_VALUE(col_blocks <= 0x7fffffffLL, "pydet: too many columns for one CUDA grid (", N, ")");
  return dim3(static_cast<unsigned int>(col_blocks), static_cast<unsigned int>(std::min<int64_t>(row_tiles, 65535)));
}

struct CudaKernels {
  static void pairwise(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out, BoxMetric metric, double eps,
                       double offset, BoxFormat fmt) {
    const c10::cuda::CUDAGuard guard(b1.device());
    const int64_t B = b1.size(0), M_ = b1.size(1), N = b2.size(1);
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "pairwise_box_metric", [&] {
      dispatch_metric(metric, [&](auto mc) {
        constexpr BoxMetric M = decltype(mc)::value;
        if constexpr (metric_is_pairwise(M)) {
          pairwise_kernel<M, scalar_t>
              <<<pairwise_grid(B, M_, N), kColsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
                  BoxRows<scalar_t>(b1), BoxRows<scalar_t>(b2), B, M_, N, fmt,
                  MetricParams<scalar_t>{scalar_t(eps), scalar_t(offset)}, out.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
    });
  }

  static void pairwise_backward(const at::Tensor& grad, const at::Tensor& b1, const at::Tensor& b2, at::Tensor& g1,
                                at::Tensor& g2, BoxMetric metric, double eps, double offset, BoxFormat fmt) {
    const c10::cuda::CUDAGuard guard(b1.device());
    const int64_t B = b1.size(0), M_ = b1.size(1), N = b2.size(1);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "pairwise_box_metric_backward", [&] {
      dispatch_metric(metric, [&](auto mc) {
        constexpr BoxMetric M = decltype(mc)::value;
        if constexpr (metric_is_pairwise(M)) {
          const MetricParams<scalar_t> p{scalar_t(eps), scalar_t(offset)};
          const BoxRows<scalar_t> r1(b1), r2(b2);
          pairwise_backward_rows_kernel<M, scalar_t><<<cuda::blocks_for(B * M_ * 32), cuda::kThreads, 0, stream>>>(
              grad.const_data_ptr<scalar_t>(), r1, r2, B, M_, N, fmt, p, g1.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          const dim3 grid(static_cast<unsigned int>((N + kColsPerBlock - 1) / kColsPerBlock),
                          static_cast<unsigned int>(std::min<int64_t>(B, 65535)));
          pairwise_backward_cols_kernel<M, scalar_t><<<grid, kColsPerBlock, 0, stream>>>(
              grad.const_data_ptr<scalar_t>(), r1, r2, B, M_, N, fmt, p, g2.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
    });
  }

  static void aligned(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out, BoxMetric metric, double eps,
                      double offset) {
    const c10::cuda::CUDAGuard guard(b1.device());
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "aligned_box_metric", [&] {
      dispatch_metric(metric, [&](auto mc) {
        constexpr BoxMetric M = decltype(mc)::value;
        const BoxRows<scalar_t> r1(b1), r2(b2);
        aligned_kernel<M, scalar_t>
            <<<cuda::blocks_for(r1.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                r1, r2, MetricParams<scalar_t>{scalar_t(eps), scalar_t(offset)}, out.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }

  static void aligned_backward(const at::Tensor& grad, double grad_scale, const at::Tensor& b1, const at::Tensor& b2,
                               at::Tensor& g1, at::Tensor& g2, BoxMetric metric, double eps, double offset) {
    const c10::cuda::CUDAGuard guard(b1.device());
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "aligned_box_metric_backward", [&] {
      dispatch_metric(metric, [&](auto mc) {
        constexpr BoxMetric M = decltype(mc)::value;
        const BoxRows<scalar_t> r1(b1), r2(b2);
        aligned_backward_kernel<M, scalar_t>
            <<<cuda::blocks_for(r1.size), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                grad.const_data_ptr<scalar_t>(), grad.numel() == 1 ? 0 : 1, scalar_t(grad_scale), r1, r2,
                MetricParams<scalar_t>{scalar_t(eps), scalar_t(offset)}, g1.data_ptr<scalar_t>(),
                g2.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }

  // ATen's CUDA sum reduces in a fixed order (no atomics): deterministic for a given input.
  static at::Tensor sum(const at::Tensor& values) { return values.sum(at::kDouble).to(values.scalar_type()); }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::box_iou
