// CUDA kernels of the rotated-box ops (nms_rotated, batched_nms_rotated, box_iou_rotated). Front end:
// ops/nms_rotated.h; the mask algorithm: cuda/nms_mask.cuh; geometry: common/rotated.h.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common/rotated.h"
#include "cuda/nms_mask.cuh"
#include "ops/nms_rotated.h"

namespace pydet::nms_rotated {
namespace {

using nms::kept_by_score;
using nms::RotatedGeometry;
using nms::segmented_nms;
using nms::sort_problem;
using nms::SortedProblem;

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

struct CudaKernels {
  static at::Tensor nms_rotated(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs, double thr) {
    const c10::cuda::CUDAGuard guard(boxes.device());
    const SortedProblem p = sort_problem(scores, idxs);
    at::Tensor keep;
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_rotated", [&] {
      const at::Tensor sorted = boxes.index_select(0, p.order).contiguous();
      keep = segmented_nms<RotatedGeometry, scalar_t>(sorted, p.seg_end, p.dead, RotatedGeometry{thr});
    });
    return kept_by_score(p, keep, scores);
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

}  // namespace pydet::nms_rotated
