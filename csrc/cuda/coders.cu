// CUDA kernels of box_encode / box_decode (+ decode backward): one thread per box, grid-stride loops,
// 64-bit indices. Front end: ops/coders.h; formulas: common/coder_math.h.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <type_traits>

#include "common/coder_math.h"
#include "common/rows.h"
#include "cuda/launch.cuh"
#include "ops/coders.h"

namespace pydet::coders {
namespace {

using cuda::global_index;
using cuda::grid_stride;

template <Coding C, class T>
__global__ void encode_kernel(BoxRows<T> ref, BoxRows<T> tgt, const int64_t* idx, int64_t is0, int64_t is1,
                              int64_t target_batch_stride, int64_t m, int64_t n_boxes, int64_t rows, CoderParams<T> p,
                              T* out) {
  for (int64_t r = global_index(); r < rows; r += grid_stride()) {
    const int64_t b = r / n_boxes, n = r - b * n_boxes;
    if (idx == nullptr) {
      store_row(out, r, encode_box<C>(ref.at(b, n, 0), tgt.at(b, n, 0), p));
    } else {
      const int64_t j = idx[b * is0 + n * is1];
      CUDA_KERNEL_ASSERT(j < m && "pydet.box_encode: target_index out of range");
      store_row(out, r,
                j < 0 ? Box4<T>{0, 0, 0, 0} : encode_box<C>(ref.at(b, n, 0), tgt.at(b * target_batch_stride, j, 0), p));
    }
  }
}

// Row r of out (over [B, K, C]) decodes deltas[b, n, c] against reference[b, n] with n = k, or n = idx[b, k]
// when gathering (a negative index gives zeros).
template <Coding C, bool kBackward, class T>
__global__ void decode_kernel(BoxRows<T> ref, BoxRows<T> deltas, const T* grad, const int64_t* idx, int64_t is0,
                              int64_t is1, int64_t n_src, int64_t k_rows, int64_t classes, int64_t rows,
                              CoderParams<T> p, T* out) {
  for (int64_t r = global_index(); r < rows; r += grid_stride()) {
    const int64_t c = r % classes, bk = r / classes, k = bk % k_rows, b = bk / k_rows;
    const int64_t n = idx == nullptr ? k : idx[b * is0 + k * is1];
    CUDA_KERNEL_ASSERT(n < n_src && "pydet.box_decode: index out of range");
    if (n < 0) {
      store_row(out, r, Box4<T>{0, 0, 0, 0});
      continue;
    }
    const Box4<T> rb = ref.at(b, n, 0), db = deltas.at(b, n, c);
    if constexpr (kBackward) {
      const Box4<T> g{grad[4 * r], grad[4 * r + 1], grad[4 * r + 2], grad[4 * r + 3]};
      store_row(out, r, decode_box_backward<C>(rb, db, g, p));
    } else {
      store_row(out, r, decode_box<C>(rb, db, p));
    }
  }
}

struct CudaKernels {
  static void encode(const at::Tensor& reference, const at::Tensor& targets, const at::Tensor& target_index,
                     at::Tensor& out, Coding coding, const CoderParams<double>& params) {
    const c10::cuda::CUDAGuard guard(out.device());
    const int64_t rows = out.size(0) * out.size(1);
    const bool gather = target_index.defined();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "box_encode", [&] {
      using T = scalar_t;
      with_coding(coding, [&](auto c) {
        encode_kernel<decltype(c)::value, T>
            <<<cuda::blocks_for(rows), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                BoxRows<T>(reference), BoxRows<T>(targets), gather ? target_index.const_data_ptr<int64_t>() : nullptr,
                gather && target_index.size(0) > 1 ? target_index.stride(0) : 0, gather ? target_index.stride(1) : 0,
                targets.size(0) > 1 ? 1 : 0, targets.size(1), out.size(1), rows, cast_params<T>(params),
                out.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }

  template <bool kBackward>
  static void decode_impl(const at::Tensor& grad, const at::Tensor& reference, const at::Tensor& deltas,
                          const at::Tensor& index, at::Tensor& out, Coding coding, const CoderParams<double>& params) {
    const c10::cuda::CUDAGuard guard(out.device());
    const bool gather = index.defined();
    const int64_t classes = deltas.size(2) / 4, k_rows = out.size(1), rows = out.size(0) * k_rows * classes;
    const at::Tensor g = kBackward ? grad.contiguous() : grad;
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "box_decode", [&] {
      using T = scalar_t;
      with_coding(coding, [&](auto c) {
        decode_kernel<decltype(c)::value, kBackward, T>
            <<<cuda::blocks_for(rows), cuda::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                BoxRows<T>(reference), BoxRows<T>(deltas), kBackward ? g.const_data_ptr<T>() : nullptr,
                gather ? index.const_data_ptr<int64_t>() : nullptr, gather && index.size(0) > 1 ? index.stride(0) : 0,
                gather ? index.stride(1) : 0, deltas.size(1), k_rows, classes, rows, cast_params<T>(params),
                out.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }

  static void decode(const at::Tensor& reference, const at::Tensor& deltas, const at::Tensor& index, at::Tensor& out,
                     Coding coding, const CoderParams<double>& params) {
    decode_impl<false>(at::Tensor(), reference, deltas, index, out, coding, params);
  }

  static void decode_backward(const at::Tensor& grad, const at::Tensor& reference, const at::Tensor& deltas,
                              at::Tensor& out, Coding coding, const CoderParams<double>& params) {
    decode_impl<true>(grad, reference, deltas, at::Tensor(), out, coding, params);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CUDA, m) {
  Ops<CudaKernels>::register_all(m);
}

}  // namespace pydet::coders
