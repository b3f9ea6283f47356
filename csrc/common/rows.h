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

// Rows of a [K, 4] tensor with arbitrary strides.
template <class T>
struct BoxRows {
  const T* data;
  int64_t row_stride, col_stride, size;

  explicit BoxRows(const at::Tensor& t)
      : data(t.const_data_ptr<T>()), row_stride(t.stride(0)), col_stride(t.stride(1)), size(t.size(0)) {}

  PYDET_HD Box4<T> operator[](int64_t k) const {
    const T* r = data + k * row_stride;
    return {r[0], r[col_stride], r[2 * col_stride], r[3 * col_stride]};
  }
};

// Rows of a [B, M, 4] tensor with arbitrary strides.
template <class T>
struct BatchedBoxRows {
  const T* data;
  int64_t batch_stride, row_stride, col_stride;

  explicit BatchedBoxRows(const at::Tensor& t)
      : data(t.const_data_ptr<T>()), batch_stride(t.stride(0)), row_stride(t.stride(1)), col_stride(t.stride(2)) {}

  PYDET_HD Box4<T> at(int64_t b, int64_t k) const {
    const T* r = data + b * batch_stride + k * row_stride;
    return {r[0], r[col_stride], r[2 * col_stride], r[3 * col_stride]};
  }
};

// Boxes of a [B, N, 4 C] tensor with arbitrary strides (C boxes per row; stride 0 broadcasts).
template <class T>
struct Rows3 {
  const T* data;
  int64_t s0, s1, s2;

  explicit Rows3(const at::Tensor& t)
      : data(t.const_data_ptr<T>()), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)) {}
  PYDET_HD Rows3(const T* d, int64_t stride0, int64_t stride1, int64_t stride2)
      : data(d), s0(stride0), s1(stride1), s2(stride2) {}

  PYDET_HD Box4<T> at(int64_t b, int64_t n, int64_t c) const {
    const T* r = data + b * s0 + n * s1 + 4 * c * s2;
    return {r[0], r[s2], r[2 * s2], r[3 * s2]};
  }
};

}  // namespace pydet
