// CPU kernels of greedy NMS (nms, batched_nms). Front end: ops/nms.h; formulas: common/nms_math.h.
//
// Greedy NMS keeps a box iff no kept box of higher score has IoU > threshold with it. The exact
// greedy result is computed in chunks of boxes (in score order):
//   1. in parallel, each box of the chunk asks a spatial index of the boxes kept so far whether one
//      of them suppresses it;
//   2. the chunk's survivors are resolved against each other sequentially (a small SIMD loop);
//   3. the chunk's kept boxes are added to the index.
// The index buckets kept boxes by size (powers of two) and centre (a uniform grid per size). IoU > t
// forces the widths (and heights) of two boxes within a factor 1/t of each other and their centres
// within (1 - t) * max(width) in x (and height in y), so a query only visits the few size levels
// and grid cells where a suppressor can be. The bounds are applied with a relative margin (1e-4)
// larger than the rounding error of the float IoU, so the result is exactly the greedy one.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/nms_math.h"
#include "common/rows.h"
#include "cpu/score_order.h"
#include "cpu/suppression.h"
#include "ops/nms.h"

namespace pydet::nms {
namespace {

template <class T>
class KeptIndex {
 public:
  // boxes: all candidates in score order; eligible[i]: box i can suppress (can_suppress()).
  KeptIndex(const SoaBoxes<T>& boxes, const std::vector<uint8_t>& eligible, double threshold)
      : boxes_(boxes), t_(threshold > 0 ? threshold * (1 - 1e-4) : 0.0) {
    const size_t n = boxes.size();
    level_.assign(n, -1);
    cell_.assign(n, -1);
    // Size level of each eligible box: max(w, h) in [2^(e-1), 2^e).
    std::vector<int> exps;
    for (size_t i = 0; i < n; ++i) {
      if (eligible[i]) exps.push_back(level_of(size_of(boxes, i)));
    }
    std::sort(exps.begin(), exps.end());
    exps.erase(std::unique(exps.begin(), exps.end()), exps.end());
    levels_.resize(exps.size());
    for (size_t l = 0; l < exps.size(); ++l) {
      levels_[l].exponent = exps[l];
      levels_[l].size_hi = std::ldexp(1.0, exps[l]);
      levels_[l].x_lo = levels_[l].y_lo = INFINITY;
      levels_[l].x_hi = levels_[l].y_hi = -INFINITY;
    }
    for (size_t i = 0; i < n; ++i) {
      if (!eligible[i]) continue;
      const int l =
          static_cast<int>(std::lower_bound(exps.begin(), exps.end(), level_of(size_of(boxes, i))) - exps.begin());
      level_[i] = l;
      Level& L = levels_[l];
      const double cx = centre(boxes.x1[i], boxes.x2[i]), cy = centre(boxes.y1[i], boxes.y2[i]);
      L.x_lo = std::min(L.x_lo, cx);
      L.x_hi = std::max(L.x_hi, cx);
      L.y_lo = std::min(L.y_lo, cy);
      L.y_hi = std::max(L.y_hi, cy);
      ++L.count;
    }
    // A dense grid per level with cells as large as the level's boxes, coarsened until it has at most
    // about 4 cells per box (pathological coordinate ranges then degrade to a few large cells).
    int64_t cells = 0;
    for (Level& L : levels_) {
      L.cell = L.size_hi;
      const double limit = 4.0 * double(L.count) + 64.0;
      while (((L.x_hi - L.x_lo) / L.cell + 1) * ((L.y_hi - L.y_lo) / L.cell + 1) > limit) L.cell *= 2;
      L.nx = static_cast<int64_t>((L.x_hi - L.x_lo) / L.cell) + 1;
      L.ny = static_cast<int64_t>((L.y_hi - L.y_lo) / L.cell) + 1;
      L.base = cells;
      cells += L.nx * L.ny;
    }
    start_.assign(static_cast<size_t>(cells) + 1, 0);
    count_.assign(static_cast<size_t>(cells), 0);
    for (size_t i = 0; i < n; ++i) {
      if (level_[i] < 0) continue;
      const Level& L = levels_[level_[i]];
      const int64_t ix = clamp_cell((centre(boxes.x1[i], boxes.x2[i]) - L.x_lo) / L.cell, L.nx);
      const int64_t iy = clamp_cell((centre(boxes.y1[i], boxes.y2[i]) - L.y_lo) / L.cell, L.ny);
      cell_[i] = L.base + iy * L.nx + ix;
      ++start_[cell_[i] + 1];
    }
    std::partial_sum(start_.begin(), start_.end(), start_.begin());
    kept_.resize(static_cast<size_t>(start_.back()));
  }

