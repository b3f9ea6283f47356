// CPU kernels of deform_conv2d's sampling, forward and backward (front end and GEMMs:
// ops/deform_conv.h; sampling math: common/deform_conv_math.h).
//
// torchvision's CPU kernel computes every column on one thread, recomputing a tap's coordinates and
// weights for each of the C channels, and reads the NCHW input one channel plane at a time. Here the
// input is channels_last, so a tap's C channels are contiguous: each (pixel, offset group, tap)
// computes its Sample once and samples all of the group's channels with vector operations, in
// parallel over pixels. The backward's offset and mask gradients are sums over channels (vector lanes,
// then the lanes' sum), in parallel over pixels; the input's gradient is scattered in parallel over
// channel chunks, each chunk's pixels in order, so no two threads write one value and results do not
// depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/deform_conv_math.h"
#include "common/simd.h"
#include "cpu/memory.h"
#include "ops/deform_conv.h"

namespace pydet::deform {
namespace {

// Channel values one task should have before a call goes parallel: tens of microseconds.
constexpr int64_t kGrainWork = 1 << 15;

// Channels per task of the input gradient's scatter: a 64-byte line of float32.
constexpr int64_t kScatterChannels = 16;

template <class V, class T>
PYDET_SIMD_INLINE V load(const T* p) {
  if constexpr (std::is_same_v<V, T>) {
    return *p;
  } else {
    return simd::load_vec<V>(p);
  }
}
template <class V, class T>
PYDET_SIMD_INLINE void store(T* p, const V& v) {
  if constexpr (std::is_same_v<V, T>) {
    *p = v;
  } else {
    simd::store_vec(p, v);
  }
}

// f(c, V{}) for c = 0, W, 2W, ... while a whole vector of W lanes fits in n, then f(c, T{}) for the rest.
template <int kNative, class T, class F>
PYDET_SIMD_INLINE void over_lanes(int64_t n, const F& f) {
  using V = simd::Vec<T, kNative>;
  constexpr int64_t W = kNative / sizeof(T);
  int64_t c = 0;
  for (; c + W <= n; c += W) f(c, V{});
  for (; c < n; ++c) f(c, T{});
}

// f(c, n, column) for each run [c, c + n) of channels [c_begin, c_end) in one weight group; column:
// where channel c of tap k sits in a pixel's row of columns.
template <class F>
PYDET_SIMD_INLINE void for_each_run(const Geometry& g, int64_t c_begin, int64_t c_end, int64_t k, const F& f) {
  const int64_t cw = g.group_channels();
  for (int64_t c = c_begin; c < c_end;) {
    const int64_t wg = c / cw, n = std::min(c_end, (wg + 1) * cw) - c;
    f(c, n, g.column(c, k));
    c += n;
  }
}

// The four corners' channel rows from channel c of image `image` (zero where outside the map).
template <class T>
struct Corners {
  const T* v[4];
  PYDET_SIMD_INLINE Corners(const Sample<T>& s, const T* image, const T* zero, int64_t channels, int64_t c) {
    for (int i = 0; i < 4; ++i) v[i] = s.corner[i] >= 0 ? image + s.corner[i] * channels + c : zero;
  }
};

// Pixel q's row of columns.
template <int kNative, class T>
PYDET_SIMD_INLINE void sample_pixel(const Geometry& g, const T* input, const T* zero, const T* offset, const T* mask,
                                    int64_t q, T* row) {
  const Pixel px = pixel_at(g, q);
  const T* image = input + px.b * g.height * g.width * g.channels;
  const int64_t co = g.offset_group_channels();
  for (int64_t o = 0; o < g.offset_groups; ++o) {
    for (int64_t k = 0; k < g.taps(); ++k) {
      const TapSample<T> t = tap_at(g, offset, mask, px, o, k);
      for_each_run(g, o * co, (o + 1) * co, k, [&](int64_t c, int64_t n, int64_t column) {
        T* dst = row + column;
        if (!t.s.inside) {
          std::fill(dst, dst + n, t.mask * T(0));  // torchvision: mask x 0
          return;
        }
        const Corners<T> v(t.s, image, zero, g.channels, c);
        over_lanes<kNative, T>(n, [&](int64_t l, auto lanes) {
          using V = decltype(lanes);
          store(dst + l, t.mask * interpolate(t.s, load<V>(v.v[0] + l), load<V>(v.v[1] + l), load<V>(v.v[2] + l),
                                              load<V>(v.v[3] + l)));
        });
      });
    }
  }
}

template <class V>
PYDET_SIMD_INLINE auto lane_sum(const V& v) {
  if constexpr (std::is_arithmetic_v<V>) {
    return v;
  } else {
    auto s = v[0];
    for (size_t l = 1; l < sizeof(V) / sizeof(s); ++l) s += v[l];
    return s;
  }
}

// Pixel q's offset and mask gradients from its row of column gradients, and its samples into table
// ([offset group][tap]) for the input's gradient. The sums over channels run in 64-byte lanes on every
// ISA (the compiler splits them into native vectors), then lane by lane: the same order, so the same
// bits, on every CPU variant.
template <class T>
PYDET_SIMD_INLINE void coordinate_grads(const Geometry& g, const T* input, const T* zero, const T* offset,
                                        const T* mask, int64_t q, const T* grad_row, TapSample<T>* table,
                                        T* grad_offset, T* grad_mask) {
  using V = simd::V64<T>;
  const Pixel px = pixel_at(g, q);
  const T* image = input + px.b * g.height * g.width * g.channels;
  const int64_t co = g.offset_group_channels(), taps = g.taps();
  for (int64_t o = 0; o < g.offset_groups; ++o) {
    for (int64_t k = 0; k < taps; ++k) {
      const TapSample<T> t = tap_at(g, offset, mask, px, o, k);
      table[o * taps + k] = t;
      V vy{}, vx{}, vm{};
      T sy(0), sx(0), sm(0);
      for_each_run(g, o * co, (o + 1) * co, k, [&](int64_t c, int64_t n, int64_t column) {
        const Corners<T> v(t.s, image, zero, g.channels, c);
        const T* gc = grad_row + column;
        over_lanes<64, T>(n, [&](int64_t l, auto lanes) {
          using U = decltype(lanes);
          const U v0 = load<U>(v.v[0] + l), v1 = load<U>(v.v[1] + l), v2 = load<U>(v.v[2] + l),
                  v3 = load<U>(v.v[3] + l), gv = load<U>(gc + l);
          // torchvision: mask x coordinate weight x column gradient
          const U dy = (t.mask * d_dy(t.s, v0, v1, v2, v3)) * gv, dx = (t.mask * d_dx(t.s, v0, v1, v2, v3)) * gv;
          U dm{};
          if (g.use_mask && t.s.inside) dm = gv * interpolate(t.s, v0, v1, v2, v3);
          if constexpr (std::is_same_v<U, T>) {
            sy += dy;
            sx += dx;
            sm += dm;
          } else {
            vy += dy;
            vx += dx;
            vm += dm;
          }
        });
      });
      const int64_t at = offset_at(g, px, o, k);
      grad_offset[at] = lane_sum(vy) + sy;
      grad_offset[at + g.plane()] = lane_sum(vx) + sx;
      if (g.use_mask) grad_mask[mask_at(g, px, o, k)] = lane_sum(vm) + sm;
    }
  }
}

// The input gradient of channels [c_begin, c_end) from the tile's pixels [first, first + count), in
// pixel order.
template <int kNative, class T>
PYDET_SIMD_INLINE void scatter_channels(const Geometry& g, int64_t first, int64_t count, const TapSample<T>* table,
                                        const T* grad_columns, int64_t c_begin, int64_t c_end, T* grad_input) {
  const int64_t co = g.offset_group_channels(), taps = g.taps(), width = g.column_width();
  for (int64_t c_run = c_begin; c_run < c_end;) {  // runs within one offset group
    const int64_t o = c_run / co, c_stop = std::min(c_end, (o + 1) * co);
    for (int64_t i = 0; i < count; ++i) {
      const Pixel px = pixel_at(g, first + i);
      T* image = grad_input + px.b * g.height * g.width * g.channels;
      for (int64_t k = 0; k < taps; ++k) {
        const TapSample<T>& t = table[(i * g.offset_groups + o) * taps + k];
        if (!t.s.inside) continue;
        for_each_run(g, c_run, c_stop, k, [&](int64_t c, int64_t n, int64_t column) {
          const T* gc = grad_columns + i * width + column;
          for (int corner = 0; corner < 4; ++corner) {
            // torchvision's col2im adds to the corners within distance 1: weight 0 adds nothing.
            if (t.s.corner[corner] < 0 || t.s.w[corner] == T(0)) continue;
            const T share = t.mask * t.s.w[corner];
            T* dst = image + t.s.corner[corner] * g.channels + c;
            over_lanes<kNative, T>(n, [&](int64_t l, auto lanes) {
              using U = decltype(lanes);
              store(dst + l, load<U>(dst + l) + share * load<U>(gc + l));
            });
          }
        });
      }
    }
    c_run = c_stop;
  }
}

struct CpuKernels {
  static int64_t column_bytes() { return int64_t(8) << 20; }

