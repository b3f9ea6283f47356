// CPU kernels for the NMS family. Front ends: ops/nms.h; formulas: common/nms_math.h, rotated.h.
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
//
// topk_per_level (the candidate selection before NMS) is one pass over the scores; see its section.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "common/nms_math.h"
#include "common/rotated.h"
#include "common/rows.h"
#include "common/simd.h"
#include "ops/nms.h"

namespace pydet::nms {
namespace {

// ---- ordering ---------------------------------------------------------------------------------

// A score and the position it belongs to, sorted by decreasing score then increasing position: the
// order every NMS op uses (stable, identical on every device). Sorting these pairs by value keeps the
// sort cache-friendly (no indirect score lookups).
struct Ranked {
  double score;
  int64_t index;
};
inline bool higher(const Ranked& a, const Ranked& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// Positions of the non-NaN scores in decreasing score order.
std::vector<int64_t> score_order(const double* score, int64_t n) {
  std::vector<Ranked> r;
  r.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(score[i])) r.push_back({score[i], i});
  }
  std::sort(r.begin(), r.end(), higher);
  std::vector<int64_t> order(r.size());
  for (size_t k = 0; k < r.size(); ++k) order[k] = r[k].index;
  return order;
}

// Positions of the non-NaN scores grouped by class (increasing), each group in decreasing score order;
// `segments` receives the group boundaries. Bucketing by class first keeps every sort small.
std::vector<int64_t> class_score_order(const double* score, const int64_t* cls, int64_t n,
                                       std::vector<size_t>& segments) {
  std::vector<std::pair<int64_t, int64_t>> by_class;  // (class, position), positions increasing per class
  by_class.reserve(static_cast<size_t>(n));
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(score[i])) continue;
    by_class.push_back({cls[i], i});
    lo = std::min(lo, cls[i]);
    hi = std::max(hi, cls[i]);
  }
  const size_t m = by_class.size();
  if (m > 0 && double(hi) - double(lo) <= 4.0 * double(m) + 1024) {  // counting sort (stable)
    std::vector<size_t> start(static_cast<size_t>(hi - lo) + 2, 0);
    for (const auto& e : by_class) ++start[e.first - lo + 1];
    std::partial_sum(start.begin(), start.end(), start.begin());
    std::vector<std::pair<int64_t, int64_t>> sorted(m);
    for (const auto& e : by_class) sorted[start[e.first - lo]++] = e;
    by_class.swap(sorted);
  } else {
    std::sort(by_class.begin(), by_class.end());
  }
  segments.assign(1, 0);
  for (size_t k = 1; k < m; ++k) {
    if (by_class[k].first != by_class[k - 1].first) segments.push_back(k);
  }
  segments.push_back(m);
  std::vector<int64_t> order(by_class.size());
  at::parallel_for(0, int64_t(segments.size()) - 1, 8, [&](int64_t g0, int64_t g1) {
    std::vector<Ranked> r;
    for (int64_t g = g0; g < g1; ++g) {
      r.clear();
      for (size_t k = segments[g]; k < segments[g + 1]; ++k) r.push_back({score[by_class[k].second], by_class[k].second});
      std::sort(r.begin(), r.end(), higher);
      for (size_t k = 0; k < r.size(); ++k) order[segments[g] + k] = r[k].index;
    }
  });
  return order;
}

