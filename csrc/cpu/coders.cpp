// CPU kernels of box_encode / box_decode (+ decode backward). Front end: ops/coders.h; formulas:
// common/coder_math.h, one axis at a time. The common case (one box per row, contiguous rows) splits
// runs of boxes into two vectors, the (a, b) and the (c, d) coordinates of every box, so that each
// lane holds one axis of one box (x in even lanes, y in odd) in both, and runs the per-axis formula
// across the lanes (with each lane's axis parameters), compiled per SIMD ISA (simd.h); exp_/log_ are
// branch-free so they vectorise too. Other layouts index through strides. A gathered decode (index)
// copies blocks of rows into contiguous buffers and runs the same loop on them.
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
inline void prefetch_rows(const T* a, const T* b, int64_t rows) {  // the cache lines of `rows` rows of a, b
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t j = 0; j < 4 * rows; j += kLine) {
    __builtin_prefetch(a + j);
    __builtin_prefetch(b + j);
  }
}

// The axis parameters of every lane of the dense loop's vectors V: lane j has axis j % 2's.
template <class T, class V>
struct LaneParams {
  V weight_center, weight_size, mean_center, mean_size, size_min, size_max, center_clamp, clip_lo, clip_hi;

  explicit LaneParams(const CoderParams<T>& p) {
    for (int64_t j = 0; j < int64_t(sizeof(V) / sizeof(T)); ++j) {
      const AxisParams<T> a = p.axis(int(j % 2));
      weight_center[j] = a.weight_center;
      weight_size[j] = a.weight_size;
      mean_center[j] = a.mean_center;
      mean_size[j] = a.mean_size;
      size_min[j] = a.size_min;
      size_max[j] = a.size_max;
      center_clamp[j] = a.center_clamp;
      clip_lo[j] = a.clip_lo;
      clip_hi[j] = a.clip_hi;
    }
  }
  AxisParams<T> operator[](int64_t j) const {
    return {weight_center[j], weight_size[j],  mean_center[j], mean_size[j], size_min[j],
            size_max[j],      center_clamp[j], clip_lo[j],     clip_hi[j]};
  }
};

// A whole box of f's: its x axis and its y axis (rows taken one by one).
template <class T, class F>
PYDET_HD Box4<T> both_axes(const F& f, const CoderParams<T>& params, const Box4<T>& rb, const Box4<T>& ib,
                           const Box4<T>& eb) {
  return join_axes(f(params.axis(0), x_of(rb), x_of(ib), x_of(eb)), f(params.axis(1), y_of(rb), y_of(ib), y_of(eb)));
}

// Rows [k, stop) of the dense case (below), with vectors of kBytes: runs of kBytes / (2 sizeof(T))
// rows are split into their (a, b) and (c, d) coordinates (simd::deinterleave_pairs), so that the
// compiler vectorises the per-axis formula across a run's lanes with no shuffles inside it; the
// remainder goes row by row. Row k's reference box is at rp + 4 (k - r0).
template <int kBytes, bool kExtra, class T, class F>
__attribute__((always_inline)) inline void dense_rows(const T* rp, int64_t r0, const T* in, const T* extra, T* out,
                                                      const CoderParams<T>& params, int64_t k, int64_t stop,
                                                      const F& f) {
  using V = simd::Vec<T, kBytes>;
  constexpr int64_t kLanes = kBytes / sizeof(T), kRun = kLanes / 2;
  const LaneParams<T, V> lanes(params);
  for (; k + kRun <= stop; k += kRun) {
    if (k + kPrefetchRows < stop) {
      prefetch_rows<T>(rp + 4 * (k - r0 + kPrefetchRows), in + 4 * (k + kPrefetchRows), kRun);
    }
    V r_ab, r_cd, i_ab, i_cd, e_ab{}, e_cd{}, o_ab{}, o_cd{};  // o_*: every lane is written below
    simd::deinterleave_pairs(rp + 4 * (k - r0), r_ab, r_cd);
    simd::deinterleave_pairs(in + 4 * k, i_ab, i_cd);
    if constexpr (kExtra) simd::deinterleave_pairs(extra + 4 * k, e_ab, e_cd);
    for (int64_t j = 0; j < kLanes; ++j) {
      const Axis<T> q = f(lanes[j], Axis<T>{r_ab[j], r_cd[j]}, Axis<T>{i_ab[j], i_cd[j]}, Axis<T>{e_ab[j], e_cd[j]});
      o_ab[j] = q.first;
      o_cd[j] = q.second;
    }
    simd::interleave_pairs(out + 4 * k, o_ab, o_cd);
  }
  for (; k < stop; ++k) {
    const Box4<T> rb = load(rp + 4 * (k - r0)), ib = load(in + 4 * k);
    store_row(out, k, both_axes(f, params, rb, ib, kExtra ? load(extra + 4 * k) : Box4<T>{}));
  }
}

