// Strided read access to box tensors, shared by the CPU and CUDA kernels (inputs are read in place,
// never copied to be contiguous). Construct on the host; index on either side.
#pragma once

#include <ATen/core/Tensor.h>

#include "common/box_math.h"

namespace pydet {

// Writes box q as row k of a contiguous [K, 4] output.
template <class T>
PYDET_HD void store_row(T* __restrict__ out, int64_t k, const Box4<T>& q) {
  out[4 * k + 0] = q.a;
  out[4 * k + 1] = q.b;
  out[4 * k + 2] = q.c;
  out[4 * k + 3] = q.d;
}

// Boxes of a [K, 4], [B, M, 4] or [B, N, 4 C] tensor (C boxes per row) with arbitrary strides; a
// stride of 0 broadcasts. A [K, 4] tensor reads as batch 0 of one.
template <class T>
struct BoxRows {
  const T* data;
  int64_t batch_stride, row_stride, col_stride;
  int64_t size;  // rows per batch (K, M or N)

  explicit BoxRows(const at::Tensor& t)
      : data(t.const_data_ptr<T>()),
        batch_stride(t.dim() == 3 ? t.stride(0) : 0),
        row_stride(t.stride(-2)),
        col_stride(t.stride(-1)),
        size(t.size(-2)) {}
  PYDET_HD BoxRows(const T* d, int64_t batch_stride_, int64_t row_stride_, int64_t col_stride_, int64_t size_)
      : data(d), batch_stride(batch_stride_), row_stride(row_stride_), col_stride(col_stride_), size(size_) {}

  PYDET_HD Box4<T> operator[](int64_t k) const { return at(0, k); }
  PYDET_HD Box4<T> at(int64_t b, int64_t k, int64_t c = 0) const {
    const T* r = data + b * batch_stride + k * row_stride + 4 * c * col_stride;
    return {r[0], r[col_stride], r[2 * col_stride], r[3 * col_stride]};
  }
};

}  // namespace pydet