  static void columns(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, int64_t first,
                      at::Tensor& columns, const Geometry& g) {
    const int64_t count = columns.size(0), width = g.column_width();
    AT_DISPATCH_FLOATING_TYPES(columns.scalar_type(), "deform_conv2d", [&] {
      using T = scalar_t;
      const cpu::AlignedVector<T> zero(std::max<int64_t>(g.channels, 1), T(0));
      const T* in = input.const_data_ptr<T>();
      const T* off = offset.const_data_ptr<T>();
      const T* msk = g.use_mask ? mask.const_data_ptr<T>() : nullptr;
      T* cols = columns.data_ptr<T>();
      at::parallel_for(0, count, std::max<int64_t>(1, kGrainWork / std::max<int64_t>(width, 1)),
                       [&](int64_t begin, int64_t end) {
                         simd::dispatch([&](auto isa) {
                           constexpr int kNative = decltype(isa)::kVectorBytes;
                           for (int64_t i = begin; i < end; ++i) {
                             sample_pixel<kNative>(g, in, zero.data(), off, msk, first + i, cols + i * width);
                           }
                         });
                       });
    });
  }

  static void columns_backward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, int64_t first,
                               const at::Tensor& grad_columns, at::Tensor& grad_input, at::Tensor& grad_offset,
                               at::Tensor& grad_mask, const Geometry& g) {
    const int64_t count = grad_columns.size(0), width = g.column_width();
    const int64_t per_pixel = g.offset_groups * g.taps();
    AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "_deform_conv2d_backward", [&] {
      using T = scalar_t;
      const cpu::AlignedVector<T> zero(std::max<int64_t>(g.channels, 1), T(0));
      std::vector<TapSample<T>> table(count * per_pixel);
      const T* in = input.const_data_ptr<T>();
      const T* off = offset.const_data_ptr<T>();
      const T* msk = g.use_mask ? mask.const_data_ptr<T>() : nullptr;
      const T* gcols = grad_columns.const_data_ptr<T>();
      T* g_off = grad_offset.data_ptr<T>();
      T* g_mask = g.use_mask ? grad_mask.data_ptr<T>() : nullptr;
      at::parallel_for(0, count, std::max<int64_t>(1, kGrainWork / std::max<int64_t>(width, 1)),
                       [&](int64_t begin, int64_t end) {
                         simd::dispatch([&] {
                           for (int64_t i = begin; i < end; ++i) {
                             coordinate_grads(g, in, zero.data(), off, msk, first + i, gcols + i * width,
                                              table.data() + i * per_pixel, g_off, g_mask);
                           }
                         });
                       });
      T* g_in = grad_input.data_ptr<T>();
      const int64_t chunks = (g.channels + kScatterChannels - 1) / kScatterChannels;
      const int64_t chunk_work = std::max<int64_t>(1, count * g.taps() * 4 * kScatterChannels);
      at::parallel_for(0, chunks, std::max<int64_t>(1, kGrainWork / chunk_work), [&](int64_t begin, int64_t end) {
        simd::dispatch([&](auto isa) {
          constexpr int kNative = decltype(isa)::kVectorBytes;
          scatter_channels<kNative>(g, first, count, table.data(), gcols, begin * kScatterChannels,
                                    std::min(g.channels, end * kScatterChannels), g_in);
        });
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

}  // namespace pydet::deform
