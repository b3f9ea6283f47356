// CUDA kernel of multiclass_nms. Front end: ops/multiclass_nms.h.
//
// multiclass_nms: per-class top-k by a segmented radix sort, per-image candidate order by a second
// one, then one block per image keeps candidates greedily (32 at a time: checked in parallel against
// the kept list, then resolved in order) until max_detections are kept. Static shapes, no host sync.
#include <ATen/Dispatch.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/where.h>
#include <torch/library.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <limits>

#include "common/nms_math.h"
#include "cuda/launch.cuh"
#include "ops/multiclass_nms.h"

namespace pydet::multiclass_nms {
namespace {

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
                                         int64_t C, int64_t K, T score_threshold, T* cand_score, int32_t* cand_anchor,
                                         int32_t* cand_slot) {
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
  const BoxSource<T> src{boxes.const_data_ptr<T>(),      boxes.stride(0),  boxes.stride(1),
                         specific ? boxes.stride(2) : 0, boxes.stride(-1), opt.box_format};
  multiclass_greedy_kernel<T><<<static_cast<unsigned>(B), kGreedyThreads, 0, stream>>>(
      src, score_sorted.const_data_ptr<T>(), slot_sorted.const_data_ptr<int32_t>(),
      cand_anchor.const_data_ptr<int32_t>(), CK, K, max_det, opt.class_agnostic, threshold_below<T>(opt.iou_threshold),
      kept_boxes.data_ptr<T>(), kept_cls.data_ptr<int32_t>(), out.num_detections.data_ptr<int64_t>(),
      out.boxes.data_ptr<T>(), out.scores.data_ptr<T>(), out.labels.data_ptr<int64_t>(),
      out.indices.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

struct CudaKernels {
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
    AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "multiclass_nms",
                               [&] { multiclass_impl<scalar_t>(boxes, dense, opt, out); });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::multiclass_nms
