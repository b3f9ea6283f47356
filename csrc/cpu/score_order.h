// The order every NMS op visits boxes in: decreasing score, equal scores by increasing position (a
// stable order, identical on every device), NaN scores dropped. CPU kernels only.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

namespace pydet::nms {

// A score and the position it belongs to, sorted by decreasing score then increasing position: the
// order every NMS op uses (stable, identical on every device). Sorting these pairs by value keeps the
// sort cache-friendly (no indirect score lookups).
template <class V>
struct Ranked {
  V score;
  int64_t index;
};
template <class V>
bool higher(const Ranked<V>& a, const Ranked<V>& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// Positions of the non-NaN scores in decreasing score order.
inline std::vector<int64_t> score_order(const double* score, int64_t n) {
  std::vector<Ranked<double>> r;
  r.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(score[i])) r.push_back({score[i], i});
  }
  std::sort(r.begin(), r.end(), higher<double>);
  std::vector<int64_t> order(r.size());
  for (size_t k = 0; k < r.size(); ++k) order[k] = r[k].index;
  return order;
}

// Positions of the non-NaN scores grouped by class (increasing), each group in decreasing score order;
// `segments` receives the group boundaries. Bucketing by class first keeps every sort small.
inline std::vector<int64_t> class_score_order(const double* score, const int64_t* cls, int64_t n,
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
    std::vector<Ranked<double>> r;
    for (int64_t g = g0; g < g1; ++g) {
      r.clear();
      for (size_t k = segments[g]; k < segments[g + 1]; ++k)
        r.push_back({score[by_class[k].second], by_class[k].second});
      std::sort(r.begin(), r.end(), higher<double>);
      for (size_t k = 0; k < r.size(); ++k) order[segments[g] + k] = r[k].index;
    }
  });
  return order;
}

// Kept indices re-ordered by decreasing score, equal scores by increasing index.
inline at::Tensor sorted_by_score(const std::vector<int64_t>& kept, const double* score,
                                  const at::TensorOptions& options) {
  std::vector<Ranked<double>> r(kept.size());
  for (size_t k = 0; k < kept.size(); ++k) r[k] = {score[kept[k]], kept[k]};
  std::sort(r.begin(), r.end(), higher<double>);
  at::Tensor out = at::empty({static_cast<int64_t>(r.size())}, options.dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (size_t k = 0; k < r.size(); ++k) o[k] = r[k].index;
  return out;
}

}  // namespace pydet::nms
