// CUDA kernels for the NMS family. Front ends: ops/nms.h; formulas: common/nms_math.h, rotated.h.
//
// nms / batched_nms / nms_rotated / batched_nms_rotated: boxes are sorted on the device (by class,
// then decreasing score; stable, so equal scores keep increasing index order as on the CPU). A
// 64-bit suppression mask (bit j of row i: box i suppresses box j > i of its class) is computed for a
// tile of rows at a time -- the tile is sized so the mask never exceeds kMaskBudget bytes, whatever
// N -- and a single-block kernel walks the tile's rows in order, on the device, keeping a row when
// no kept row suppressed it. Nothing goes back to the host until the kept count is read at the end.
//
// multiclass_nms: per-class top-k by a segmented radix sort, per-image candidate order by a second
// one, then one block per image keeps candidates greedily (32 at a time: checked in parallel against
// the kept list, then resolved in order) until max_detections are kept. Static shapes, no host sync.
//
// topk_per_level: composed of ATen's device ops, a stable sort per level (ties by index, as on the
// CPU); static shapes, no host sync.
//
// soft_nms: one block runs mmcv's procedure; the decays and the "last box fills the hole" compaction
// are done in parallel with block-wide scans.
#include <ATen/Dispatch.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cummin.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <torch/library.h>

#include <limits>

#include "common/nms_math.h"
#include "common/rotated.h"
#include "cuda/launch.cuh"
#include "ops/nms.h"

