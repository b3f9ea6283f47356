// CPU kernels of box_overlap_max / box_overlap_ties (front end and semantics: ops/matching.h).
//
// Work is split into tasks of one image x kChunk anchors. A task copies its anchors' terms into
// L1-resident arrays, then streams the image's ground truth. For each ground-truth box, one
// branch-free loop computes the kChunk qualities into a row and updates the per-anchor running
// max/argmax; a second pass keeps kLanes running max/argmax over the row for the ground-truth
// side. Both are plain unit-stride loops, which the compiler vectorises across anchors (fused into
// one loop they were not, and ran 15x slower). Lanes and then tasks are merged in anchor order, so
// the result is torch.max's (first index among ties, NaN first) for any thread count. Extra memory:
// O(tasks x M) for the per-task ground-truth partials, never M x N.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "common/box_math.h"
#include "common/rows.h"
#include "common/simd.h"
#include "ops/matching.h"

namespace pydet::matching {
namespace {

constexpr int64_t kChunk = 512;  // anchors per task: terms + running state stay in L1
constexpr int kLanes = 16;

// torch.max(dim) order: does (v, i) beat the incumbent (best, bi)? NaN beats numbers, among equals
// (or NaNs) the lower index wins. Callers visit indices in increasing order except when merging.
template <class T>
PYDET_HD bool beats(T v, int64_t i, T best, int64_t bi) {
  const bool v_nan = v != v, b_nan = best != best;
  return (v_nan & !b_nan) | (v > best) | (((v == best) | (v_nan & b_nan)) & (i < bi));
}

template <class T>
struct ChunkTerms {
  alignas(64) T x1[kChunk], y1[kChunk], x2[kChunk], y2[kChunk], area[kChunk];
  alignas(64) T ignored[kChunk];  // 1 where the anchor is ignored (quality forced to -1), else 0
  alignas(64) T pad[kChunk];      // 1 past the last anchor: quality forced to -inf (never a max)
};

template <BoxMetric M, class T>
PYDET_HD T quality(const BoxTerms<T>& g, const BoxTerms<T>& a, bool anchors_first, const MetricParams<T>& mp) {
  if constexpr (M == BoxMetric::kMmIoF) {
    return anchors_first ? box_metric<M>(a, g, mp) : box_metric<M>(g, a, mp);
  } else {
    return box_metric<M>(g, a, mp);  // symmetric, bit for bit
  }
}

template <BoxMetric M, class T>
void load_chunk(const BoxRows<T>& anchors, const uint8_t* ignored, int64_t start, int64_t count,
                const MetricParams<T>& mp, ChunkTerms<T>& c) {
  for (int64_t j = 0; j < kChunk; ++j) {
    const bool real = j < count;
    const Box4<T> q = real ? anchors[start + j] : Box4<T>{0, 0, 0, 0};
    const BoxTerms<T> t = box_terms<M>(q.a, q.b, q.c, q.d, mp);
    c.x1[j] = t.x1;
    c.y1[j] = t.y1;
    c.x2[j] = t.x2;
    c.y2[j] = t.y2;
    c.area[j] = t.area;
    c.ignored[j] = T(real && ignored != nullptr && ignored[start + j]);
    c.pad[j] = T(!real);
  }
}

template <BoxMetric M, class T>
PYDET_HD T chunk_quality(const BoxTerms<T>& g, const ChunkTerms<T>& c, int64_t j, bool anchors_first,
                         const MetricParams<T>& mp) {
  BoxTerms<T> a{};
  a.x1 = c.x1[j];
  a.y1 = c.y1[j];
  a.x2 = c.x2[j];
  a.y2 = c.y2[j];
  a.area = c.area[j];
  const T v = quality<M>(g, a, anchors_first, mp);
  return select(c.pad[j] != T(0), -std::numeric_limits<T>::infinity(), select(c.ignored[j] != T(0), T(-1), v));
}

// One task: anchors [start, start + count) of one image against its `m` ground-truth boxes.
// Writes per-anchor results and this task's per-gt partial (value, index) into gt_part/gt_part_idx.
template <BoxMetric M, class T>
PYDET_SIMD_INLINE void max_task(const BoxRows<T> gt, int64_t m, const ChunkTerms<T>& c, int64_t start, int64_t count,
                                bool anchors_first, const MetricParams<T> mp, T* anchor_max, int64_t* anchor_argmax,
                                T* gt_part, int64_t* gt_part_idx) {
  alignas(64) T best[kChunk];
  alignas(64) int32_t arg[kChunk];
  alignas(64) T row[kChunk];
  for (int64_t j = 0; j < kChunk; ++j) {
    best[j] = -std::numeric_limits<T>::infinity();
    arg[j] = 0;  // every quality beats -inf or equals it (padding), so ground truth 0 is the default
  }
  for (int64_t g = 0; g < m; ++g) {
    const Box4<T> q = gt[g];
    const BoxTerms<T> gterms = box_terms<M>(q.a, q.b, q.c, q.d, mp);
    const int32_t gi = static_cast<int32_t>(g);
    // Anchor side: g increases, so a strict improvement (or a first NaN) keeps the first argmax.
    for (int64_t j = 0; j < kChunk; ++j) {
      const T v = chunk_quality<M>(gterms, c, j, anchors_first, mp);
      row[j] = v;
      const bool take = (v > best[j]) | ((v != v) & (best[j] == best[j]));
      best[j] = select(take, v, best[j]);
      arg[j] = take ? gi : arg[j];
    }
    // Ground-truth side: kLanes running maxima over the row; within a lane j increases, same rule.
    alignas(64) T lane_best[kLanes];
    alignas(64) int32_t lane_arg[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      lane_best[l] = -std::numeric_limits<T>::infinity();
      lane_arg[l] = std::numeric_limits<int32_t>::max();
    }
    for (int64_t j0 = 0; j0 < kChunk; j0 += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const T v = row[j0 + l];
        const bool lt = (v > lane_best[l]) | ((v != v) & (lane_best[l] == lane_best[l]));
        lane_best[l] = select(lt, v, lane_best[l]);
        lane_arg[l] = lt ? static_cast<int32_t>(j0 + l) : lane_arg[l];
      }
    }
    T gb = lane_best[0];
    int64_t ga = lane_arg[0];
    for (int l = 1; l < kLanes; ++l) {
      if (beats(lane_best[l], int64_t(lane_arg[l]), gb, ga)) {
        gb = lane_best[l];
        ga = lane_arg[l];
      }
    }
    gt_part[g] = gb;
    gt_part_idx[g] = ga == std::numeric_limits<int32_t>::max() ? -1 : start + ga;  // -inf only: padding
  }
  for (int64_t j = 0; j < count; ++j) {
    anchor_max[start + j] = m > 0 ? best[j] : -std::numeric_limits<T>::infinity();
    anchor_argmax[start + j] = m > 0 ? int64_t(arg[j]) : -1;
  }
}

// Last ground-truth box g (in increasing order) with best[g] >= min_best and quality == best[g].
template <BoxMetric M, class T>
PYDET_SIMD_INLINE void ties_task(const BoxRows<T> gt, int64_t m, const T* gt_best, T min_best, const ChunkTerms<T>& c,
                                 int64_t start, int64_t count, bool anchors_first, const MetricParams<T> mp,
                                 int64_t* out) {
  alignas(64) int32_t last[kChunk];
  for (int64_t j = 0; j < kChunk; ++j) last[j] = -1;
  for (int64_t g = 0; g < m; ++g) {
    const T target = gt_best[g];
    if (!(target >= min_best)) continue;
    const Box4<T> q = gt[g];
    const BoxTerms<T> gterms = box_terms<M>(q.a, q.b, q.c, q.d, mp);
    const int32_t gi = static_cast<int32_t>(g);
    for (int64_t j = 0; j < kChunk; ++j) {
      const T v = chunk_quality<M>(gterms, c, j, anchors_first, mp);
      last[j] = v == target ? gi : last[j];
    }
  }
  for (int64_t j = 0; j < count; ++j) out[start + j] = last[j];
}

// Number of ground-truth boxes of image b, checked against the padded size.
inline int64_t count_of(const int64_t* counts, int64_t b, int64_t m_max, const char* op) {
  const int64_t m = counts[b];
  TORCH_CHECK_VALUE(m >= 0 && m <= m_max, "pydet.", op, ": num_gt[", b, "] = ", m, " is outside [0, ", m_max,
                    "] (the padded number of ground-truth boxes per image)");
  return m;
}

// Validates num_gt, then runs f(task, image, first anchor, anchor count, terms) over every task
// (image x kChunk anchors) in parallel, with the task's anchor terms loaded.
template <BoxMetric M, class T, class F>
void for_each_task(const Problem& p, const MetricParams<T>& mp, const char* op, const F& f) {
  const int64_t batch = p.gt.size(0), m_max = p.gt.size(1), n = p.anchors.size(0);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int64_t* counts = p.counts.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) count_of(counts, b, m_max, op);
  const uint8_t* ignored =
      p.ignored.defined() ? reinterpret_cast<const uint8_t*>(p.ignored.const_data_ptr<bool>()) : nullptr;
  at::parallel_for(0, batch * chunks, 1, [&](int64_t tb, int64_t te) {
    auto terms = std::make_unique<ChunkTerms<T>>();
    for (int64_t t = tb; t < te; ++t) {
      const int64_t b = t / chunks, start = (t - b * chunks) * kChunk, count = std::min(kChunk, n - start);
      load_chunk<M>(BoxRows<T>(p.anchors), ignored ? ignored + b * n : nullptr, start, count, mp, *terms);
      f(t, b, start, count, *terms);
    }
  });
}

