// CPU kernels of box_encode / box_decode (+ decode backward). Front end: ops/coders.h; formulas:
// common/coder_math.h. The common case (one box per row, contiguous rows) transposes runs of boxes
// into one vector per coordinate and runs the formula across them, compiled per SIMD ISA (simd.h);
// exp_/log_ are branch-free so they vectorise too. Other layouts index through strides. A
// gathered decode (index) copies blocks of rows into contiguous buffers and runs the same loop on them.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

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

// The dense loop asks for its rows 4 KB (float) ahead: the hardware prefetchers alone left it ~8%
// slower on 100,000 boxes than with their data already in cache.
constexpr int64_t kPrefetchRows = 256;
template <class T>
inline void prefetch_rows(const T* a, const T* b) {  // the cache lines of kV64 rows of a and of b
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t j = 0; j < 4 * simd::kV64<T>; j += kLine) {
    __builtin_prefetch(a + j);
    __builtin_prefetch(b + j);
  }
}

// out row r = f(r, reference box, input box) for rows [begin, end) of the [B, N, C] problem,
// r = (b N + n) C + c; out is contiguous [B N C, 4].
// kDense: C == 1, reference rows contiguous (any batch stride), input [B, N, 4] contiguous. Runs of
// simd::kV64 rows are transposed into one vector per coordinate (simd::deinterleave4), so that the
// compiler vectorises the formula across the run's boxes, with no shuffles inside the formula.
template <bool kDense, class T, class F>
PYDET_TARGET_CLONES void rows_range(const Rows3<T> ref, const Rows3<T> in, T* out, int64_t n_boxes, int64_t classes,
                                    int64_t begin, int64_t end, const F& f) {
  if constexpr (kDense) {
    constexpr int64_t kLanes = simd::kV64<T>;
    for (int64_t r = begin; r < end;) {
      const int64_t b = r / n_boxes, n0 = r - b * n_boxes, stop = std::min(end, (b + 1) * n_boxes);
      const T* rp = ref.data + b * ref.s0 + 4 * n0;  // row k's reference box at rp + 4 (k - r)
      int64_t k = r;
      for (; k + kLanes <= stop; k += kLanes) {
        if (k + kPrefetchRows < stop) {
          prefetch_rows<T>(rp + 4 * (k - r + kPrefetchRows), in.data + 4 * (k + kPrefetchRows));
        }
        simd::V64<T> rc[4], ic[4], oc[4];
        simd::deinterleave4(rp + 4 * (k - r), rc);
        simd::deinterleave4(in.data + 4 * k, ic);
        for (int64_t j = 0; j < kLanes; ++j) {
          const Box4<T> q = f(k + j, Box4<T>{rc[0][j], rc[1][j], rc[2][j], rc[3][j]},
                              Box4<T>{ic[0][j], ic[1][j], ic[2][j], ic[3][j]});
          oc[0][j] = q.a;
          oc[1][j] = q.b;
          oc[2][j] = q.c;
          oc[3][j] = q.d;
        }
        simd::interleave4(out + 4 * k, oc);
      }
      for (; k < stop; ++k) store_row(out, k, f(k, load(rp + 4 * (k - r)), load(in.data + 4 * k)));
      r = stop;
    }
  } else {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c = r % classes, bn = r / classes, n = bn % n_boxes, b = bn / n_boxes;
      store_row(out, r, f(r, ref.at(b, n, 0), in.at(b, n, c)));
    }
  }
}

template <class T, class F>
void for_each_row(const at::Tensor& reference, const at::Tensor& input, T* out, int64_t classes, const F& f) {
  const Rows3<T> ref(reference), in(input);
  const int64_t n_boxes = input.size(1), rows = input.size(0) * n_boxes * classes;
  const bool dense = classes == 1 && ref.s1 == 4 && ref.s2 == 1 && input.is_contiguous();
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    if (dense) {
      rows_range<true>(ref, in, out, n_boxes, classes, begin, end, f);
    } else {
      rows_range<false>(ref, in, out, n_boxes, classes, begin, end, f);
    }
  });
}

