// CUDA kernels of box_overlap_max / box_overlap_ties (front end and semantics: ops/matching.h).
//   anchor side: one thread per (image, anchor) streams the image's ground truth;
//   ground-truth side: one block per (image, ground-truth box) streams the anchors and reduces
//   (value, index) pairs in shared memory with torch.max's order (NaN first, then lower index).
// Qualities are recomputed rather than stored: extra memory stays O(M + N).
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>

#include "common/box_math.h"
#include "common/rows.h"
#include "cuda/launch.cuh"
#include "ops/matching.h"

namespace pydet::matching {
namespace {

using cuda::global_index;
using cuda::grid_stride;

template <class T>
__device__ __forceinline__ bool beats(T v, int64_t i, T best, int64_t bi) {
  const bool v_nan = v != v, b_nan = best != best;
  if (v_nan != b_nan) return v_nan;
  if (v_nan || v == best) return i < bi;
  return v > best;
}

template <BoxMetric M, class T>
__device__ __forceinline__ T quality(const Box4<T>& g, const Box4<T>& a, bool ignored, bool anchors_first,
                                     const MetricParams<T>& mp) {
  const BoxTerms<T> gt = box_terms<M>(g.a, g.b, g.c, g.d, mp), at = box_terms<M>(a.a, a.b, a.c, a.d, mp);
  T v;
  if constexpr (M == BoxMetric::kMmIoF) {
    v = anchors_first ? box_metric<M>(at, gt, mp) : box_metric<M>(gt, at, mp);
  } else {
    v = box_metric<M>(gt, at, mp);
  }
  return ignored ? T(-1) : v;
}

__device__ __forceinline__ int64_t count_of(const int64_t* counts, int64_t b, int64_t m_max) {
  const int64_t m = counts[b];
  CUDA_KERNEL_ASSERT(m >= 0 && m <= m_max && "pydet: num_gt outside [0, padded number of ground-truth boxes]");
  return m < 0 ? 0 : (m > m_max ? m_max : m);
}

template <BoxMetric M, class T>
__global__ void anchor_max_kernel(BoxRows<T> gt, BoxRows<T> anchors, const int64_t* counts, const bool* ignored,
                                  int64_t m_max, int64_t n, int64_t batch, bool anchors_first, MetricParams<T> mp,
                                  T* anchor_max, int64_t* anchor_argmax) {
  for (int64_t r = global_index(); r < batch * n; r += grid_stride()) {
    const int64_t b = r / n, j = r - b * n, m = count_of(counts, b, m_max);
    const Box4<T> a = anchors[j];
    const bool ign = ignored != nullptr && ignored[r];
    T best = -std::numeric_limits<T>::infinity();
    int64_t arg = -1;
    for (int64_t g = 0; g < m; ++g) {
      const T v = quality<M>(gt.at(b, g), a, ign, anchors_first, mp);
      if (g == 0 || v > best || (v != v && best == best)) {
        best = v;
        arg = g;
      }
    }
    anchor_max[r] = best;
    anchor_argmax[r] = arg;
  }
}

template <BoxMetric M, class T>
__global__ void gt_max_kernel(BoxRows<T> gt, BoxRows<T> anchors, const int64_t* counts, const bool* ignored,
                              int64_t m_max, int64_t n, bool anchors_first, MetricParams<T> mp, T* gt_max,
                              int64_t* gt_argmax) {
  __shared__ T s_best[cuda::kThreads];
  __shared__ int64_t s_arg[cuda::kThreads];
  const int64_t g = blockIdx.x, b = blockIdx.y;
  const bool real = g < count_of(counts, b, m_max);
  T best = -std::numeric_limits<T>::infinity();
  int64_t arg = -1;
  if (real) {
    const Box4<T> q = gt.at(b, g);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const T v = quality<M>(q, anchors[j], ignored != nullptr && ignored[b * n + j], anchors_first, mp);
      if (arg < 0 || beats(v, j, best, arg)) {
        best = v;
        arg = j;
      }
    }
  }
  s_best[threadIdx.x] = best;
  s_arg[threadIdx.x] = arg;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const T v = s_best[threadIdx.x + s];
      const int64_t i = s_arg[threadIdx.x + s];
      if (i >= 0 && (s_arg[threadIdx.x] < 0 || beats(v, i, s_best[threadIdx.x], s_arg[threadIdx.x]))) {
        s_best[threadIdx.x] = v;
        s_arg[threadIdx.x] = i;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    gt_max[b * m_max + g] = s_best[0];
    gt_argmax[b * m_max + g] = s_arg[0];
  }
}

template <BoxMetric M, class T>
__global__ void ties_kernel(BoxRows<T> gt, BoxRows<T> anchors, const int64_t* counts, const bool* ignored,
                            const T* gt_best, T min_best, int64_t m_max, int64_t n, int64_t batch, MetricParams<T> mp,
                            int64_t* out) {
  for (int64_t r = global_index(); r < batch * n; r += grid_stride()) {
    const int64_t b = r / n, j = r - b * n, m = count_of(counts, b, m_max);
    const Box4<T> a = anchors[j];
    const bool ign = ignored != nullptr && ignored[r];
    int64_t last = -1;
    for (int64_t g = 0; g < m; ++g) {
      const T target = gt_best[b * m_max + g];
      if (target >= min_best && quality<M>(gt.at(b, g), a, ign, false, mp) == target) last = g;
    }
    out[r] = last;
  }
}

struct CudaKernels {
  static void overlap_max(const Problem& p, const Quality& q, at::Tensor& anchor_max, at::Tensor& anchor_argmax,
                          at::Tensor& gt_max, at::Tensor& gt_argmax) {
    const c10::cuda::CUDAGuard guard(p.gt.device());
    const int64_t batch = p.gt.size(0), m_max = p.gt.size(1), n = p.anchors.size(0);
    const bool* ign = p.ignored.defined() ? p.ignored.const_data_ptr<bool>() : nullptr;
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(p.gt.scalar_type(), "box_overlap_max", [&] {
      using T = scalar_t;
      const MetricParams<T> mp{T(q.eps), T(0)};
      with_metric(q.metric, [&](auto metric) {
        constexpr BoxMetric kM = decltype(metric)::value;
        if (batch * n > 0) {
          anchor_max_kernel<kM, T><<<cuda::blocks_for(batch * n), cuda::kThreads, 0, stream>>>(
              BoxRows<T>(p.gt), BoxRows<T>(p.anchors), p.counts.const_data_ptr<int64_t>(), ign, m_max, n, batch,
              q.anchors_first, mp, anchor_max.data_ptr<T>(), anchor_argmax.data_ptr<int64_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        if (m_max > 0) {
          TORCH_CHECK_VALUE(batch <= 65535, "pydet.box_overlap_max: at most 65535 images per call on CUDA, got ",
                            batch);
          gt_max_kernel<kM, T>
              <<<dim3(static_cast<unsigned>(m_max), static_cast<unsigned>(batch)), cuda::kThreads, 0, stream>>>(
                  BoxRows<T>(p.gt), BoxRows<T>(p.anchors), p.counts.const_data_ptr<int64_t>(), ign, m_max, n,
                  q.anchors_first, mp, gt_max.data_ptr<T>(), gt_argmax.data_ptr<int64_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
    });
  }

  static void overlap_ties(const Problem& p, const Quality& q, const at::Tensor& gt_best, double min_best,
                           at::Tensor& out) {
    const c10::cuda::CUDAGuard guard(p.gt.device());
    const int64_t batch = p.gt.size(0), m_max = p.gt.size(1), n = p.anchors.size(0);
    const bool* ign = p.ignored.defined() ? p.ignored.const_data_ptr<bool>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES(p.gt.scalar_type(), "box_overlap_ties", [&] {
      using T = scalar_t;
      const MetricParams<T> mp{T(q.eps), T(0)};
      with_metric(q.metric, [&](auto metric) {
        ties_kernel<decltype(metric)::value, T>
            <<<cuda::blocks_for(batch * n), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                BoxRows<T>(p.gt), BoxRows<T>(p.anchors), p.counts.const_data_ptr<int64_t>(), ign,
                gt_best.const_data_ptr<T>(), T(min_best), m_max, n, batch, mp, out.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::matching
