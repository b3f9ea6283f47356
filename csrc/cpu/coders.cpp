// CPU kernels of box_encode / box_decode (+ decode backward). Front end: ops/coders.h; formulas:
// common/coder_math.h. The common case (one box per row, contiguous rows) runs a loop whose layout is
// a compile-time constant, compiled per SIMD ISA (simd.h), which the compiler vectorises across
// boxes; exp_/log_ are branch-free so they vectorise too. Other layouts index through strides.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "common/coder_math.h"
#include "common/rows.h"
#include "common/simd.h"
#include "ops/coders.h"

namespace pydet::coders {
namespace {

constexpr int64_t kGrain = 4096;

template <class T>
PYDET_HD Box4<T> load(const T* p) {
  return {p[0], p[1], p[2], p[3]};
}

// f(row, reference box, input box) for rows [begin, end) of the [B, N, C] problem, row = (b N + n) C + c.
// kDense: C == 1, reference rows contiguous (any batch stride), input [B, N, 4] contiguous.
template <bool kDense, class T, class F>
PYDET_TARGET_CLONES void rows_range(const Rows3<T> ref, const Rows3<T> in, int64_t n_boxes, int64_t classes,
                                    int64_t begin, int64_t end, const F& f) {
  if constexpr (kDense) {
    for (int64_t r = begin; r < end;) {
      const int64_t b = r / n_boxes, n0 = r - b * n_boxes, stop = std::min(end, (b + 1) * n_boxes);
      const T* rp = ref.data + b * ref.s0 + 4 * n0;
      const T* ip = in.data + 4 * r;
      for (int64_t k = 0; k < stop - r; ++k) f(r + k, load(rp + 4 * k), load(ip + 4 * k));
      r = stop;
    }
  } else {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c = r % classes, bn = r / classes, n = bn % n_boxes, b = bn / n_boxes;
      f(r, ref.at(b, n, 0), in.at(b, n, c));
    }
  }
}

template <class T, class F>
void for_each_row(const at::Tensor& reference, const at::Tensor& input, int64_t classes, const F& f) {
  const Rows3<T> ref(reference), in(input);
  const int64_t n_boxes = input.size(1), rows = input.size(0) * n_boxes * classes;
  const bool dense = classes == 1 && ref.s1 == 4 && ref.s2 == 1 && input.is_contiguous();
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    if (dense) {
      rows_range<true>(ref, in, n_boxes, classes, begin, end, f);
    } else {
      rows_range<false>(ref, in, n_boxes, classes, begin, end, f);
    }
  });
}

struct CpuKernels {
  static void encode(const at::Tensor& reference, const at::Tensor& targets, const at::Tensor& target_index,
                     at::Tensor& out, Coding coding, const CoderParams<double>& params) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "box_encode", [&] {
      using T = scalar_t;
      const CoderParams<T> p = cast_params<T>(params);
      T* o = out.data_ptr<T>();
      with_coding(coding, [&](auto c) {
        constexpr Coding kC = decltype(c)::value;
        if (!target_index.defined()) {
          for_each_row<T>(reference, targets, 1, [&](int64_t r, const Box4<T>& rb, const Box4<T>& tb) {
            store_row(o, r, encode_box<kC>(rb, tb, p));
          });
          return;
        }
        // Gathered targets: row (b, n) encodes targets[b, target_index[b, n]]; a negative index (no
        // match) gives zeros.
        const Rows3<T> ref(reference), tgt(targets);
        const int64_t* idx = target_index.const_data_ptr<int64_t>();
        const int64_t is0 = target_index.size(0) == 1 ? 0 : target_index.stride(0), is1 = target_index.stride(1);
        const int64_t n_boxes = out.size(1), m = targets.size(1), tb_stride = targets.size(0) == 1 ? 0 : 1;
        at::parallel_for(0, out.size(0) * n_boxes, kGrain, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t b = r / n_boxes, n = r - b * n_boxes, j = idx[b * is0 + n * is1];
            TORCH_CHECK_VALUE(j < m, "pydet.box_encode: target_index holds ", j, " but targets has only ", m,
                              " boxes per image");
            store_row(o, r, j < 0 ? Box4<T>{0, 0, 0, 0} : encode_box<kC>(ref.at(b, n, 0), tgt.at(b * tb_stride, j, 0), p));
          }
        });
      });
    });
  }

  static void decode(const at::Tensor& reference, const at::Tensor& deltas, at::Tensor& out, Coding coding,
                     const CoderParams<double>& params) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "box_decode", [&] {
      using T = scalar_t;
      const CoderParams<T> p = cast_params<T>(params);
      T* o = out.data_ptr<T>();
      with_coding(coding, [&](auto c) {
        constexpr Coding kC = decltype(c)::value;
        for_each_row<T>(reference, deltas, deltas.size(2) / 4, [&](int64_t r, const Box4<T>& rb, const Box4<T>& db) {
          store_row(o, r, decode_box<kC>(rb, db, p));
        });
      });
    });
  }

  static void decode_backward(const at::Tensor& grad, const at::Tensor& reference, const at::Tensor& deltas,
                              at::Tensor& out, Coding coding, const CoderParams<double>& params) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "box_decode_backward", [&] {
      using T = scalar_t;
      const CoderParams<T> p = cast_params<T>(params);
      const at::Tensor gc = grad.contiguous();
      const T* g = gc.const_data_ptr<T>();
      T* o = out.data_ptr<T>();
      with_coding(coding, [&](auto c) {
        constexpr Coding kC = decltype(c)::value;
        for_each_row<T>(reference, deltas, deltas.size(2) / 4, [&](int64_t r, const Box4<T>& rb, const Box4<T>& db) {
          store_row(o, r, pull_back(decode_box<kC>(rb, seed_box(db), p), load(g + 4 * r)));
        });
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::coders
