// CPU kernels for box_area, box_convert, clip_boxes_to_image, remove_small_boxes (+ backward).
// The formulas are in common/box_math.h; the operator front ends in ops/boxes.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/box_math.h"
#include "common/rows.h"
#include "common/simd.h"
#include "ops/boxes.h"

namespace pydet::boxes {
namespace {

constexpr int64_t kGrain = 8192;

// f(k, box k) for k in [begin, end). Instantiated per SIMD ISA (simd.h); with kContiguous the row
// layout is a compile-time constant, which lets the compiler vectorise the loop.
template <bool kContiguous, class T, class F>
PYDET_SIMD_INLINE void box_range(const BoxRows<T> in, int64_t begin, int64_t end, const F& f) {
  for (int64_t k = begin; k < end; ++k) {
    if constexpr (kContiguous) {
      const T* r = in.data + 4 * k;
      f(k, Box4<T>{r[0], r[1], r[2], r[3]});
    } else {
      f(k, in[k]);
    }
  }
}

// f(k, box k) for every row of a [K, 4] tensor, in parallel.
template <class T, class F>
void for_each_box(const at::Tensor& boxes, const F& f) {
  const BoxRows<T> in(boxes);
  const bool contiguous = in.col_stride == 1 && in.row_stride == 4;
  at::parallel_for(0, in.size, kGrain, [&](int64_t begin, int64_t end) {
    simd::dispatch([&] {
      if (contiguous) {
        box_range<true>(in, begin, end, f);
      } else {
        box_range<false>(in, begin, end, f);
      }
    });
  });
}

struct CpuKernels {
  static void area(const at::Tensor& boxes, at::Tensor& out, BoxFormat fmt) {
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "box_area", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      // The format is chosen outside the loop so that each loop stays branch-free (vectorised).
      if (fmt == BoxFormat::kXYXY) {
        for_each_box<scalar_t>(boxes, [&](int64_t k, const Box4<scalar_t>& q) { o[k] = box_area(q); });
      } else {
        for_each_box<scalar_t>(boxes, [&](int64_t k, const Box4<scalar_t>& q) { o[k] = box_area_of_size(q); });
      }
    });
  }

  static void area_backward(const at::Tensor& grad, const at::Tensor& boxes, at::Tensor& grad_boxes, BoxFormat fmt) {
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "box_area_backward", [&] {
      const scalar_t* g = grad.const_data_ptr<scalar_t>();
      const int64_t gs = grad.stride(0);
      scalar_t* o = grad_boxes.data_ptr<scalar_t>();
      for_each_box<scalar_t>(boxes, [&](int64_t k, const Box4<scalar_t>& q) {
        const auto a = box_area(fmt, seed_box(q));
        store_row(o, k, Box4<scalar_t>{g[k * gs] * a.d[0], g[k * gs] * a.d[1], g[k * gs] * a.d[2], g[k * gs] * a.d[3]});
      });
    });
  }

  static void convert(const at::Tensor& boxes, at::Tensor& out, BoxFormat fi, BoxFormat fo) {
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "box_convert", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      for_each_box<scalar_t>(
          boxes, [&](int64_t k, const Box4<scalar_t>& q) { store_row(o, k, from_xyxy(fo, to_xyxy(fi, q))); });
    });
  }

  static void convert_backward(const at::Tensor& grad, at::Tensor& grad_boxes, BoxFormat fi, BoxFormat fo) {
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "box_convert_backward", [&] {
      // The conversions are linear: their Jacobian is the same at every point.
      const auto jac = from_xyxy(fo, to_xyxy(fi, seed_box(Box4<scalar_t>{0, 0, 0, 0})));
      scalar_t* o = grad_boxes.data_ptr<scalar_t>();
      for_each_box<scalar_t>(grad, [&](int64_t k, const Box4<scalar_t>& g) { store_row(o, k, pull_back(jac, g)); });
    });
  }

  static void clip(const at::Tensor& boxes, at::Tensor& out, double height, double width) {
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "clip_boxes_to_image", [&] {
      const scalar_t h = scalar_t(height), w = scalar_t(width);
      scalar_t* o = out.data_ptr<scalar_t>();
      for_each_box<scalar_t>(boxes, [&](int64_t k, const Box4<scalar_t>& q) { store_row(o, k, clip_box(q, h, w)); });
    });
  }

  static void clip_backward(const at::Tensor& grad, const at::Tensor& boxes, at::Tensor& grad_boxes, double height,
                            double width) {
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "clip_boxes_to_image_backward", [&] {
      const scalar_t h = scalar_t(height), w = scalar_t(width);
      const BoxRows<scalar_t> g(grad);
      scalar_t* o = grad_boxes.data_ptr<scalar_t>();
      for_each_box<scalar_t>(boxes, [&](int64_t k, const Box4<scalar_t>& q) {
        store_row(o, k, pull_back(clip_box(seed_box(q), h, w), g[k]));
      });
    });
  }

  // Indices of boxes whose width and height are >= min_size, in increasing order. Pass 1 writes a
  // byte mask and counts each fixed-size chunk; pass 2 compacts each chunk branch-free into a local
  // buffer and copies it to its prefix offset. Deterministic for any thread count.
  static at::Tensor keep_large(const at::Tensor& boxes, double min_size) {
    const int64_t n = boxes.size(0);
    constexpr int64_t kChunk = 2048;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<uint8_t> mask(static_cast<size_t>(n));
    std::vector<int64_t> offsets(static_cast<size_t>(chunks + 1), 0);
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "remove_small_boxes", [&] {
      const scalar_t ms = scalar_t(min_size);
      uint8_t* m = mask.data();
      for_each_box<scalar_t>(boxes, [&](int64_t k, const Box4<scalar_t>& q) {
        m[k] = uint8_t((q.c - q.a) >= ms) & uint8_t((q.d - q.b) >= ms);  // `&`: no branch, vectorises
      });
    });
    at::parallel_for(0, chunks, 16, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        int64_t count = 0;
        for (int64_t k = c * kChunk, e = std::min(n, (c + 1) * kChunk); k < e; ++k) count += mask[k];
        offsets[c + 1] = count;
      }
    });
    for (int64_t c = 0; c < chunks; ++c) offsets[c + 1] += offsets[c];
    at::Tensor keep = at::empty({offsets[chunks]}, boxes.options().dtype(at::kLong));
    int64_t* out = keep.data_ptr<int64_t>();
    at::parallel_for(0, chunks, 16, [&](int64_t cb, int64_t ce) {
      int64_t local[kChunk];
      for (int64_t c = cb; c < ce; ++c) {
        int64_t w = 0;
        for (int64_t k = c * kChunk, e = std::min(n, (c + 1) * kChunk); k < e; ++k) {
          local[w] = k;
          w += mask[k];
        }
        std::copy(local, local + w, out + offsets[c]);
      }
    });
    return keep;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_shaped(m);
}

}  // namespace pydet::boxes
