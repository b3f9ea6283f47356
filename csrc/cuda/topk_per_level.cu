// CUDA kernel of topk_per_level. Front end: ops/topk_per_level.h.
//
// topk_per_level: composed of ATen's device ops, a stable sort per level (ties by index, as on the
// CPU); static shapes, no host sync.
#include <ATen/ops/sort.h>
#include <ATen/ops/where.h>
#include <torch/library.h>

#include <limits>

#include "cuda/launch.cuh"
#include "ops/topk_per_level.h"

namespace pydet::candidates {
namespace {

struct CudaKernels {
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
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::candidates