// out row r = the two axes of f(axis parameters, reference axis, input axis, extra axis) for rows
// [begin, end) of the [B, N, C] problem, r = (b N + n) C + c; out is contiguous [B N C, 4], and so is
// extra, read only with kExtra (the upstream gradient of the backward).
// kDense: C == 1, reference rows contiguous (any batch stride), input [B, N, 4] contiguous: the runs of
// dense_rows, with kVectorBytes, the vector width of the CPU variant running (simd::IsaTag).
template <bool kDense, bool kExtra, int kVectorBytes, class T, class F>
PYDET_SIMD_INLINE void rows_range(const BoxRows<T> ref, const BoxRows<T> in, const T* extra, T* out,
                                  const CoderParams<T>& params, int64_t n_boxes, int64_t classes, int64_t begin,
                                  int64_t end, const F& f) {
  if constexpr (kDense) {
    for (int64_t r = begin; r < end;) {
      const int64_t b = r / n_boxes, n0 = r - b * n_boxes, stop = std::min(end, (b + 1) * n_boxes);
      const T* rp = ref.data + b * ref.batch_stride + 4 * n0;
      dense_rows<kVectorBytes, kExtra>(rp, r, in.data, extra, out, params, r, stop, f);
      r = stop;
    }
  } else {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c = r % classes, bn = r / classes, n = bn % n_boxes, b = bn / n_boxes;
      const Box4<T> rb = ref.at(b, n, 0), ib = in.at(b, n, c);
      store_row(out, r, both_axes(f, params, rb, ib, kExtra ? load(extra + 4 * r) : Box4<T>{}));
    }
  }
}

template <bool kExtra, class T, class F>
void for_each_row(const at::Tensor& reference, const at::Tensor& input, const T* extra, T* out,
                  const CoderParams<T>& params, int64_t classes, const F& f) {
  const BoxRows<T> ref(reference), in(input);
  const int64_t n_boxes = input.size(1), rows = input.size(0) * n_boxes * classes;
  const bool dense = classes == 1 && ref.row_stride == 4 && ref.col_stride == 1 && input.is_contiguous();
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    simd::dispatch([&](auto isa) {
      constexpr int kVectorBytes = decltype(isa)::kVectorBytes;
      if (dense) {
        rows_range<true, kExtra, kVectorBytes>(ref, in, extra, out, params, n_boxes, classes, begin, end, f);
      } else {
        rows_range<false, kExtra, kVectorBytes>(ref, in, extra, out, params, n_boxes, classes, begin, end, f);
      }
    });
  });
}

// The per-axis functions rows_range runs: encode, decode, and the decode's backward (whose extra
// input is the upstream gradient).
template <Coding kC, class T>
struct Encoder {
  Axis<T> operator()(const AxisParams<T>& p, const Axis<T>& r, const Axis<T>& t, const Axis<T>&) const {
    return encode_axis<kC>(r, t, p);
  }
};
template <Coding kC, bool kClip, class T>
struct Decoder {
  Axis<T> operator()(const AxisParams<T>& p, const Axis<T>& r, const Axis<T>& d, const Axis<T>&) const {
    return decode_axis<kC, kClip>(r, d, p);
  }
};
template <Coding kC, class T>
struct DecodeBackward {
  Axis<T> operator()(const AxisParams<T>& p, const Axis<T>& r, const Axis<T>& d, const Axis<T>& g) const {
    return decode_axis_backward<kC>(r, d, g, p);
  }
};

// Rows (b, k) of out = deltas[b, index[b, k]] decoded against reference[b, index[b, k]]; zeros where the index
// is negative. Blocks of rows are first copied into contiguous buffers: the scattered loads of a block are
// independent, so their cache misses overlap, and the decode runs the vectorised dense loop.
template <Coding kC, bool kClip, class T>
void decode_gathered(const at::Tensor& reference, const at::Tensor& deltas, const at::Tensor& index, T* o,
                     const CoderParams<T>& p) {
  const BoxRows<T> ref(reference), in(deltas);
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
          __builtin_prefetch(ref.data + pb * ref.batch_stride + n * ref.row_stride);
          __builtin_prefetch(in.data + pb * in.batch_stride + n * in.row_stride);
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
      simd::dispatch([&](auto isa) {
        constexpr int kVectorBytes = decltype(isa)::kVectorBytes;
        const BoxRows<T> ref_rows(ref_buf.data(), 0, 4, 1, boxes), in_rows(in_buf.data(), 0, 4, 1, boxes);
        rows_range<true, false, kVectorBytes, T>(ref_rows, in_rows, nullptr, o + 4 * r0 * classes, p, boxes, 1, 0,
                                                 boxes, Decoder<kC, kClip, T>{});
      });
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
          for_each_row<false, T>(reference, targets, nullptr, o, p, 1, Encoder<kC, T>{});
          return;
        }
        // Gathered targets: row (b, n) encodes targets[b, target_index[b, n]]; a negative index (no
        // match) gives zeros.
        const BoxRows<T> ref(reference), tgt(targets);
        const int64_t* idx = target_index.const_data_ptr<int64_t>();
        const int64_t is0 = target_index.size(0) == 1 ? 0 : target_index.stride(0), is1 = target_index.stride(1);
        const int64_t n_boxes = out.size(1), m = targets.size(1), tb_stride = targets.size(0) == 1 ? 0 : 1;
        at::parallel_for(0, out.size(0) * n_boxes, kGrain, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t b = r / n_boxes, n = r - b * n_boxes, j = idx[b * is0 + n * is1];
            TORCH_CHECK_VALUE(j < m, "pydet.box_encode: target_index holds ", j, " but targets has only ", m,
                              " boxes per image");
            store_row(o, r,
                      j < 0 ? Box4<T>{0, 0, 0, 0} : encode_box<kC>(ref.at(b, n, 0), tgt.at(b * tb_stride, j, 0), p));
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
          for_each_row<false, T>(reference, deltas, nullptr, o, p, deltas.size(2) / 4, Decoder<kC, kClip, T>{});
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
        for_each_row<true, T>(reference, deltas, g, o, p, deltas.size(2) / 4, DecodeBackward<kC, T>{});
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::coders