namespace pydet::nms {
namespace {

constexpr int64_t kMaskBudget = int64_t(256) << 20;  // bytes of suppression mask per tile
constexpr int kBlock = 64;                            // boxes per mask block (bits per word)

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// ---- geometry policies for the mask kernel ----------------------------------------------------------

template <class T>
struct AxisAligned {
  using Box = BoxTerms<T>;
  T threshold;
  __device__ static Box load(const T* p) {
    return nms_terms(p[0], p[1], p[2], p[3]);
  }
  __device__ bool suppresses(const Box& kept, const Box& other) const {
    return nms_iou(kept, other) > threshold;
  }
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
    nms_mask_kernel<Geometry, T><<<grid, kBlock, 0, stream>>>(sorted_boxes.const_data_ptr<T>(),
                                                             seg_end.const_data_ptr<int64_t>(), n, row0, rows,
                                                             col_blocks, geom, mask_p);
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
      const at::Tensor starts_after = at::where(cls.slice(0, 1).ne(cls.slice(0, 0, n - 1)),
                                                at::arange(1, n, order.options()), at::full({n - 1}, n, order.options()));
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

// ---- multiclass ------------------------------------------------------------------------------------

// keys[b, c, n] = scores[b, n, c] for sorting; NaN and background -> -inf (never candidates), -0 -> +0.
template <class T>
__global__ void candidate_keys_kernel(const T* scores, int64_t B, int64_t N, int64_t C, int64_t background, T* keys,
                                      int32_t* anchors) {
  const int64_t total = B * N * C;
  for (int64_t k = cuda::global_index(); k < total; k += cuda::grid_stride()) {
    const int64_t n = k % N, c = (k / N) % C, b = k / (N * C);
    T s = scores[(b * N + n) * C + c];
    if (s != s || c == background) s = -std::numeric_limits<T>::infinity();
    keys[k] = s + T(0);
    anchors[k] = static_cast<int32_t>(n);
  }
}

// The first K of each (image, class) segment, with score > threshold, as per-image candidate slots.
template <class T>
__global__ void gather_candidates_kernel(const T* sorted_keys, const int32_t* sorted_anchors, int64_t B, int64_t N,
                                         int64_t C, int64_t K, T score_threshold, T* cand_score,
                                         int32_t* cand_anchor, int32_t* cand_slot) {
  const int64_t total = B * C * K;
  for (int64_t k = cuda::global_index(); k < total; k += cuda::grid_stride()) {
    const int64_t r = k % K, seg = k / K;  // seg = b * C + c; slot within the image = c * K + r
    const bool valid = r < N && sorted_keys[seg * N + r] > score_threshold;
    cand_score[k] = valid ? sorted_keys[seg * N + r] : -std::numeric_limits<T>::infinity();
    cand_anchor[k] = valid ? sorted_anchors[seg * N + r] : -1;
    cand_slot[k] = static_cast<int32_t>(k % (C * K));
  }
}

template <class T>
struct BoxSource {
  const T* data;
  int64_t sb, sn, sc, sk;  // strides of boxes [B, N, (C,) 4]; sc = 0 for boxes shared by classes
  BoxFormat format;
  __device__ Box4<T> at(int64_t b, int64_t n, int64_t c) const {
    const T* p = data + b * sb + n * sn + c * sc;
    return to_xyxy(format, Box4<T>{p[0], p[sk], p[2 * sk], p[3 * sk]});
  }
};

constexpr int kGreedyThreads = 256;
constexpr int kBatch = 32;

template <class T>
__global__ void multiclass_greedy_kernel(BoxSource<T> src, const T* cand_score_sorted, const int32_t* cand_slot_sorted,
                                         const int32_t* cand_anchor, int64_t CK, int64_t K, int64_t max_det,
                                         bool agnostic, T iou_t, T* kept_boxes, int32_t* kept_cls, int64_t* num,
                                         T* out_boxes, T* out_scores, int64_t* out_labels, int64_t* out_indices) {
  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  __shared__ BoxTerms<T> cand[kBatch];
  __shared__ T cand_s[kBatch];
  __shared__ int32_t cand_c[kBatch], cand_a[kBatch];
  __shared__ uint8_t valid[kBatch], eligible[kBatch], suppressed[kBatch];
  __shared__ int64_t count, m;
  __shared__ bool done;
  if (tid == 0) {
    count = 0;
    m = 0;
    done = max_det == 0;
  }
  T* kb = kept_boxes + b * max_det * 5;  // x1, y1, x2, y2, area of the boxes that can suppress
  int32_t* kc = kept_cls + b * max_det;
  __syncthreads();
  for (int64_t base = 0; base < CK && !done; base += kBatch) {
    if (tid < kBatch) {
      const int64_t q = base + tid;
      const T s = q < CK ? cand_score_sorted[b * CK + q] : -std::numeric_limits<T>::infinity();
      valid[tid] = s > -std::numeric_limits<T>::infinity();
      if (valid[tid]) {
        const int32_t slot = cand_slot_sorted[b * CK + q];
        const int32_t c = static_cast<int32_t>(slot / K);
        const int32_t a = cand_anchor[b * CK + slot];
        const Box4<T> box = src.at(b, a, c);
        cand[tid] = nms_terms(box.a, box.b, box.c, box.d);
        cand_s[tid] = s;
        cand_c[tid] = c;
        cand_a[tid] = a;
        eligible[tid] = can_suppress(box.a, box.b, box.c, box.d);
      }
      suppressed[tid] = 0;
    }
    __syncthreads();
    // Phase 1: each warp checks candidates against the boxes kept in earlier batches.
    for (int q = warp; q < kBatch; q += kGreedyThreads / 32) {
      bool hit = false;
      if (valid[q] && eligible[q]) {
        for (int64_t j = lane; j < m && !hit; j += 32) {
          if (agnostic || kc[j] == cand_c[q]) {
            BoxTerms<T> k = nms_terms(kb[j * 5], kb[j * 5 + 1], kb[j * 5 + 2], kb[j * 5 + 3]);
            hit = nms_iou(k, cand[q]) > iou_t;
          }
        }
      }
      hit = __any_sync(0xffffffffu, hit);
      if (lane == 0) suppressed[q] = hit;
    }
    __syncthreads();
    // Phase 2: resolve the batch in order (against boxes kept earlier in this batch too).
    if (tid == 0) {
      const int64_t m_batch = m;
      for (int q = 0; q < kBatch; ++q) {
        if (!valid[q]) {
          done = true;
          break;
        }
        if (eligible[q]) {
          bool hit = suppressed[q];
          for (int64_t j = m_batch; j < m && !hit; ++j) {
            if (agnostic || kc[j] == cand_c[q]) {
              BoxTerms<T> k = nms_terms(kb[j * 5], kb[j * 5 + 1], kb[j * 5 + 2], kb[j * 5 + 3]);
              hit = nms_iou(k, cand[q]) > iou_t;
            }
          }
          if (hit) continue;
          kb[m * 5] = cand[q].x1;
          kb[m * 5 + 1] = cand[q].y1;
          kb[m * 5 + 2] = cand[q].x2;
          kb[m * 5 + 3] = cand[q].y2;
          kb[m * 5 + 4] = cand[q].area;
          kc[m] = cand_c[q];
          ++m;
        }
        T* o = out_boxes + (b * max_det + count) * 4;
        o[0] = cand[q].x1;
        o[1] = cand[q].y1;
        o[2] = cand[q].x2;
        o[3] = cand[q].y2;
        out_scores[b * max_det + count] = cand_s[q];
        out_labels[b * max_det + count] = cand_c[q];
        out_indices[b * max_det + count] = cand_a[q];
        if (++count == max_det) {
          done = true;
          break;
        }
      }
    }
    __syncthreads();
  }
  for (int64_t k = count + tid; k < max_det; k += blockDim.x) {  // padding
    for (int d = 0; d < 4; ++d) out_boxes[(b * max_det + k) * 4 + d] = T(0);
    out_scores[b * max_det + k] = T(0);
    out_labels[b * max_det + k] = -1;
    out_indices[b * max_det + k] = -1;
  }
  if (tid == 0) num[b] = count;
}

// Segmented descending radix sort (stable) of keys with int32 values, segments of equal length.
template <class T>
void segmented_sort_desc(const at::Tensor& keys_in, const at::Tensor& values_in, at::Tensor& keys_out,
                         at::Tensor& values_out, int64_t segments, int64_t length) {
  const int64_t total = segments * length;
  TORCH_CHECK_VALUE(total <= std::numeric_limits<int>::max(), "pydet.multiclass_nms: B * N * C = ", total,
                    " candidates exceed the 2^31 a single CUDA sort handles; split the batch");
  const at::Tensor offsets = at::arange(0, (segments + 1) * length, length, keys_in.options().dtype(at::kLong));
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  size_t bytes = 0;
  C10_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, bytes, keys_in.const_data_ptr<T>(), keys_out.data_ptr<T>(), values_in.const_data_ptr<int32_t>(),
      values_out.data_ptr<int32_t>(), static_cast<int>(total), static_cast<int>(segments), off, off + 1, 0,
      int(sizeof(T) * 8), stream));
  at::Tensor temp = at::empty({static_cast<int64_t>(bytes)}, keys_in.options().dtype(at::kByte));
  C10_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      temp.data_ptr(), bytes, keys_in.const_data_ptr<T>(), keys_out.data_ptr<T>(), values_in.const_data_ptr<int32_t>(),
      values_out.data_ptr<int32_t>(), static_cast<int>(total), static_cast<int>(segments), off, off + 1, 0,
      int(sizeof(T) * 8), stream));
}