// Kept indices re-ordered by decreasing score, equal scores by increasing index.
at::Tensor sorted_by_score(const std::vector<int64_t>& kept, const double* score, const at::TensorOptions& options) {
  std::vector<Ranked> r(kept.size());
  for (size_t k = 0; k < kept.size(); ++k) r[k] = {score[kept[k]], kept[k]};
  std::sort(r.begin(), r.end(), higher);
  at::Tensor out = at::empty({static_cast<int64_t>(r.size())}, options.dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (size_t k = 0; k < r.size(); ++k) o[k] = r[k].index;
  return out;
}

// ---- boxes in structure-of-arrays form ---------------------------------------------------------

template <class T>
struct SoaBoxes {
  std::vector<T> x1, y1, x2, y2, area;

  void resize(size_t n) {
    x1.resize(n);
    y1.resize(n);
    x2.resize(n);
    y2.resize(n);
    area.resize(n);
  }
  void set(size_t i, const BoxTerms<T>& t) {
    x1[i] = t.x1;
    y1[i] = t.y1;
    x2[i] = t.x2;
    y2[i] = t.y2;
    area[i] = t.area;
  }
  void push(const BoxTerms<T>& t) {
    x1.push_back(t.x1);
    y1.push_back(t.y1);
    x2.push_back(t.x2);
    y2.push_back(t.y2);
    area.push_back(t.area);
  }
  BoxTerms<T> terms(size_t i) const {
    BoxTerms<T> t;
    t.x1 = x1[i];
    t.y1 = y1[i];
    t.x2 = x2[i];
    t.y2 = y2[i];
    t.area = area[i];
    t.cx = t.cy = t.aspect = T(0);
    return t;
  }
  size_t size() const { return x1.size(); }
};

// Does any of the n boxes (SoA, starting at offset) have IoU > t with b? No early exit inside, so the
// loop vectorises; callers pass short runs.
template <class T>
PYDET_SIMD_INLINE bool any_iou_above(const BoxTerms<T> b, const T* __restrict x1, const T* __restrict y1,
                                     const T* __restrict x2, const T* __restrict y2, const T* __restrict area,
                                     int64_t n, T t) {
  int hit = 0;
  for (int64_t j = 0; j < n; ++j) {
    BoxTerms<T> a;
    a.x1 = x1[j];
    a.y1 = y1[j];
    a.x2 = x2[j];
    a.y2 = y2[j];
    a.area = area[j];
    a.cx = a.cy = a.aspect = T(0);
    hit |= nms_iou(a, b) > t;
  }
  return hit != 0;
}

template <class T>
bool any_iou_above(const BoxTerms<T>& b, const SoaBoxes<T>& s, size_t begin, size_t n, T t) {
  constexpr size_t kRun = 64;  // early exit between runs
  return simd::dispatch([&] {
    for (size_t k = 0; k < n; k += kRun) {
      const size_t m = std::min(kRun, n - k);
      const size_t o = begin + k;
      if (any_iou_above<T>(b, s.x1.data() + o, s.y1.data() + o, s.x2.data() + o, s.y2.data() + o,
                           s.area.data() + o, static_cast<int64_t>(m), t)) {
        return true;
      }
    }
    return false;
  });
}

// ---- the spatial index of kept boxes -----------------------------------------------------------

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
      const int l = static_cast<int>(std::lower_bound(exps.begin(), exps.end(), level_of(size_of(boxes, i))) - exps.begin());
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
      const int64_t x0 = clamp_cell((cx - rx - L.x_lo) / L.cell, L.nx), x1 = clamp_cell((cx + rx - L.x_lo) / L.cell, L.nx);
      const int64_t y0 = clamp_cell((cy - ry - L.y_lo) / L.cell, L.ny), y1 = clamp_cell((cy + ry - L.y_lo) / L.cell, L.ny);
      for (int64_t iy = y0; iy <= y1; ++iy) {
        for (int64_t ix = x0; ix <= x1; ++ix) {
          const int64_t c = L.base + iy * L.nx + ix;
          if (count_[c] > 0 && any_iou_above(b, kept_, static_cast<size_t>(start_[c]), static_cast<size_t>(count_[c]), t)) {
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

// ---- scanning scores against a bound ----------------------------------------------------------------
//
// Candidate selection (multiclass_nms, topk_per_level) looks for the few scores at or above a bound
// among many. Scores are scanned in blocks of 64 with one vectorised comparison per block; only the
// blocks that hold a candidate are looked at further, through a 64-bit mask of their hits.

// Blocks of 64 scores: bit j of a block's hit mask is set when its score j is >= lo (NaN never is).
constexpr int64_t kScanBlock = 64;

template <class S, class A>
__attribute__((always_inline)) inline uint64_t hit_mask(const S* p, A lo) {
  uint64_t m = 0;
  if constexpr (std::is_same_v<S, A>) {  // float, double: a vector compare per 64 bytes
    using U = std::conditional_t<sizeof(A) == 4, uint32_t, uint64_t>;
    constexpr int64_t kLanes = simd::kV64<A>, kLaneBits = 8 * sizeof(U);
    simd::V64<U> weight;  // lane l -> bit l
    for (int64_t l = 0; l < kLanes; ++l) weight[l] = U(1) << l;
    simd::V64<U> acc[kScanBlock / kLaneBits] = {};  // bit b of the block in bit b % kLaneBits of a lane
    for (int64_t q = 0; q < kScanBlock; q += kLanes) {
      const simd::V64<U> bits = (simd::V64<U>)(simd::load64(p + q) >= lo) & weight;
      acc[q / kLaneBits] |= bits << U(q % kLaneBits);
    }
    for (int64_t a = 0; a < kScanBlock / kLaneBits; ++a) m |= uint64_t(simd::or_lanes<U>(acc[a])) << (a * kLaneBits);
  } else {  // float16, bfloat16
    for (int64_t j = 0; j < kScanBlock; ++j) m |= uint64_t(static_cast<A>(p[j]) >= lo) << j;
  }
  return m;
}

// The offset of the first whole block of p[0, n) holding a score >= lo, with its hit mask; the offset
// of the partial last block (n rounded down to a block) when there is none. Blocks without one, the
// common case under a selective threshold, cost one vectorised comparison.
template <class S, class A>
PYDET_SIMD_INLINE int64_t next_hit_block(const S* __restrict p, int64_t n, A lo, uint64_t& mask) {
  int64_t i = 0;
  for (; i + kScanBlock <= n; i += kScanBlock) {
    int hit = 0;
    for (int64_t j = 0; j < kScanBlock; ++j) hit |= static_cast<A>(p[i + j]) >= lo;
    if (hit) {
      mask = hit_mask<S, A>(p + i, lo);
      return i;
    }
  }
  return i;
}

// Calls visit(i), in increasing order, for the positions i of p[0, n) whose score is >= lo. lo is
// read again after each call, so visit may raise it (visit must then check the score against it).
template <class S, class A, class Visit>
void for_each_at_least(const S* p, int64_t n, const A& lo, Visit&& visit) {
  int64_t i = 0;
  const auto next_hit = [&](uint64_t& mask) {
    return simd::dispatch([&] { return next_hit_block<S, A>(p + i, n - i, lo, mask); });
  };
  for (uint64_t mask = 0; (i += next_hit(mask)) + kScanBlock <= n; i += kScanBlock) {
    for (; mask != 0; mask &= mask - 1) visit(i + __builtin_ctzll(mask));
  }
  for (; i < n; ++i) {
    if (static_cast<A>(p[i]) >= lo) visit(i);
  }
}

// ---- multiclass ---------------------------------------------------------------------------------

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
      for (int64_t g = 1; g < groups; ++g) cands.insert(cands.end(), found[b * groups + g].begin(), found[b * groups + g].end());
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

// ---- soft-NMS (mmcv) ----------------------------------------------------------------------------

// Decays scores sc[0..n) by the overlap of box a with each box (mmcv's soft-NMS weights). The
// weights depend only on the box, so all of them are applied in one vectorisable pass.
template <class T, SoftNmsMethod kMethod>
PYDET_SIMD_INLINE void soft_decay(const BoxTerms<T> a, const T* __restrict x1, const T* __restrict y1,
                                  const T* __restrict x2, const T* __restrict y2, const T* __restrict area,
                                  T* __restrict sc, int64_t n, T t, T sigma, T offset) {
  // mmcv's overlap: widths with the legacy +offset, no eps (an eps of -inf disables the clamp).
  const MetricParams<T> p{-std::numeric_limits<T>::infinity(), offset};
  for (int64_t k = 0; k < n; ++k) {
    BoxTerms<T> b;
    b.x1 = x1[k];
    b.y1 = y1[k];
    b.x2 = x2[k];
    b.y2 = y2[k];
    b.area = area[k];
    b.cx = b.cy = b.aspect = T(0);
    const T ovr = box_metric<BoxMetric::kMmIoU>(a, b, p);
    T weight;
    if constexpr (kMethod == SoftNmsMethod::kNaive) {
      weight = ovr >= t ? T(0) : T(1);
    } else if constexpr (kMethod == SoftNmsMethod::kLinear) {
      weight = ovr >= t ? T(1) - ovr : T(1);
    } else {  // a NaN IoU (NaN box) leaves the score alone; select(), not ?:, so that exp_ stays out of a branch
      weight = select(ovr == ovr, exp_(-(ovr * ovr) / sigma), T(1));
    }
    sc[k] *= weight;
  }
}

template <class T>
std::tuple<at::Tensor, at::Tensor> soft_nms_impl(const at::Tensor& boxes, const at::Tensor& scores_in, double thr,
                                                 double sigma_d, double min_score_d, SoftNmsMethod method,
                                                 int64_t offset) {
  const at::Tensor scores = scores_in.contiguous();
  const T* s_in = scores.const_data_ptr<T>();
  const BoxRows<T> rows(boxes);
  // Working arrays in mmcv's order; NaN scores are dropped first (never kept, never suppress).
  std::vector<T> x1, y1, x2, y2, sc, area;
  std::vector<int64_t> ind;
  for (int64_t i = 0; i < rows.size; ++i) {
    if (std::isnan(s_in[i])) continue;
    const Box4<T> q = rows[i];
    x1.push_back(q.a);
    y1.push_back(q.b);
    x2.push_back(q.c);
    y2.push_back(q.d);
    sc.push_back(s_in[i]);
    area.push_back((q.c - q.a + T(offset)) * (q.d - q.b + T(offset)));
    ind.push_back(i);
  }
  const T t = T(thr), sigma = T(sigma_d), min_score = T(min_score_d);
  size_t n = x1.size();
  std::vector<T> dets;
  for (size_t i = 0; i < n; ++i) {
    // The first maximum of sc[i..n) (mmcv scans with a strict `<`, so NaN never wins).
    T top = sc[i];
    for (size_t pos = i + 1; pos < n; ++pos) top = sc[pos] > top ? sc[pos] : top;
    size_t best = i;
    if (top == top && !(sc[i] == top)) {
      best = i + 1;
      while (!(sc[best] == top)) ++best;
    }
    std::swap(x1[i], x1[best]);
    std::swap(y1[i], y1[best]);
    std::swap(x2[i], x2[best]);
    std::swap(y2[i], y2[best]);
    std::swap(sc[i], sc[best]);
    std::swap(area[i], area[best]);
    std::swap(ind[i], ind[best]);
    dets.insert(dets.end(), {x1[i], y1[i], x2[i], y2[i], sc[i]});
    BoxTerms<T> a;
    a.x1 = x1[i];
    a.y1 = y1[i];
    a.x2 = x2[i];
    a.y2 = y2[i];
    a.area = area[i];
    a.cx = a.cy = a.aspect = T(0);
    const size_t o = i + 1;
    const auto decay = [&](auto kind) {
      simd::dispatch([&] {
        soft_decay<T, decltype(kind)::value>(a, x1.data() + o, y1.data() + o, x2.data() + o, y2.data() + o,
                                             area.data() + o, sc.data() + o, int64_t(n - o), t, sigma, T(offset));
      });
    };
    if (method == SoftNmsMethod::kNaive) {
      decay(std::integral_constant<SoftNmsMethod, SoftNmsMethod::kNaive>{});
    } else if (method == SoftNmsMethod::kLinear) {
      decay(std::integral_constant<SoftNmsMethod, SoftNmsMethod::kLinear>{});
    } else {
      decay(std::integral_constant<SoftNmsMethod, SoftNmsMethod::kGaussian>{});
    }
    // Drop scores below min_score: the last box takes the dropped one's place and is examined next.
    for (size_t pos = o; pos < n;) {
      if (sc[pos] < min_score) {
        const size_t last = --n;
        x1[pos] = x1[last];
        y1[pos] = y1[last];
        x2[pos] = x2[last];
        y2[pos] = y2[last];
        sc[pos] = sc[last];
        area[pos] = area[last];
        ind[pos] = ind[last];
      } else {
        ++pos;
      }
    }
  }
  const int64_t k = static_cast<int64_t>(n);
  at::Tensor out_dets = at::empty({k, 5}, boxes.options());
  at::Tensor out_ind = at::empty({k}, boxes.options().dtype(at::kLong));
  std::copy(dets.begin(), dets.end(), out_dets.data_ptr<T>());
  std::copy(ind.begin(), ind.begin() + k, out_ind.data_ptr<int64_t>());
  return {out_dets, out_ind};
}

// ---- rotated --------------------------------------------------------------------------------------

struct RotatedBox {
  double cx, cy, w, h, angle, reach;  // reach: half the diagonal (bounding-circle radius)
};

template <class T>
std::vector<RotatedBox> gather_rotated(const at::Tensor& boxes, const int64_t* order, size_t n) {
  const T* p = boxes.const_data_ptr<T>();
  const int64_t s0 = boxes.stride(0), s1 = boxes.stride(1);
  std::vector<RotatedBox> r(n);
  for (size_t k = 0; k < n; ++k) {
    const T* q = order == nullptr ? p + int64_t(k) * s0 : p + order[k] * s0;
    const double w = q[2 * s1], h = q[3 * s1];
    r[k] = {double(q[0]), double(q[s1]), w, h, double(q[4 * s1]), 0.5 * std::sqrt(w * w + h * h)};
  }
  return r;
}

double rotated_pair_iou(const RotatedBox& a, const RotatedBox& b) {
  const double dx = a.cx - b.cx, dy = a.cy - b.cy, r = a.reach + b.reach;
  if (dx * dx + dy * dy > r * r * (1 + 1e-9)) return 0.0;  // bounding circles apart: no overlap
  return rotated_iou(a.cx, a.cy, a.w, a.h, a.angle, b.cx, b.cy, b.w, b.h, b.angle);
}

// ---- top-k per level -------------------------------------------------------------------------------
//
// One pass over the scores. Each level of each image is cut into chunks scanned in parallel; a chunk
// keeps its own top k in a buffer: scores at or above a running lower bound are appended, and when the
// buffer holds 2k + 64 entries it is cut to its best k and the bound rises to just above the k-th
// value (the scan goes in index order, so a later equal score loses the tie). When few scores pass,
// the pass costs about a read of the scores. The chunks' lists are then merged per level: the best k
// by (value desc, index asc).

template <class S>
using Accumulate = std::conditional_t<std::is_same_v<S, double>, double, float>;  // half/bf16 read as float

template <class A>
struct Scored {
  A value;
  int64_t index;
};
template <class A>
bool better(const Scored<A>& a, const Scored<A>& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

// The best k of p[begin, end) with score >= lo (appended to out, unordered).
template <class S, class A>
void chunk_topk(const S* p, int64_t begin, int64_t end, size_t k, A lo, std::vector<Scored<A>>& out) {
  const size_t cap = 2 * k + 64;
  const auto cut = [&] {
    std::nth_element(out.begin(), out.begin() + (k - 1), out.end(), better<A>);
    out.resize(k);
  };
  for_each_at_least<S, A>(p + begin, end - begin, lo, [&](int64_t j) {
    const A v = static_cast<A>(p[begin + j]);
    if (!(v >= lo)) return;  // lo rose since the block was scanned
    out.push_back({v, begin + j});
    if (out.size() < cap) return;
    cut();
    lo = bound_above(out[k - 1].value);  // later scores must beat the k-th best
  });
  if (out.size() > k) cut();
}

template <class S>
void topk_per_level_impl(const at::Tensor& scores, const TopkProblem& prob, at::Tensor& values, at::Tensor& indices) {
  using A = Accumulate<S>;
  constexpr A kInf = std::numeric_limits<A>::infinity();
  const int64_t B = scores.size(0), R = scores.size(1), L = int64_t(prob.start.size()) - 1;
  const size_t k = static_cast<size_t>(prob.k);
  // candidates: score >= lo; `> threshold` for a threshold, every non-NaN score without one
  const A lo = prob.thresholded ? bound_above(static_cast<A>(prob.threshold)) : -kInf;
  const bool none = lo != lo;  // a threshold of +inf: nothing to scan for
  const S* sc = scores.const_data_ptr<S>();

  // Tasks: (image, level, chunk), about 8 per thread in all, each of at least 64K scores; threads take
  // the next task as they finish one (levels differ in size, so a static split would be uneven).
  struct Task {
    int64_t begin, end;
  };
  std::vector<Task> tasks;
  std::vector<size_t> first_task(static_cast<size_t>(B * L) + 1, 0);
  const int64_t threads = at::get_num_threads();
  const int64_t chunk = std::max<int64_t>(int64_t(1) << 16, B * R / (8 * threads) + 1);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t l = 0; l < L; ++l) {
      const int64_t lb = b * R + prob.start[l], le = b * R + prob.start[l + 1];
      const int64_t chunks = none ? 0 : (le - lb + chunk - 1) / chunk;
      for (int64_t c = 0; c < chunks; ++c) {
        tasks.push_back({lb + (le - lb) * c / chunks, lb + (le - lb) * (c + 1) / chunks});
      }
      first_task[b * L + l + 1] = tasks.size();
    }
  }
  std::vector<std::vector<Scored<A>>> found(tasks.size());
  std::atomic<size_t> next_task{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (size_t t; (t = next_task.fetch_add(1)) < tasks.size();) {
      chunk_topk<S, A>(sc, tasks[t].begin, tasks[t].end, k, lo, found[t]);
    }
  });

  S* ov = values.data_ptr<S>();
  int64_t* oi = indices.data_ptr<int64_t>();
  at::parallel_for(0, B * L, 1, [&](int64_t g0, int64_t g1) {
    std::vector<Scored<A>> all;
    for (int64_t g = g0; g < g1; ++g) {
      all.clear();
      for (size_t t = first_task[g]; t < first_task[g + 1]; ++t) all.insert(all.end(), found[t].begin(), found[t].end());
      const size_t m = std::min(k, all.size());
      if (m < all.size()) std::nth_element(all.begin(), all.begin() + (m - 1), all.end(), better<A>);
      std::sort(all.begin(), all.begin() + m, better<A>);
      const int64_t row0 = (g / L) * R;  // indices are positions within the image's row
      for (size_t j = 0; j < k; ++j) {
        ov[g * prob.k + j] = j < m ? static_cast<S>(all[j].value) : static_cast<S>(-kInf);
        oi[g * prob.k + j] = j < m ? all[j].index - row0 : -1;
      }
    }
  });
}

// ---- the kernels ----------------------------------------------------------------------------------

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

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double thr) {
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

  static void multiclass_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& labels,
                             const MulticlassOptions& opt, MulticlassOutputs& out) {
    AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "multiclass_nms", [&] {
      multiclass_impl<scalar_t>(boxes, scores, labels, opt, out);
    });
  }

  static std::tuple<at::Tensor, at::Tensor> soft_nms(const at::Tensor& boxes, const at::Tensor& scores, double thr,
                                                     double sigma, double min_score, SoftNmsMethod method,
                                                     int64_t offset) {
    std::tuple<at::Tensor, at::Tensor> out;
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "soft_nms", [&] {
      out = soft_nms_impl<scalar_t>(boxes, scores, thr, sigma, min_score, method, offset);
    });
    return out;
  }

  // Greedy rotated NMS, per class when idxs is defined (detectron2 semantics: IoU > threshold).
  static at::Tensor nms_rotated(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double thr) {
    const at::Tensor s = scores.contiguous();
    const double* sp = s.const_data_ptr<double>();
    const at::Tensor c = idxs.defined() ? idxs.contiguous() : at::Tensor();
    const int64_t* cp = idxs.defined() ? c.const_data_ptr<int64_t>() : nullptr;
    std::vector<size_t> seg{0};
    const std::vector<int64_t> order = cp != nullptr ? class_score_order(sp, cp, s.size(0), seg) : score_order(sp, s.size(0));
    if (cp == nullptr) seg.push_back(order.size());
    std::vector<uint8_t> keep(order.size(), 0);
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_rotated", [&] {
      const auto rb = gather_rotated<scalar_t>(boxes, order.data(), order.size());
      at::parallel_for(0, int64_t(seg.size()) - 1, 1, [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) {
          std::vector<size_t> kept;
          for (size_t i = seg[g]; i < seg[g + 1]; ++i) {
            bool suppressed = false;
            for (size_t k : kept) {
              if (rotated_pair_iou(rb[k], rb[i]) > thr) {
                suppressed = true;
                break;
              }
            }
            if (!suppressed) {
              keep[i] = 1;
              kept.push_back(i);
            }
          }
        }
      });
    });
    std::vector<int64_t> kept;
    for (size_t k = 0; k < order.size(); ++k) {
      if (keep[k]) kept.push_back(order[k]);
    }
    return sorted_by_score(kept, sp, boxes.options());
  }

  static void box_iou_rotated(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out) {
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "box_iou_rotated", [&] {
      const auto r1 = gather_rotated<scalar_t>(b1, nullptr, size_t(b1.size(0)));
      const auto r2 = gather_rotated<scalar_t>(b2, nullptr, size_t(b2.size(0)));
      scalar_t* o = out.data_ptr<scalar_t>();
      const int64_t M = b2.size(0);
      at::parallel_for(0, b1.size(0) * M, 256, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          o[k] = scalar_t(rotated_pair_iou(r1[k / M], r2[k % M]));
        }
      });
    });
  }

  static void topk_per_level(const at::Tensor& scores, const TopkProblem& p, at::Tensor& values, at::Tensor& indices) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "topk_per_level", [&] {
      topk_per_level_impl<scalar_t>(scores, p, values, indices);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_shaped(m);
}


}  // namespace pydet::nms