  // Is box i suppressed by a kept box? Safe to call from several threads while nothing is inserted.
  bool suppressed(size_t i, T t) const {
    const BoxTerms<T> b = boxes_.terms(i);
    const double w = double(b.x2) - b.x1, h = double(b.y2) - b.y1;
    const double s = std::max(w, h);
    const double cx = centre(b.x1, b.x2), cy = centre(b.y1, b.y2);
    int e_lo = std::numeric_limits<int>::min(), e_hi = std::numeric_limits<int>::max();
    if (t_ > 0) {  // a suppressor's size is within (t s, s / t)
      e_lo = level_of(t_ * s);
      e_hi = level_of(s / t_);
    }
    for (const Level& L : levels_) {
      if (L.exponent < e_lo || L.exponent > e_hi) continue;
      // |dcx| < (1 - t) max(w_a, w_b), with w_a < 2^e for this level; slack for rounding in double.
      const double rx = (1 - t_) * std::max(L.size_hi, w) * (1 + 1e-6) + 1e-30;
      const double ry = (1 - t_) * std::max(L.size_hi, h) * (1 + 1e-6) + 1e-30;
      const int64_t x0 = clamp_cell((cx - rx - L.x_lo) / L.cell, L.nx),
                    x1 = clamp_cell((cx + rx - L.x_lo) / L.cell, L.nx);
      const int64_t y0 = clamp_cell((cy - ry - L.y_lo) / L.cell, L.ny),
                    y1 = clamp_cell((cy + ry - L.y_lo) / L.cell, L.ny);
      for (int64_t iy = y0; iy <= y1; ++iy) {
        for (int64_t ix = x0; ix <= x1; ++ix) {
          const int64_t c = L.base + iy * L.nx + ix;
          if (count_[c] > 0 &&
              any_iou_above(b, kept_, static_cast<size_t>(start_[c]), static_cast<size_t>(count_[c]), t)) {
            return true;
          }
        }
      }
    }
    return false;
  }

  void insert(size_t i) {
    const int64_t c = cell_[i];
    kept_.set(static_cast<size_t>(start_[c] + count_[c]++), boxes_.terms(i));
  }

 private:
  struct Level {
    int exponent = 0;
    double size_hi = 0, cell = 0, x_lo = 0, x_hi = 0, y_lo = 0, y_hi = 0;
    int64_t nx = 1, ny = 1, base = 0, count = 0;
  };
  static double centre(double lo, double hi) { return (lo + hi) * 0.5; }
  static double size_of(const SoaBoxes<T>& b, size_t i) {
    return std::max(double(b.x2[i]) - b.x1[i], double(b.y2[i]) - b.y1[i]);
  }
  // The size level containing x (x in [2^(e-1), 2^e) has level e); 0 and infinity map to the ends.
  static int level_of(double x) {
    if (!(x > 0)) return std::numeric_limits<int>::min();
    if (x == INFINITY) return std::numeric_limits<int>::max();
    int e;
    std::frexp(x, &e);
    return e;
  }
  static int64_t clamp_cell(double v, int64_t n) {
    if (!(v > 0)) return 0;  // also NaN
    return v >= double(n - 1) ? n - 1 : static_cast<int64_t>(v);
  }