// Rows (b, k) of out = deltas[b, index[b, k]] decoded against reference[b, index[b, k]]; zeros where the index
// is negative. Blocks of rows are first copied into contiguous buffers: the scattered loads of a block are
// independent, so their cache misses overlap, and the decode runs the vectorised dense loop.
template <Coding kC, bool kClip, class T>
void decode_gathered(const at::Tensor& reference, const at::Tensor& deltas, const at::Tensor& index, T* o,
                     const CoderParams<T>& p) {
  const Rows3<T> ref(reference), in(deltas);
  const int64_t n_src = deltas.size(1), classes = deltas.size(2) / 4, rows = deltas.size(0) * index.size(1);
  const int64_t k_rows = index.size(1), is0 = index.size(0) == 1 ? 0 : index.stride(0), is1 = index.stride(1);
  const int64_t* idx = index.const_data_ptr<int64_t>();
  constexpr int64_t kBlockBoxes = 64;
  const int64_t block_rows = std::max<int64_t>(1, kBlockBoxes / classes);
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / classes), [&](int64_t begin, int64_t end) {
    std::vector<T> ref_buf(static_cast<size_t>(4 * block_rows * classes)), in_buf(ref_buf.size());
    std::vector<uint8_t> padding(static_cast<size_t>(block_rows));
    int64_t b = begin / k_rows, k = begin - b * k_rows;  // row r0 = (b, k), advanced without divisions
    for (int64_t r0 = begin; r0 < end; r0 += block_rows) {
      const int64_t r1 = std::min(end, r0 + block_rows), boxes = (r1 - r0) * classes;
      // Rows are scattered (candidates of a top-k) and usually not in cache: request the whole block's
      // rows before reading any, so their misses (and page walks) overlap instead of queuing.
      for (int64_t r = r0, pb = b, pk = k; r < r1; ++r) {
        const int64_t n = idx[pb * is0 + pk * is1];
        if (n >= 0 && n < n_src) {
          __builtin_prefetch(ref.data + pb * ref.s0 + n * ref.s1);
          __builtin_prefetch(in.data + pb * in.s0 + n * in.s1);
        }
        if (++pk == k_rows) {
          pk = 0;
          ++pb;
        }
      }
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = idx[b * is0 + k * is1];
        TORCH_CHECK_VALUE(n < n_src, "pydet.box_decode: index holds ", n, " but deltas has only ", n_src,
                          " rows per image");
        padding[r - r0] = n < 0;
        for (int64_t c = 0; c < classes; ++c) {
          const int64_t j = (r - r0) * classes + c;
          store_row(ref_buf.data(), j, n < 0 ? Box4<T>{0, 0, 0, 0} : ref.at(b, n, 0));
          store_row(in_buf.data(), j, n < 0 ? Box4<T>{0, 0, 0, 0} : in.at(b, n, c));
        }
        if (++k == k_rows) {
          k = 0;
          ++b;
        }
      }
      rows_range<true>(Rows3<T>(ref_buf.data(), 0, 4, 1), Rows3<T>(in_buf.data(), 0, 4, 1), o + 4 * r0 * classes,
                       boxes, 1, 0, boxes,
                       [&](int64_t, const Box4<T>& rb, const Box4<T>& db) { return decode_box<kC, kClip>(rb, db, p); });
      for (int64_t r = r0; r < r1; ++r) {  // zero boxes decode to zeros; written out to be independent of that
        if (padding[r - r0]) std::fill_n(o + 4 * r * classes, 4 * classes, T(0));
      }
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
          for_each_row<T>(reference, targets, o, 1,
                          [&](int64_t, const Box4<T>& rb, const Box4<T>& tb) { return encode_box<kC>(rb, tb, p); });
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

  static void decode(const at::Tensor& reference, const at::Tensor& deltas, const at::Tensor& index, at::Tensor& out,
                     Coding coding, const CoderParams<double>& params) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "box_decode", [&] {
      using T = scalar_t;
      const CoderParams<T> p = cast_params<T>(params);
      T* o = out.data_ptr<T>();
      with_coding(coding, [&](auto c) {
        constexpr Coding kC = decltype(c)::value;
        const auto run = [&](auto clip) {
          constexpr bool kClip = decltype(clip)::value;
          if (index.defined()) return decode_gathered<kC, kClip, T>(reference, deltas, index, o, p);
          for_each_row<T>(reference, deltas, o, deltas.size(2) / 4, [&](int64_t, const Box4<T>& rb, const Box4<T>& db) {
            return decode_box<kC, kClip>(rb, db, p);
          });
        };
        if constexpr (kC != Coding::kSsd) {  // the SSD coding has no clip (check_clip_coding)
          if (p.clips()) return run(std::true_type{});
        }
        run(std::false_type{});
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
        for_each_row<T>(reference, deltas, o, deltas.size(2) / 4, [&](int64_t r, const Box4<T>& rb, const Box4<T>& db) {
          return pull_back(decode_box<kC>(rb, seed_box(db), p), load(g + 4 * r));
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
