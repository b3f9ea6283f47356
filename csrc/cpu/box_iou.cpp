// CPU kernels for the IoU family (pairwise, aligned, losses, backward).
//
// Pairwise forward: the column boxes' per-box terms (corners, area, centre, aspect) are computed once
// into structure-of-arrays buffers (O(N) extra memory); each task then evaluates one row box against
// a block of 4096 columns in a branch-free loop that the compiler vectorises, compiled for AVX-512,
// AVX2 and baseline x86-64 (simd.h). Tasks are ordered column-block-major so a block's terms stay in
// L2 while every row streams past it. Nothing of size M x N is allocated except the output.
//
// Backward: the same formula evaluated on dual numbers (common/dual.h). Gradients of the row boxes
// reduce along rows, those of the column boxes along 16-column strips; both reductions run in a
// fixed order in float64, so results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/box_math.h"
#include "common/rows.h"
#include "common/simd.h"
#include "cpu/memory.h"
#include "ops/box_iou.h"

namespace pydet::box_iou {
namespace {

// Per-box terms of a [B, N, 4] tensor as one contiguous array per field and batch.
template <BoxMetric M, class T>
struct TermsSoA {
  static constexpr int kCenter = metric_needs_center(M) ? 5 : -1;
  static constexpr int kAspect = metric_needs_aspect(M) ? (metric_needs_center(M) ? 7 : 5) : -1;
  static constexpr int kFields = 5 + (kCenter >= 0 ? 2 : 0) + (kAspect >= 0 ? 1 : 0);

  std::vector<T> buf;
  int64_t n;

  TermsSoA(const BoxRows<T>& rows, int64_t batches, int64_t n_, BoxFormat fmt, const MetricParams<T>& p)
      : buf(size_t(batches * kFields * n_)), n(n_) {
    at::parallel_for(0, batches * n, 4096, [&](int64_t begin, int64_t end) {
      // One division per chunk, not per box: (b, j) advance like an odometer.
      for (int64_t idx = begin, b = begin / n, j = begin % n; idx < end; ++idx, j = (j + 1 == n) ? 0 : j + 1) {
        if (j == 0 && idx != begin) ++b;
        const BoxTerms<T> t = box_terms<M>(fmt, rows.at(b, j), p);
        T* base = buf.data() + b * kFields * n + j;
        base[0 * n] = t.x1;
        base[1 * n] = t.y1;
        base[2 * n] = t.x2;
        base[3 * n] = t.y2;
        base[4 * n] = t.area;
        if constexpr (kCenter >= 0) {
          base[kCenter * n] = t.cx;
          base[(kCenter + 1) * n] = t.cy;
        }
        if constexpr (kAspect >= 0) base[kAspect * n] = t.aspect;
      }
    });
  }

  const T* field(int64_t b, int f) const { return f < 0 ? nullptr : buf.data() + (b * kFields + f) * n; }

