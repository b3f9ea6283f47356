// CUDA kernel of anchor_grid (front end: ops/anchors.h): every level in one launch, one thread per
// output row (one box: a 16-byte store for float), 64-bit indices, grid-stride loop.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

#include "cuda/launch.cuh"
#include "ops/anchors.h"

namespace pydet::anchors {
namespace {

constexpr int kMaxLevels = 16;

// The levels travel as a kernel parameter (constant memory), not through a device buffer.
struct Levels {
  Level level[kMaxLevels];
  int count;
};

template <class T>
struct alignas(4 * sizeof(T)) Box {
  T v[4];
};

template <class T>
__global__ void anchor_grid_kernel(const Levels levels, int64_t rows, bool anchor_major, bool shift_corners, T* out) {
  using Acc = at::opmath_type<T>;
  for (int64_t r = cuda::global_index(); r < rows; r += cuda::grid_stride()) {
    int l = 0;
    while (l + 1 < levels.count && r >= levels.level[l + 1].row_start) ++l;
    const Level& L = levels.level[l];
    const int64_t local = r - L.row_start;
    int64_t a, y, x;
    if (anchor_major) {
      x = local % L.width;
      y = (local / L.width) % L.height;
      a = local / (L.width * L.height);
    } else {
      a = local % L.anchors;
      x = (local / L.anchors) % L.width;
      y = local / (L.anchors * L.width);
    }
    const T* b = static_cast<const T*>(L.base) + 4 * a;
    const T s_x = static_cast<const T*>(L.shifts_x)[x], s_y = static_cast<const T*>(L.shifts_y)[y];
    const Acc scale_x(L.scale_x), scale_y(L.scale_y);
    Box<T> box;
    box.v[0] = anchor_coord<T, true>(b[0], s_x, scale_x);
    box.v[1] = anchor_coord<T, true>(b[1], s_y, scale_y);
    box.v[2] = shift_corners ? anchor_coord<T, true>(b[2], s_x, scale_x) : anchor_coord<T, false>(b[2], s_x, scale_x);
    box.v[3] = shift_corners ? anchor_coord<T, true>(b[3], s_y, scale_y) : anchor_coord<T, false>(b[3], s_y, scale_y);
    reinterpret_cast<Box<T>*>(out)[r] = box;
  }
}

struct CudaKernels {
  static void grid(const std::vector<Level>& levels, bool anchor_major, bool shift_corners, at::Tensor& out) {
    TORCH_CHECK_VALUE(levels.size() <= kMaxLevels, "pydet.anchor_grid: at most ", kMaxLevels, " levels on CUDA, got ",
                      levels.size());
    const c10::cuda::CUDAGuard guard(out.device());
    Levels arg{};
    for (size_t l = 0; l < levels.size(); ++l) arg.level[l] = levels[l];
    arg.count = static_cast<int>(levels.size());
    const int64_t rows = out.size(0);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "anchor_grid", [&] {
      anchor_grid_kernel<scalar_t><<<cuda::blocks_for(rows), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          arg, rows, anchor_major, shift_corners, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::anchors
