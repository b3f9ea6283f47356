// Greedy NMS on the GPU by suppression masks, shared by nms / batched_nms (axis-aligned boxes,
// cuda/nms.cu) and nms_rotated / batched_nms_rotated (cuda/nms_rotated.cu), which differ only in the
// geometry policy.
//
// nms / batched_nms / nms_rotated / batched_nms_rotated: boxes are sorted on the device (by class,
// then decreasing score; stable, so equal scores keep increasing index order as on the CPU). A
// 64-bit suppression mask (bit j of row i: box i suppresses box j > i of its class) is computed for a
// tile of rows at a time -- the tile is sized so the mask never exceeds kMaskBudget bytes, whatever
// N -- and a single-block kernel walks the tile's rows in order, on the device, keeping a row when
// no kept row suppressed it. Nothing goes back to the host until the kept count is read at the end.
//
#pragma once

#include <ATen/ops/arange.h>
#include <ATen/ops/cummin.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include "common/nms_math.h"
#include "common/rotated.h"
#include "cuda/launch.cuh"

namespace pydet::nms {
namespace {  // each including file gets its own kernels (no relocatable device code)

constexpr int64_t kMaskBudget = int64_t(256) << 20;  // bytes of suppression mask per tile
constexpr int kBlock = 64;                           // boxes per mask block (bits per word)

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// ---- geometry policies for the mask kernel ----------------------------------------------------------

template <class T>
struct AxisAligned {
  using Box = BoxTerms<T>;
  T threshold;
  __device__ static Box load(const T* p) { return nms_terms(p[0], p[1], p[2], p[3]); }
  __device__ bool suppresses(const Box& kept, const Box& other) const { return nms_iou(kept, other) > threshold; }
  static constexpr int kStride = 4;
};

struct RotatedGeometry {
  struct Box {
    double cx, cy, w, h, angle, reach;
  };
  double threshold;
  template <class T>
  __device__ static Box load(const T* p) {
    const double w = p[2], h = p[3];
    return {double(p[0]), double(p[1]), w, h, double(p[4]), 0.5 * sqrt(w * w + h * h)};
  }
  __device__ bool suppresses(const Box& a, const Box& b) const {
    const double dx = a.cx - b.cx, dy = a.cy - b.cy, r = a.reach + b.reach;
    if (dx * dx + dy * dy > r * r * (1 + 1e-9)) return false;  // bounding circles apart
    return rotated_iou(a.cx, a.cy, a.w, a.h, a.angle, b.cx, b.cy, b.w, b.h, b.angle) > threshold;
  }
  static constexpr int kStride = 5;
};

// mask[(i - row0) * col_blocks + cb], bit k: row i suppresses column cb * 64 + k (same segment, > i).
// grid: x = column block, y = row block within the tile; 64 threads.
template <class Geometry, class T>
__global__ void nms_mask_kernel(const T* boxes, const int64_t* seg_end, int64_t n, int64_t row0, int64_t rows,
                                int64_t col_blocks, Geometry geom, uint64_t* mask) {
  const int64_t rb = row0 / kBlock + blockIdx.y;
  const int64_t cb = blockIdx.x;
  if (cb < rb) return;
  const int64_t first_row = rb * kBlock;
  const int64_t last_row = imin(first_row + kBlock, imin(row0 + rows, n)) - 1;
  if (first_row > last_row || cb * kBlock >= seg_end[last_row]) return;  // outside every row's segment

  __shared__ typename Geometry::Box cols[kBlock];
  const int64_t j0 = cb * kBlock;
  const int t = threadIdx.x;
  if (j0 + t < n) cols[t] = Geometry::load(boxes + (j0 + t) * Geometry::kStride);
  __syncthreads();
  const int64_t i = first_row + t;
  if (i > last_row) return;
  const int64_t end = seg_end[i];
  if (j0 >= end) return;  // never read by the reduction
  const typename Geometry::Box row = Geometry::load(boxes + i * Geometry::kStride);
  uint64_t bits = 0;
  const int count = static_cast<int>(imin(kBlock, end - j0));
  for (int k = (cb == rb ? t + 1 : 0); k < count; ++k) {
    if (geom.suppresses(row, cols[k])) bits |= uint64_t(1) << k;
  }
  mask[(i - row0) * col_blocks + cb] = bits;
}

// One block walks the tile's rows in order: a row not yet removed (and with a non-NaN score) is kept
// and removes what its mask row marks.
__global__ void nms_reduce_kernel(const uint64_t* mask, const int64_t* seg_end, const uint8_t* dead, int64_t row0,
                                  int64_t rows, int64_t col_blocks, uint64_t* removed, uint8_t* keep) {
  for (int64_t i = row0; i < row0 + rows; ++i) {
    __syncthreads();
    const bool is_removed = (removed[i / kBlock] >> (i % kBlock)) & 1;
    if (is_removed || dead[i]) continue;  // the same decision in every thread
    if (threadIdx.x == 0) keep[i] = 1;
    const uint64_t* row = mask + (i - row0) * col_blocks;
    const int64_t last_word = (seg_end[i] - 1) / kBlock;
    for (int64_t w = i / kBlock + threadIdx.x; w <= last_word; w += blockDim.x) removed[w] |= row[w];
  }
}

// Greedy NMS over boxes in (segment, decreasing score) order. seg_end[i]: end of i's segment.
// Returns keep flags (uint8, sorted order).
template <class Geometry, class T>
at::Tensor segmented_nms(const at::Tensor& sorted_boxes, const at::Tensor& seg_end, const at::Tensor& dead,
                         Geometry geom) {
  const int64_t n = sorted_boxes.size(0);
  const int64_t col_blocks = (n + kBlock - 1) / kBlock;
  int64_t tile = std::max<int64_t>(kBlock, kMaskBudget / (col_blocks * 8) / kBlock * kBlock);
  tile = std::min(tile, col_blocks * kBlock);
  at::Tensor mask = at::empty({tile * col_blocks}, sorted_boxes.options().dtype(at::kLong));
  at::Tensor removed = at::zeros({col_blocks}, sorted_boxes.options().dtype(at::kLong));
  at::Tensor keep = at::zeros({n}, sorted_boxes.options().dtype(at::kByte));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  auto* mask_p = reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>());
  auto* removed_p = reinterpret_cast<uint64_t*>(removed.data_ptr<int64_t>());
  for (int64_t row0 = 0; row0 < n; row0 += tile) {
    const int64_t rows = std::min(tile, n - row0);
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>((rows + kBlock - 1) / kBlock));
    nms_mask_kernel<Geometry, T><<<grid, kBlock, 0, stream>>>(
        sorted_boxes.const_data_ptr<T>(), seg_end.const_data_ptr<int64_t>(), n, row0, rows, col_blocks, geom, mask_p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    nms_reduce_kernel<<<1, 256, 0, stream>>>(mask_p, seg_end.const_data_ptr<int64_t>(), dead.const_data_ptr<uint8_t>(),
                                             row0, rows, col_blocks, removed_p, keep.data_ptr<uint8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return keep;
}

// Sorted order (classes increasing, scores decreasing, equal scores by increasing index), the end of
// each position's class segment, and which positions have a NaN score.
struct SortedProblem {
  at::Tensor order, seg_end, dead;
};

SortedProblem sort_problem(const at::Tensor& scores, const at::Tensor& idxs) {
  const int64_t n = scores.size(0);
  at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  at::Tensor seg_end;
  if (idxs.defined()) {
    const at::Tensor cls_by_score = idxs.index_select(0, order);
    const at::Tensor by_class = std::get<1>(at::sort(cls_by_score, /*stable=*/true, 0, false));
    order = order.index_select(0, by_class);
    const at::Tensor cls = idxs.index_select(0, order);
    // A segment starts where the class changes; seg_end[i] = the first start after i (suffix minimum).
    at::Tensor next_start = at::full({n}, n, order.options());
    if (n > 1) {
      const at::Tensor starts_after =
          at::where(cls.slice(0, 1).ne(cls.slice(0, 0, n - 1)), at::arange(1, n, order.options()),
                    at::full({n - 1}, n, order.options()));
      next_start.slice(0, 0, n - 1).copy_(starts_after);
    }
    seg_end = std::get<0>(at::cummin(next_start.flip({0}), 0)).flip({0}).contiguous();
  } else {
    seg_end = at::full({n}, n, order.options());
  }
  const at::Tensor sorted_scores = scores.index_select(0, order);
  return {order, seg_end, sorted_scores.ne(sorted_scores).to(at::kByte)};
}

// Kept original indices by decreasing score, equal scores by increasing index.
at::Tensor kept_by_score(const SortedProblem& p, const at::Tensor& keep, const at::Tensor& scores) {
  at::Tensor kept = std::get<0>(at::sort(p.order.masked_select(keep.to(at::kBool)), /*stable=*/true, 0, false));
  const at::Tensor by_score = std::get<1>(at::sort(scores.index_select(0, kept), /*stable=*/true, 0, true));
  return kept.index_select(0, by_score);
}

}  // namespace
}  // namespace pydet::nms