  // The terms of box (b, j) as constants of value type V (plain T, or a dual with zero partials).
  template <class V>
  BoxTerms<V> get(int64_t b, int64_t j) const {
    BoxTerms<V> t =
        stored_terms(V(field(b, 0)[j]), V(field(b, 1)[j]), V(field(b, 2)[j]), V(field(b, 3)[j]), V(field(b, 4)[j]));
    if constexpr (kCenter >= 0) {
      t.cx = V(field(b, kCenter)[j]);
      t.cy = V(field(b, kCenter + 1)[j]);
    }
    if constexpr (kAspect >= 0) t.aspect = V(field(b, kAspect)[j]);
    return t;
  }
};

// out[r * out_stride + j] = metric(a[r], column j) for r < R, j < n: the hot loop of every pairwise
// op. R rows share each column load (register blocking); the j loop vectorises.
template <BoxMetric M, class T, int R>
PYDET_SIMD_INLINE void metric_rows(const BoxTerms<T>* a, const T* __restrict x1, const T* __restrict y1,
                                   const T* __restrict x2, const T* __restrict y2, const T* __restrict area,
                                   const T* __restrict cx, const T* __restrict cy, const T* __restrict aspect,
                                   const MetricParams<T> p, T* __restrict out, int64_t out_stride, int64_t n) {
  BoxTerms<T> rows[R];
  for (int r = 0; r < R; ++r) rows[r] = a[r];
  for (int64_t j = 0; j < n; ++j) {
    BoxTerms<T> b = stored_terms(x1[j], y1[j], x2[j], y2[j], area[j]);
    if constexpr (metric_needs_center(M)) {
      b.cx = cx[j];
      b.cy = cy[j];
    }
    if constexpr (metric_needs_aspect(M)) b.aspect = aspect[j];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) out[r * out_stride + j] = box_metric<M>(rows[r], b, p);
  }
}

template <BoxMetric M, class T>
void pairwise_impl(const at::Tensor& boxes1, const at::Tensor& boxes2, at::Tensor& out, BoxFormat fmt,
                   const MetricParams<T>& p) {
  using Soa = TermsSoA<M, T>;
  constexpr int kRows = 4;          // rows per task (register blocking)
  constexpr int64_t kBlock = 1024;  // columns per task: 1024 columns' terms (<= 32 KB) stay in L1
  const int64_t B = boxes1.size(0), rows = boxes1.size(1), N = boxes2.size(1);
  const BoxRows<T> r1(boxes1), r2(boxes2);
  const Soa cols(r2, B, N, fmt, p);
  const int64_t block = std::min(N, kBlock);
  const int64_t blocks = (N + block - 1) / block;
  const int64_t groups = (rows + kRows - 1) / kRows;
  T* o = out.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, 16384 / (block * kRows));
  // Tasks (b, blk, g) in that nesting order: a column block's terms stay hot while its rows stream by.
  at::parallel_for(0, B * blocks * groups, grain, [&](int64_t begin, int64_t end) {
    int64_t g = begin % groups, blk = (begin / groups) % blocks, b = begin / (groups * blocks);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i0 = g * kRows, j0 = blk * block, n = std::min(block, N - j0);
      const int64_t nrows = std::min<int64_t>(kRows, rows - i0);
      BoxTerms<T> a[kRows];
      for (int64_t r = 0; r < nrows; ++r) a[r] = box_terms<M>(fmt, r1.at(b, i0 + r), p);
      const auto col = [&](int f) { return f < 0 ? nullptr : cols.field(b, f) + j0; };
      T* dst = o + (b * rows + i0) * N + j0;
      simd::dispatch([&] {
        if (nrows == kRows) {
          metric_rows<M, T, kRows>(a, col(0), col(1), col(2), col(3), col(4), col(Soa::kCenter),
                                   col(Soa::kCenter < 0 ? -1 : Soa::kCenter + 1), col(Soa::kAspect), p, dst, N, n);
        } else {
          for (int64_t r = 0; r < nrows; ++r) {
            metric_rows<M, T, 1>(a + r, col(0), col(1), col(2), col(3), col(4), col(Soa::kCenter),
                                 col(Soa::kCenter < 0 ? -1 : Soa::kCenter + 1), col(Soa::kAspect), p, dst + r * N, N,
                                 n);
          }
        }
      });
      if (++g == groups) {  // odometer: no division per task
        g = 0;
        if (++blk == blocks) {
          blk = 0;
          ++b;
        }
      }
    }
  });
}