struct CpuKernels {
  static void overlap_max(const Problem& p, const Quality& q, at::Tensor& anchor_max, at::Tensor& anchor_argmax,
                          at::Tensor& gt_max, at::Tensor& gt_argmax) {
    const int64_t batch = p.gt.size(0), m_max = p.gt.size(1), n = p.anchors.size(0);
    const int64_t chunks = (n + kChunk - 1) / kChunk, tasks = batch * chunks;
    const int64_t* counts = p.counts.const_data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(p.gt.scalar_type(), "box_overlap_max", [&] {
      using T = scalar_t;
      const MetricParams<T> mp{T(q.eps), T(0)};
      std::vector<T> part(static_cast<size_t>(tasks * m_max));
      std::vector<int64_t> part_idx(static_cast<size_t>(tasks * m_max));
      T* amax = anchor_max.data_ptr<T>();
      int64_t* aarg = anchor_argmax.data_ptr<int64_t>();
      with_metric(q.metric, [&](auto metric) {
        constexpr BoxMetric kM = decltype(metric)::value;
        for_each_task<kM, T>(p, mp, "box_overlap_max",
                             [&](int64_t t, int64_t b, int64_t start, int64_t count, const ChunkTerms<T>& terms) {
                               const BoxRows<T> gt(p.gt.select(0, b));
                               simd::dispatch([&] {
                                 max_task<kM>(gt, counts[b], terms, start, count, q.anchors_first, mp, amax + b * n,
                                              aarg + b * n, part.data() + t * m_max, part_idx.data() + t * m_max);
                               });
                             });
      });
      // Merge the per-task partials in anchor order.
      T* gmax = gt_max.data_ptr<T>();
      int64_t* garg = gt_argmax.data_ptr<int64_t>();
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t g = 0; g < m_max; ++g) {
          T best = -std::numeric_limits<T>::infinity();
          int64_t bi = -1;
          if (g < counts[b]) {
            for (int64_t c = 0; c < chunks; ++c) {
              const int64_t t = b * chunks + c;
              if (part_idx[t * m_max + g] >= 0 &&
                  (bi < 0 || beats(part[t * m_max + g], part_idx[t * m_max + g], best, bi))) {
                best = part[t * m_max + g];
                bi = part_idx[t * m_max + g];
              }
            }
          }
          gmax[b * m_max + g] = best;
          garg[b * m_max + g] = bi;
        }
      }
    });
  }

  static void overlap_ties(const Problem& p, const Quality& q, const at::Tensor& gt_best, double min_best,
                           at::Tensor& out) {
    const int64_t m_max = p.gt.size(1), n = p.anchors.size(0);
    const int64_t* counts = p.counts.const_data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(p.gt.scalar_type(), "box_overlap_ties", [&] {
      using T = scalar_t;
      const MetricParams<T> mp{T(q.eps), T(0)};
      const T* best = gt_best.const_data_ptr<T>();
      int64_t* o = out.data_ptr<int64_t>();
      with_metric(q.metric, [&](auto metric) {
        constexpr BoxMetric kM = decltype(metric)::value;
        for_each_task<kM, T>(p, mp, "box_overlap_ties",
                             [&](int64_t, int64_t b, int64_t start, int64_t count, const ChunkTerms<T>& terms) {
                               const BoxRows<T> gt(p.gt.select(0, b));
                               simd::dispatch([&] {
                                 ties_task<kM>(gt, counts[b], best + b * m_max, T(min_best), terms, start, count,
                                               q.anchors_first, mp, o + b * n);
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

}  // namespace pydet::matching