  const SoaBoxes<T>& boxes_;
  double t_;  // the threshold relaxed by 1e-4 for the pruning bounds (never for the IoU test)
  std::vector<Level> levels_;
  std::vector<int> level_;
  std::vector<int64_t> cell_, start_, count_;
  SoaBoxes<T> kept_;
};

// Greedy NMS of boxes given in decreasing-score order; keep[i] = 1 for kept boxes.
template <class T>
void greedy_nms(const SoaBoxes<T>& boxes, double threshold, uint8_t* keep) {
  const size_t n = boxes.size();
  const T t = threshold_below<T>(threshold);
  std::vector<uint8_t> eligible(n);
  for (size_t i = 0; i < n; ++i) eligible[i] = can_suppress(boxes.x1[i], boxes.y1[i], boxes.x2[i], boxes.y2[i]);

  constexpr size_t kSmall = 512;
  if (n <= kSmall) {  // few boxes: check each against the kept list directly
    SoaBoxes<T> kept;
    for (size_t i = 0; i < n; ++i) {
      keep[i] = 1;
      if (!eligible[i]) continue;
      const BoxTerms<T> b = boxes.terms(i);
      if (any_iou_above(b, kept, 0, kept.size(), t)) {
        keep[i] = 0;
      } else {
        kept.push(b);
      }
    }
    return;
  }

  KeptIndex<T> index(boxes, eligible, threshold);
  constexpr size_t kChunk = 256;
  std::vector<uint8_t> suppressed(kChunk);
  SoaBoxes<T> chunk_kept;
  std::vector<size_t> chunk_kept_ids;
  for (size_t start = 0; start < n; start += kChunk) {
    const size_t end = std::min(n, start + kChunk);
    // 1. suppressed by a box kept in an earlier chunk?
    at::parallel_for(int64_t(start), int64_t(end), 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) suppressed[i - start] = eligible[i] && index.suppressed(size_t(i), t);
    });
    // 2. resolve the chunk in order
    chunk_kept = SoaBoxes<T>();
    chunk_kept_ids.clear();
    for (size_t i = start; i < end; ++i) {
      keep[i] = !suppressed[i - start];
      if (!eligible[i] || !keep[i]) continue;
      const BoxTerms<T> b = boxes.terms(i);
      if (any_iou_above(b, chunk_kept, 0, chunk_kept.size(), t)) {
        keep[i] = 0;
      } else {
        chunk_kept.push(b);
        chunk_kept_ids.push_back(i);
      }
    }
    // 3. index the new kept boxes
    for (size_t i : chunk_kept_ids) index.insert(i);
  }
}

// Gathers boxes [N, 4] (any strides) in the given order into SoA form.
template <class T>
SoaBoxes<T> gather(const at::Tensor& boxes, const int64_t* order, size_t n) {
  const BoxRows<T> rows(boxes);
  SoaBoxes<T> s;
  s.resize(n);
  for (size_t k = 0; k < n; ++k) {
    const Box4<T> q = rows[order[k]];
    s.set(k, nms_terms(q.a, q.b, q.c, q.d));
  }
  return s;
}

struct CpuKernels {
  static at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double thr) {
    const at::Tensor s = scores.contiguous();
    const std::vector<int64_t> order = score_order(s.const_data_ptr<double>(), s.size(0));
    std::vector<uint8_t> keep(order.size());
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms", [&] {
      greedy_nms(gather<scalar_t>(boxes, order.data(), order.size()), thr, keep.data());
    });
    std::vector<int64_t> kept;
    for (size_t k = 0; k < order.size(); ++k) {
      if (keep[k]) kept.push_back(order[k]);
    }
    at::Tensor out = at::empty({static_cast<int64_t>(kept.size())}, boxes.options().dtype(at::kLong));
    std::copy(kept.begin(), kept.end(), out.data_ptr<int64_t>());
    return out;
  }

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs, double thr) {
    const at::Tensor s = scores.contiguous(), c = idxs.contiguous();
    const double* sp = s.const_data_ptr<double>();
    const int64_t* cp = c.const_data_ptr<int64_t>();
    // One segment per class; classes never interact.
    std::vector<size_t> seg;
    const std::vector<int64_t> order = class_score_order(sp, cp, s.size(0), seg);
    std::vector<uint8_t> keep(order.size());
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "batched_nms", [&] {
      at::parallel_for(0, int64_t(seg.size()) - 1, 1, [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) {
          greedy_nms(gather<scalar_t>(boxes, order.data() + seg[g], seg[g + 1] - seg[g]), thr, keep.data() + seg[g]);
        }
      });
    });
    std::vector<int64_t> kept;
    for (size_t k = 0; k < order.size(); ++k) {
      if (keep[k]) kept.push_back(order[k]);
    }
    return sorted_by_score(kept, sp, boxes.options());
  }
};

}  // namespace

// torchvision's quantized nms (its QuantizedCPU kernel): the IoU of the boxes' integer
// representations -- scale and zero point cancel in it -- compared with the threshold in float, and
// the scores ordered by their representations (the same order for a positive scale).
at::Tensor quantized_nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const auto representation = [](const at::Tensor& t) { return t.is_quantized() ? t.int_repr().to(at::kFloat) : t; };
  return Ops<CpuKernels>::nms(representation(boxes), representation(scores), iou_threshold);
}

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, QuantizedCPU, m) {
  m.impl("nms", &quantized_nms);
}

}  // namespace pydet::nms