template <BoxMetric M, class T>
void pairwise_backward_impl(const at::Tensor& grad, const at::Tensor& boxes1, const at::Tensor& boxes2, at::Tensor& g1,
                            at::Tensor& g2, BoxFormat fmt, const MetricParams<T>& p) {
  using D = Dual<T, 4>;
  const int64_t B = boxes1.size(0), rows = boxes1.size(1), N = boxes2.size(1);
  const BoxRows<T> r1(boxes1), r2(boxes2);
  const T* g = grad.const_data_ptr<T>();
  T* o1 = g1.data_ptr<T>();
  T* o2 = g2.data_ptr<T>();
  const MetricParams<T> pd = p;

  // d/d boxes1[b, i] = sum_j grad[b, i, j] * d metric(i, j) / d boxes1[b, i]
  {
    const TermsSoA<M, T> cols(r2, B, N, fmt, p);
    at::parallel_for(0, B * rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t t = begin; t < end; ++t) {
                         const int64_t b = t / rows;
                         const BoxTerms<D> a = box_terms<M>(fmt, seed_box(r1.at(b, t % rows)), pd);
                         const T* gr = g + t * N;
                         double acc[4] = {0, 0, 0, 0};
                         for (int64_t j = 0; j < N; ++j) {
                           const D r = box_metric<M>(a, cols.template get<D>(b, j), pd);
                           for (int k = 0; k < 4; ++k) acc[k] += double(gr[j]) * double(r.d[k]);
                         }
                         for (int k = 0; k < 4; ++k) o1[4 * t + k] = T(acc[k]);
                       }
                     });
  }
  // d/d boxes2[b, j] = sum_i grad[b, i, j] * d metric(i, j) / d boxes2[b, j], 16 columns at a time so
  // each grad row segment read is one cache line.
  {
    const TermsSoA<M, T> rows_terms(r1, B, rows, fmt, p);
    constexpr int64_t kStrip = 16;
    const int64_t strips = (N + kStrip - 1) / kStrip;
    at::parallel_for(0, B * strips, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / strips, j0 = (t % strips) * kStrip, n = std::min(kStrip, N - j0);
        BoxTerms<D> cols[kStrip];
        for (int64_t jj = 0; jj < n; ++jj) cols[jj] = box_terms<M>(fmt, seed_box(r2.at(b, j0 + jj)), pd);
        double acc[kStrip][4] = {};
        for (int64_t i = 0; i < rows; ++i) {
          const BoxTerms<D> a = rows_terms.template get<D>(b, i);
          const T* gr = g + (b * rows + i) * N + j0;
          for (int64_t jj = 0; jj < n; ++jj) {
            const D r = box_metric<M>(a, cols[jj], pd);
            for (int k = 0; k < 4; ++k) acc[jj][k] += double(gr[jj]) * double(r.d[k]);
          }
        }
        for (int64_t jj = 0; jj < n; ++jj) {
          for (int k = 0; k < 4; ++k) o2[(b * N + j0 + jj) * 4 + k] = T(acc[jj][k]);
        }
      }
    });
  }
}

// out[k] = metric(boxes1[k], boxes2[k]) for k in [begin, end), boxes contiguous [K, 4] (constant
// strides let the loop vectorise).
template <BoxMetric M, class T>
PYDET_SIMD_INLINE void aligned_chunk(const T* __restrict b1, const T* __restrict b2, const MetricParams<T> p,
                                     T* __restrict out, int64_t begin, int64_t end) {
  for (int64_t k = begin; k < end; ++k) {
    const T* a = b1 + 4 * k;
    const T* b = b2 + 4 * k;
    out[k] = box_metric<M>(box_terms<M>(a[0], a[1], a[2], a[3], p), box_terms<M>(b[0], b[1], b[2], b[3], p), p);
  }
}

// Gradients of metric(boxes1[k], boxes2[k]) w.r.t. both boxes for k in [begin, end): the metric on
// dual numbers with 8 partials. Boxes are contiguous [K, 4] and the body is branch-free (dual.h), so
// the loop vectorises across pairs.
template <BoxMetric M, class T>
PYDET_SIMD_INLINE void aligned_backward_chunk(const T* __restrict b1, const T* __restrict b2, const T* __restrict grad,
                                              const T grad_scale, const MetricParams<T> p, T* __restrict g1,
                                              T* __restrict g2, int64_t begin, int64_t end) {
  using D = Dual<T, 8>;
  for (int64_t k = begin; k < end; ++k) {
    const T* q1 = b1 + 4 * k;
    const T* q2 = b2 + 4 * k;
    const BoxTerms<D> a =
        box_terms<M>(D::variable(q1[0], 0), D::variable(q1[1], 1), D::variable(q1[2], 2), D::variable(q1[3], 3), p);
    const BoxTerms<D> b =
        box_terms<M>(D::variable(q2[0], 4), D::variable(q2[1], 5), D::variable(q2[2], 6), D::variable(q2[3], 7), p);
    const D r = box_metric<M>(a, b, p);
    const T gk = grad[k] * grad_scale;
    for (int c = 0; c < 4; ++c) {
      g1[4 * k + c] = gk * r.d[c];
      g2[4 * k + c] = gk * r.d[4 + c];
    }
  }
}

