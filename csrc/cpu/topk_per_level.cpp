// CPU kernel of topk_per_level. Front end: ops/topk_per_level.h.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/nms_math.h"
#include "cpu/score_order.h"
#include "cpu/score_scan.h"
#include "ops/topk_per_level.h"

namespace pydet::candidates {
namespace {

using nms::for_each_at_least;
using nms::higher;
using nms::Ranked;

//
// One pass over the scores. Each level of each image is cut into chunks scanned in parallel; a chunk
// keeps its own top k in a buffer: scores at or above a running lower bound are appended, and when the
// buffer holds 2k + 64 entries it is cut to its best k and the bound rises to just above the k-th
// value (the scan goes in index order, so a later equal score loses the tie). When few scores pass,
// the pass costs about a read of the scores. The chunks' lists are then merged per level: the best k
// by (value desc, index asc).

template <class S>
using Accumulate = std::conditional_t<std::is_same_v<S, double>, double, float>;  // half/bf16 read as float

// The best k of p[begin, end) with score >= lo (appended to out, unordered).
template <class S, class A>
void chunk_topk(const S* p, int64_t begin, int64_t end, size_t k, A lo, std::vector<Ranked<A>>& out) {
  const size_t cap = 2 * k + 64;
  const auto cut = [&] {
    std::nth_element(out.begin(), out.begin() + (k - 1), out.end(), higher<A>);
    out.resize(k);
  };
  for_each_at_least<S, A>(p + begin, end - begin, lo, [&](int64_t j) {
    const A v = static_cast<A>(p[begin + j]);
    if (!(v >= lo)) return;  // lo rose since the block was scanned
    out.push_back({v, begin + j});
    if (out.size() < cap) return;
    cut();
    lo = bound_above(out[k - 1].score);  // later scores must beat the k-th best
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
  std::vector<std::vector<Ranked<A>>> found(tasks.size());
  std::atomic<size_t> next_task{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (size_t t; (t = next_task.fetch_add(1)) < tasks.size();) {
      chunk_topk<S, A>(sc, tasks[t].begin, tasks[t].end, k, lo, found[t]);
    }
  });

  S* ov = values.data_ptr<S>();
  int64_t* oi = indices.data_ptr<int64_t>();
  at::parallel_for(0, B * L, 1, [&](int64_t g0, int64_t g1) {
    std::vector<Ranked<A>> all;
    for (int64_t g = g0; g < g1; ++g) {
      all.clear();
      for (size_t t = first_task[g]; t < first_task[g + 1]; ++t)
        all.insert(all.end(), found[t].begin(), found[t].end());
      const size_t m = std::min(k, all.size());
      if (m < all.size()) std::nth_element(all.begin(), all.begin() + (m - 1), all.end(), higher<A>);
      std::sort(all.begin(), all.begin() + m, higher<A>);
      const int64_t row0 = (g / L) * R;  // indices are positions within the image's row
      for (size_t j = 0; j < k; ++j) {
        ov[g * prob.k + j] = j < m ? static_cast<S>(all[j].score) : static_cast<S>(-kInf);
        oi[g * prob.k + j] = j < m ? all[j].index - row0 : -1;
      }
    }
  });
}

struct CpuKernels {
  static void topk_per_level(const at::Tensor& scores, const TopkProblem& p, at::Tensor& values, at::Tensor& indices) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "topk_per_level",
                                    [&] { topk_per_level_impl<scalar_t>(scores, p, values, indices); });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::candidates
