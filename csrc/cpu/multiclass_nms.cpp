// CPU kernel of multiclass_nms. Front end: ops/multiclass_nms.h.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/nms_math.h"
#include "common/rows.h"
#include "cpu/score_scan.h"
#include "cpu/suppression.h"
#include "ops/multiclass_nms.h"

namespace pydet::multiclass_nms {
namespace {

using nms::any_iou_above;
using nms::for_each_at_least;
using nms::SoaBoxes;

// A candidate (score, class, anchor) packed into one 128-bit key whose increasing order is the
// detection order -- score descending, then class, then anchor ascending -- so sorting and selecting
// compare integers instead of three fields. Score bits are mapped to an order-preserving unsigned
// integer and inverted (-0.0 counts as +0.0, as the float comparison does).
template <class T>
struct Candidate {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static constexpr Bits kSign = Bits(1) << (8 * sizeof(T) - 1);
  unsigned __int128 key;

  Candidate() = default;
  Candidate(T score, int64_t cls, int64_t anchor) {
    Bits u;
    const T s = score == T(0) ? T(0) : score;
    std::memcpy(&u, &s, sizeof(T));
    u = (u & kSign) ? ~u : (u | kSign);  // increasing with the score
    key = (static_cast<unsigned __int128>(~u) << 64) | (uint64_t(uint32_t(cls)) << 32) | uint32_t(anchor);
  }
  T score() const {
    Bits u = ~static_cast<Bits>(key >> 64);
    u = (u & kSign) ? (u & ~kSign) : ~u;
    T s;
    std::memcpy(&s, &u, sizeof(T));
    return s;
  }
  int32_t cls() const { return int32_t(uint32_t(uint64_t(key) >> 32)); }
  int32_t anchor() const { return int32_t(uint32_t(uint64_t(key))); }
  bool operator<(const Candidate& o) const { return key < o.key; }
};

// Sorts v. Candidates often arrive as a few runs already in order (the labels form after a per-level top-k:
// one run per level, in decreasing score); merging those runs costs a pass each, where a sort would compare
// n log n times, mostly mispredicting. More than kMaxRuns runs: std::sort.
template <class T>
void sort_runs(std::vector<T>& v) {
  constexpr size_t kMaxRuns = 16;
  std::vector<size_t> bounds{0};
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] < v[i - 1]) {
      if (bounds.size() == kMaxRuns) {
        std::sort(v.begin(), v.end());
        return;
      }
      bounds.push_back(i);
    }
  }
  bounds.push_back(v.size());
  while (bounds.size() > 2) {  // merge neighbouring runs pairwise
    std::vector<size_t> merged{0};
    for (size_t k = 0; k + 1 < bounds.size(); k += 2) {
      if (k + 2 < bounds.size()) {
        std::inplace_merge(v.begin() + bounds[k], v.begin() + bounds[k + 1], v.begin() + bounds[k + 2]);
      }
      merged.push_back(bounds[std::min(k + 2, bounds.size() - 1)]);
    }
    bounds = std::move(merged);
  }
}