struct CpuKernels {
  static void pairwise(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out, BoxMetric metric, double eps,
                       double offset, BoxFormat fmt) {
    cpu::advise_huge_pages(out);
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "pairwise_box_metric", [&] {
      dispatch_metric(metric, [&](auto mc) {
        constexpr BoxMetric M = decltype(mc)::value;
        if constexpr (metric_is_pairwise(M)) {
          pairwise_impl<M, scalar_t>(b1, b2, out, fmt, {scalar_t(eps), scalar_t(offset)});
        }
      });
    });
  }

  static void pairwise_backward(const at::Tensor& grad, const at::Tensor& b1, const at::Tensor& b2, at::Tensor& g1,
                                at::Tensor& g2, BoxMetric metric, double eps, double offset, BoxFormat fmt) {
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "pairwise_box_metric_backward", [&] {
      dispatch_metric(metric, [&](auto mc) {
        constexpr BoxMetric M = decltype(mc)::value;
        if constexpr (metric_is_pairwise(M)) {
          pairwise_backward_impl<M, scalar_t>(grad, b1, b2, g1, g2, fmt, {scalar_t(eps), scalar_t(offset)});
        }
      });
    });
  }

  static void aligned(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out, BoxMetric metric, double eps,
                      double offset) {
    const at::Tensor c1 = b1.contiguous(), c2 = b2.contiguous();  // O(K); one kernel variant
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "aligned_box_metric", [&] {
      dispatch_metric(metric, [&](auto mc) {
        constexpr BoxMetric M = decltype(mc)::value;
        const MetricParams<scalar_t> p{scalar_t(eps), scalar_t(offset)};
        const scalar_t* p1 = c1.const_data_ptr<scalar_t>();
        const scalar_t* p2 = c2.const_data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        at::parallel_for(0, c1.size(0), 8192, [&](int64_t begin, int64_t end) {
          simd::dispatch([&] { aligned_chunk<M, scalar_t>(p1, p2, p, o, begin, end); });
        });
      });
    });
  }

  static void aligned_backward(const at::Tensor& grad, double grad_scale, const at::Tensor& b1, const at::Tensor& b2,
                               at::Tensor& g1, at::Tensor& g2, BoxMetric metric, double eps, double offset) {
    const int64_t K = b1.size(0);
    const at::Tensor c1 = b1.contiguous(), c2 = b2.contiguous();
    const at::Tensor g = grad.expand({K}).contiguous();  // a reduced loss's single value, broadcast
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "aligned_box_metric_backward", [&] {
      dispatch_metric(metric, [&](auto mc) {
        constexpr BoxMetric M = decltype(mc)::value;
        const MetricParams<scalar_t> p{scalar_t(eps), scalar_t(offset)};
        const scalar_t* p1 = c1.const_data_ptr<scalar_t>();
        const scalar_t* p2 = c2.const_data_ptr<scalar_t>();
        const scalar_t* pg = g.const_data_ptr<scalar_t>();
        scalar_t* o1 = g1.data_ptr<scalar_t>();
        scalar_t* o2 = g2.data_ptr<scalar_t>();
        at::parallel_for(0, K, 2048, [&](int64_t begin, int64_t end) {
          simd::dispatch(
              [&] { aligned_backward_chunk<M, scalar_t>(p1, p2, pg, scalar_t(grad_scale), p, o1, o2, begin, end); });
        });
      });
    });
  }

  // Sum in float64 over fixed 4096-element blocks, blocks added in order: the same bits for any
  // thread count.
  static at::Tensor sum(const at::Tensor& values) {
    at::Tensor out = at::empty({}, values.options());
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "box_loss_sum", [&] {
      const scalar_t* v = values.const_data_ptr<scalar_t>();
      const int64_t n = values.numel();
      constexpr int64_t kBlock = 4096;
      const int64_t blocks = (n + kBlock - 1) / kBlock;
      std::vector<double> partial(size_t(blocks), 0.0);
      at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t blk = begin; blk < end; ++blk) {
          double s = 0;
          for (int64_t k = blk * kBlock, e = std::min(n, (blk + 1) * kBlock); k < e; ++k) s += double(v[k]);
          partial[blk] = s;
        }
      });
      double total = 0;
      for (double s : partial) total += s;
      *out.data_ptr<scalar_t>() = scalar_t(total);
    });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::box_iou