template <class T>
void multiclass_impl(const at::Tensor& boxes, const at::Tensor& scores_in, const MulticlassOptions& opt,
                     MulticlassOutputs& out) {
  const at::Tensor scores = scores_in.contiguous();
  const int64_t B = scores.size(0), N = scores.size(1), C = scores.size(2);
  const int64_t K = opt.topk_per_class > 0 ? std::min(opt.topk_per_class, N) : N;
  const int64_t CK = C * K;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto opts = scores.options();
  if (B == 0) return;
  if (CK == 0) {
    out.num_detections.zero_();
    out.boxes.zero_();
    out.scores.zero_();
    out.labels.fill_(-1);
    out.indices.fill_(-1);
    return;
  }
  // 1. per (image, class): scores in decreasing order, the first K above the threshold
  at::Tensor keys = at::empty({B * C * N}, opts), anchors = at::empty({B * C * N}, opts.dtype(at::kInt));
  candidate_keys_kernel<T><<<cuda::blocks_for(B * C * N), cuda::kThreads, 0, stream>>>(
      scores.const_data_ptr<T>(), B, N, C, opt.background_class, keys.data_ptr<T>(), anchors.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor sorted_keys = at::empty_like(keys), sorted_anchors = at::empty_like(anchors);
  segmented_sort_desc<T>(keys, anchors, sorted_keys, sorted_anchors, B * C, N);
  at::Tensor cand_score = at::empty({B * CK}, opts), cand_anchor = at::empty({B * CK}, opts.dtype(at::kInt));
  at::Tensor cand_slot = at::empty({B * CK}, opts.dtype(at::kInt));
  gather_candidates_kernel<T><<<cuda::blocks_for(B * CK), cuda::kThreads, 0, stream>>>(
      sorted_keys.const_data_ptr<T>(), sorted_anchors.const_data_ptr<int32_t>(), B, N, C, K, T(opt.score_threshold),
      cand_score.data_ptr<T>(), cand_anchor.data_ptr<int32_t>(), cand_slot.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // 2. per image: all candidates by decreasing score (stable: class, then anchor, on ties)
  at::Tensor score_sorted = at::empty_like(cand_score), slot_sorted = at::empty_like(cand_slot);
  segmented_sort_desc<T>(cand_score, cand_slot, score_sorted, slot_sorted, B, CK);
  // 3. greedy per image
  const int64_t max_det = opt.max_detections;
  at::Tensor kept_boxes = at::empty({B * std::max<int64_t>(max_det, 1) * 5}, opts);
  at::Tensor kept_cls = at::empty({B * std::max<int64_t>(max_det, 1)}, opts.dtype(at::kInt));
  const bool specific = boxes.dim() == 4;
  const BoxSource<T> src{boxes.const_data_ptr<T>(), boxes.stride(0), boxes.stride(1), specific ? boxes.stride(2) : 0,
                         boxes.stride(-1), opt.box_format};
  multiclass_greedy_kernel<T><<<static_cast<unsigned>(B), kGreedyThreads, 0, stream>>>(
      src, score_sorted.const_data_ptr<T>(), slot_sorted.const_data_ptr<int32_t>(), cand_anchor.const_data_ptr<int32_t>(),
      CK, K, max_det, opt.class_agnostic, threshold_below<T>(opt.iou_threshold), kept_boxes.data_ptr<T>(),
      kept_cls.data_ptr<int32_t>(), out.num_detections.data_ptr<int64_t>(), out.boxes.data_ptr<T>(),
      out.scores.data_ptr<T>(), out.labels.data_ptr<int64_t>(), out.indices.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---- soft-NMS ----------------------------------------------------------------------------------------

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
__global__ void soft_nms_kernel(SoftArrays<T> w, int64_t n0, T t, T sigma, T min_score, SoftNmsMethod method,
                                T offset, T* dets, uint8_t* removed, int64_t* hole_rank, int64_t* tail_source,
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
    BoxTerms<T> a;
    a.x1 = w.x1[i];
    a.y1 = w.y1[i];
    a.x2 = w.x2[i];
    a.y2 = w.y2[i];
    a.area = w.area[i];
    a.cx = a.cy = a.aspect = T(0);
    for (int64_t k = i + 1 + tid; k < n; k += kSoftThreads) {
      BoxTerms<T> b;
      b.x1 = w.x1[k];
      b.y1 = w.y1[k];
      b.x2 = w.x2[k];
      b.y2 = w.y2[k];
      b.area = w.area[k];
      b.cx = b.cy = b.aspect = T(0);
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

// ---- rotated IoU -------------------------------------------------------------------------------------

template <class T>
__global__ void box_iou_rotated_kernel(const T* b1, const T* b2, int64_t N, int64_t M, T* out) {
  for (int64_t k = cuda::global_index(); k < N * M; k += cuda::grid_stride()) {
    const RotatedGeometry::Box a = RotatedGeometry::load(b1 + (k / M) * 5);
    const RotatedGeometry::Box b = RotatedGeometry::load(b2 + (k % M) * 5);
    const double dx = a.cx - b.cx, dy = a.cy - b.cy, r = a.reach + b.reach;
    out[k] = (dx * dx + dy * dy > r * r * (1 + 1e-9))
                 ? T(0)
                 : T(rotated_iou(a.cx, a.cy, a.w, a.h, a.angle, b.cx, b.cy, b.w, b.h, b.angle));
  }
}

// ---- the kernels -------------------------------------------------------------------------------------

struct CudaKernels {
  static at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double thr) {
    return batched_nms(boxes, scores, at::Tensor(), thr);
  }

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double thr) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    const SortedProblem p = sort_problem(scores, idxs);
    at::Tensor keep;
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms", [&] {
      const at::Tensor sorted = boxes.index_select(0, p.order).contiguous();
      keep = segmented_nms<AxisAligned<scalar_t>, scalar_t>(sorted, p.seg_end, p.dead,
                                                            AxisAligned<scalar_t>{threshold_below<scalar_t>(thr)});
    });
    return kept_by_score(p, keep, scores);
  }

  // With labels, the candidates are spread into the dense [B, N, C] layout (-inf where a candidate is not of
  // that class, and for negative labels) and share the dense path: same kernels, same order. A label
  // >= C trips scatter's device-side index check (validating on the host would synchronise).
  static void multiclass_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& labels,
                             const MulticlassOptions& opt, MulticlassOutputs& out) {
    const c10::cuda::CUDAGuard guard(scores.device());
    at::Tensor dense = scores;
    if (labels.defined()) {
      const double lowest = -std::numeric_limits<double>::infinity();
      dense = at::full({scores.size(0), scores.size(1), opt.num_classes}, lowest, scores.options());
      const at::Tensor candidate = labels.ge(0);
      dense.scatter_(2, labels.clamp_min(0).unsqueeze(-1), at::where(candidate, scores, lowest).unsqueeze(-1));
    }
    AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "multiclass_nms", [&] {
      multiclass_impl<scalar_t>(boxes, dense, opt, out);
    });
  }

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
        const SoftArrays<scalar_t> w{x1.data_ptr<scalar_t>(), y1.data_ptr<scalar_t>(),   x2.data_ptr<scalar_t>(),
                                     y2.data_ptr<scalar_t>(), area.data_ptr<scalar_t>(), sc.data_ptr<scalar_t>(),
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

  static at::Tensor nms_rotated(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double thr) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    const SortedProblem p = sort_problem(scores, idxs);
    at::Tensor keep;
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_rotated", [&] {
      const at::Tensor sorted = boxes.index_select(0, p.order).contiguous();
      keep = segmented_nms<RotatedGeometry, scalar_t>(sorted, p.seg_end, p.dead, RotatedGeometry{thr});
    });
    return kept_by_score(p, keep, scores);
  }

  static void topk_per_level(const at::Tensor& scores, const TopkProblem& p, at::Tensor& values, at::Tensor& indices) {
    const c10::cuda::CUDAGuard guard(scores.device());
    const double inf = std::numeric_limits<double>::infinity();
    values.fill_(-inf);
    indices.fill_(-1);
    for (size_t l = 0; l + 1 < p.start.size(); ++l) {
      const int64_t m = std::min(p.k, p.start[l + 1] - p.start[l]);
      if (m == 0) continue;
      const at::Tensor level = scores.slice(1, p.start[l], p.start[l + 1]);
      const at::Tensor pass = p.thresholded ? level.gt(p.threshold) : level.eq(level);  // NaN never passes
      // Ascending stable sort of -score, scores that fail as NaN (sorted last): the best first, equal
      // scores by increasing index.
      const at::Tensor key = at::where(pass, level.neg(), std::numeric_limits<double>::quiet_NaN());
      const auto sorted = key.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false);
      const at::Tensor head = std::get<0>(sorted).slice(1, 0, m), order = std::get<1>(sorted).slice(1, 0, m);
      const at::Tensor found = head.eq(head);
      values.select(1, int64_t(l)).slice(1, 0, m).copy_(at::where(found, level.gather(1, order), -inf));
      indices.select(1, int64_t(l)).slice(1, 0, m).copy_(at::where(found, order.add(p.start[l]), -1));
    }
  }

  static void box_iou_rotated(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out) {
    const c10::cuda::CUDAGuard guard(b1.device());
    const at::Tensor c1 = b1.contiguous(), c2 = b2.contiguous();
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "box_iou_rotated", [&] {
      box_iou_rotated_kernel<scalar_t>
          <<<cuda::blocks_for(out.numel()), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
              c1.const_data_ptr<scalar_t>(), c2.const_data_ptr<scalar_t>(), c1.size(0), c2.size(0),
              out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::nms
