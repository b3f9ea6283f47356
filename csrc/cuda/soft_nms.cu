// CUDA kernel of soft_nms (mmcv). Front end: ops/soft_nms.h.
//
// soft_nms: one block runs mmcv's procedure; the decays and the "last box fills the hole" compaction
// are done in parallel with block-wide scans.
#include <ATen/Dispatch.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <limits>

#include "common/nms_math.h"
#include "cuda/launch.cuh"
#include "ops/soft_nms.h"

namespace pydet::soft_nms {
namespace {

constexpr int kSoftThreads = 512;

template <class T>
struct SoftArrays {
  T *x1, *y1, *x2, *y2, *area, *sc;
  int64_t* ind;
  __device__ void move(int64_t from, int64_t to) const {
    x1[to] = x1[from];
    y1[to] = y1[from];
    x2[to] = x2[from];
    y2[to] = y2[from];
    area[to] = area[from];
    sc[to] = sc[from];
    ind[to] = ind[from];
  }
  __device__ void swap(int64_t a, int64_t b) const {
    const T t[6] = {x1[a], y1[a], x2[a], y2[a], area[a], sc[a]};
    const int64_t i = ind[a];
    move(b, a);
    x1[b] = t[0];
    y1[b] = t[1];
    x2[b] = t[2];
    y2[b] = t[3];
    area[b] = t[4];
    sc[b] = t[5];
    ind[b] = i;
  }
};

template <class T>
struct ScoreAt {
  T score;
  int64_t pos;
};

struct ArgMax {  // larger score, then lower position; NaN never wins
  template <class T>
  __device__ ScoreAt<T> operator()(const ScoreAt<T>& a, const ScoreAt<T>& b) const {
    if (a.score > b.score || (a.score == b.score && a.pos < b.pos) || b.score != b.score) return a;
    return b;
  }
};

template <class T>
__global__ void soft_nms_kernel(SoftArrays<T> w, int64_t n0, T t, T sigma, T min_score, SoftNmsMethod method, T offset,
                                T* dets, uint8_t* removed, int64_t* hole_rank, int64_t* tail_source,
                                int64_t* count_out) {
  using Reduce = cub::BlockReduce<ScoreAt<T>, kSoftThreads>;
  using Scan = cub::BlockScan<int64_t, kSoftThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename Scan::TempStorage scan;
  } tmp;
  __shared__ int64_t n, best, total;
  const int tid = threadIdx.x;
  if (tid == 0) n = n0;
  const MetricParams<T> p{-std::numeric_limits<T>::infinity(), offset};
  for (int64_t i = 0;; ++i) {
    __syncthreads();
    if (i >= n) break;
    // the first maximum of sc[i..n) (NaN never wins; a NaN at i stays, as in mmcv's scan)
    ScoreAt<T> local{-std::numeric_limits<T>::infinity(), i};
    for (int64_t k = i + tid; k < n; k += kSoftThreads) local = ArgMax()(local, ScoreAt<T>{w.sc[k], k});
    const ScoreAt<T> top = Reduce(tmp.reduce).Reduce(local, ArgMax());
    if (tid == 0) {
      best = (w.sc[i] != w.sc[i] || !(top.score > w.sc[i])) ? i : top.pos;
      w.swap(i, best);
      dets[i * 5 + 0] = w.x1[i];
      dets[i * 5 + 1] = w.y1[i];
      dets[i * 5 + 2] = w.x2[i];
      dets[i * 5 + 3] = w.y2[i];
      dets[i * 5 + 4] = w.sc[i];
    }
    __syncthreads();
    const BoxTerms<T> a = stored_terms(w.x1[i], w.y1[i], w.x2[i], w.y2[i], w.area[i]);
    for (int64_t k = i + 1 + tid; k < n; k += kSoftThreads) {
      const BoxTerms<T> b = stored_terms(w.x1[k], w.y1[k], w.x2[k], w.y2[k], w.area[k]);
      const T ovr = box_metric<BoxMetric::kMmIoU>(a, b, p);
      T weight = T(1);
      if (method == SoftNmsMethod::kNaive) {
        weight = ovr >= t ? T(0) : T(1);
      } else if (method == SoftNmsMethod::kLinear) {
        weight = ovr >= t ? T(1) - ovr : T(1);
      } else if (ovr == ovr) {
        weight = exp_(-(ovr * ovr) / sigma);
      }
      w.sc[k] *= weight;
      removed[k] = w.sc[k] < min_score;
    }
    __syncthreads();
    // Compaction as mmcv's "the last box fills the hole": holes below the new count, in increasing
    // order, take the surviving boxes of the tail in decreasing order.
    int64_t running = 0;  // removed boxes before the current tile
    for (int64_t base = i + 1; base < n; base += kSoftThreads) {
      const int64_t k = base + tid;
      const int64_t r = k < n ? removed[k] : 0;
      int64_t before, tile_total;
      Scan(tmp.scan).ExclusiveSum(r, before, tile_total);
      if (k < n) hole_rank[k] = running + before;
      running += tile_total;
      __syncthreads();
    }
    if (tid == 0) total = running;
    __syncthreads();
    const int64_t new_n = n - total;
    running = 0;  // survivors after the current tile, scanning the tail from its end
    for (int64_t top_k = n - 1; top_k >= new_n; top_k -= kSoftThreads) {
      const int64_t k = top_k - tid;
      const int64_t s = k >= new_n ? int64_t(!removed[k]) : 0;
      int64_t after, tile_total;
      Scan(tmp.scan).ExclusiveSum(s, after, tile_total);
      if (s) tail_source[running + after] = k;
      running += tile_total;
      __syncthreads();
    }
    for (int64_t k = i + 1 + tid; k < new_n; k += kSoftThreads) {
      if (removed[k]) w.move(tail_source[hole_rank[k]], k);
    }
    __syncthreads();
    if (tid == 0) n = new_n;
  }
  if (tid == 0) *count_out = n;
}

struct CudaKernels {
  static std::tuple<at::Tensor, at::Tensor> soft_nms(const at::Tensor& boxes, const at::Tensor& scores, double thr,
                                                     double sigma, double min_score, SoftNmsMethod method,
                                                     int64_t offset) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    // Working copies in mmcv's order, NaN scores dropped (never kept, never suppress).
    const at::Tensor valid = scores.eq(scores);
    const at::Tensor ind = at::arange(scores.size(0), scores.options().dtype(at::kLong)).masked_select(valid);
    const at::Tensor b = boxes.index_select(0, ind);
    const at::Tensor cols = b.t().contiguous();  // x1, y1, x2, y2 rows
    at::Tensor x1 = cols[0].contiguous(), y1 = cols[1].contiguous(), x2 = cols[2].contiguous(),
               y2 = cols[3].contiguous();
    at::Tensor area = x2.sub(x1).add(double(offset)).mul(y2.sub(y1).add(double(offset)));
    at::Tensor sc = scores.index_select(0, ind).contiguous();
    at::Tensor work_ind = ind.clone();
    const int64_t n = ind.size(0);
    at::Tensor dets = at::empty({n, 5}, boxes.options());
    at::Tensor removed = at::empty({n}, boxes.options().dtype(at::kByte));
    at::Tensor hole_rank = at::empty({n}, boxes.options().dtype(at::kLong));
    at::Tensor tail_source = at::empty({n}, boxes.options().dtype(at::kLong));
    at::Tensor count = at::zeros({1}, boxes.options().dtype(at::kLong));
    if (n > 0) {
      AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "soft_nms", [&] {
        const SoftArrays<scalar_t> w{x1.data_ptr<scalar_t>(),     y1.data_ptr<scalar_t>(),   x2.data_ptr<scalar_t>(),
                                     y2.data_ptr<scalar_t>(),     area.data_ptr<scalar_t>(), sc.data_ptr<scalar_t>(),
                                     work_ind.data_ptr<int64_t>()};
        soft_nms_kernel<scalar_t><<<1, kSoftThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            w, n, scalar_t(thr), scalar_t(sigma), scalar_t(min_score), method, scalar_t(offset),
            dets.data_ptr<scalar_t>(), removed.data_ptr<uint8_t>(), hole_rank.data_ptr<int64_t>(),
            tail_source.data_ptr<int64_t>(), count.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    const int64_t k = count.item<int64_t>();  // the output size depends on the data
    return {dets.slice(0, 0, k), work_ind.slice(0, 0, k)};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::soft_nms