// scores [B, N, C]; or [B, N] with labels [B, N] (one class per candidate, negative: not a candidate).
template <class T>
void multiclass_impl(const at::Tensor& boxes, const at::Tensor& scores_in, const at::Tensor& labels_in,
                     const MulticlassOptions& opt, MulticlassOutputs& out) {
  const at::Tensor scores = scores_in.contiguous();
  const bool labeled = labels_in.defined();
  const at::Tensor labels = labeled ? labels_in.contiguous() : labels_in;
  const int64_t B = scores.size(0), N = scores.size(1), C = opt.num_classes, per_row = labeled ? 1 : C;
  const bool class_specific = boxes.dim() == 4;
  const T* sc = scores.const_data_ptr<T>();
  const T* bx = boxes.const_data_ptr<T>();
  const int64_t sb = boxes.stride(0), sn = boxes.stride(1), sk = boxes.stride(-1);
  const int64_t scls = class_specific ? boxes.stride(2) : 0;
  // `score > score_threshold` in the scores' dtype, as torch compares a tensor with a Python float
  const T lo = bound_above(T(opt.score_threshold));
  const T iou_t = threshold_below<T>(opt.iou_threshold);
  const int64_t max_det = opt.max_detections;

  const auto box_at = [&](int64_t b, int64_t n, int64_t c) {
    const T* p = bx + b * sb + n * sn + c * scls;
    return to_xyxy(opt.box_format, Box4<T>{p[0], p[sk], p[2 * sk], p[3 * sk]});
  };

  // 1. Candidates: score above the threshold; with topk_per_class, gathered per (image, class) and cut to
  // the top `topk_per_class` of each class, else gathered per image.
  const bool per_class = opt.topk_per_class > 0;
  const int64_t groups = per_class ? C : 1;
  std::vector<std::vector<Candidate<T>>> found(static_cast<size_t>(B * groups));
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* image = sc + b * N * per_row;
      const auto add = [&](int64_t i, int64_t n, int64_t c) {  // score image[i] of anchor n, class c
        if (c != opt.background_class) found[b * groups + (per_class ? c : 0)].emplace_back(image[i], c, n);
      };
      if (labeled) {
        const int64_t* image_labels = labels.const_data_ptr<int64_t>() + b * N;
        for_each_at_least<T, T>(image, N, lo, [&](int64_t n) {
          const int64_t c = image_labels[n];
          TORCH_CHECK_VALUE(c < C, "pydet.multiclass_nms: labels holds ", c, " at [", b, ", ", n,
                            "], not a class index in [0, num_classes = ", C, ")");
          if (c >= 0) add(n, n, c);
        });
      } else {
        for_each_at_least<T, T>(image, N * C, lo, [&](int64_t i) { add(i, i / C, i % C); });
      }
    }
  });
  if (per_class) {
    at::parallel_for(0, B * C, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        auto& v = found[k];
        if (int64_t(v.size()) > opt.topk_per_class) {
          std::nth_element(v.begin(), v.begin() + opt.topk_per_class, v.end());
          v.resize(static_cast<size_t>(opt.topk_per_class));
        }
      }
    });
  }

  // 2-3. Per image, all classes' candidates in score order; keep greedily (suppression within a class,
  // or across classes when class_agnostic) until max_detections are kept.
  int64_t* num = out.num_detections.data_ptr<int64_t>();
  T* ob = out.boxes.data_ptr<T>();
  T* os = out.scores.data_ptr<T>();
  int64_t* ol = out.labels.data_ptr<int64_t>();
  int64_t* oi = out.indices.data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      std::vector<Candidate<T>> cands = std::move(found[b * groups]);
      for (int64_t g = 1; g < groups; ++g)
        cands.insert(cands.end(), found[b * groups + g].begin(), found[b * groups + g].end());
      sort_runs(cands);
      std::vector<SoaBoxes<T>> kept(opt.class_agnostic ? 1 : static_cast<size_t>(C));
      int64_t k = 0;
      for (const Candidate<T>& cand : cands) {
        if (k == max_det) break;
        const Box4<T> q = box_at(b, cand.anchor(), cand.cls());
        const BoxTerms<T> terms = nms_terms(q.a, q.b, q.c, q.d);
        if (can_suppress(q.a, q.b, q.c, q.d)) {
          SoaBoxes<T>& list = kept[opt.class_agnostic ? 0 : cand.cls()];
          if (any_iou_above(terms, list, 0, list.size(), iou_t)) continue;
          list.push(terms);
        }
        T* dst = ob + (b * max_det + k) * 4;
        dst[0] = q.a;
        dst[1] = q.b;
        dst[2] = q.c;
        dst[3] = q.d;
        os[b * max_det + k] = cand.score();
        ol[b * max_det + k] = cand.cls();
        oi[b * max_det + k] = cand.anchor();
        ++k;
      }
      num[b] = k;
      for (; k < max_det; ++k) {  // padding
        std::fill(ob + (b * max_det + k) * 4, ob + (b * max_det + k + 1) * 4, T(0));
        os[b * max_det + k] = T(0);
        ol[b * max_det + k] = -1;
        oi[b * max_det + k] = -1;
      }
    }
  });
}

struct CpuKernels {
  static void multiclass_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& labels,
                             const MulticlassOptions& opt, MulticlassOutputs& out) {
    AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "multiclass_nms",
                               [&] { multiclass_impl<scalar_t>(boxes, scores, labels, opt, out); });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::multiclass_nms
