// CUDA kernels of greedy NMS (nms, batched_nms). Front end: ops/nms.h; the mask algorithm: cuda/nms_mask.cuh.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cuda/nms_mask.cuh"
#include "ops/nms.h"

namespace pydet::nms {
namespace {

struct CudaKernels {
  static at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double thr) {
    return batched_nms(boxes, scores, at::Tensor(), thr);
  }

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs, double thr) {
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
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::nms
