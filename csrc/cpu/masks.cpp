// CPU kernels of paste_masks_in_image (both conventions) and masks_to_boxes (front end: ops/masks.h;
// resampling: common/mask_math.h).
//
// Pasting writes only the masks' regions, into an output whose zeros cost nothing until read
// (cpu::lazily_zeroed: fresh pages from the kernel, never written when no region touches them); one
// task per mask resamples its region row by row, from the mask's column taps (tabulated once) and the
// row's tap. The libraries paste mask by mask from Python, each into a fresh zeroed image, and then
// stack or index-assign them: several passes over the N x H x W result plus an interpreter round trip
// per mask.
//
// masks_to_boxes scans each row from the left to its first nonzero pixel and from the right to its
// last, so it reads at most a row's pixels outside the mask's horizontal extent (torchvision reduces
// the whole stack along both axes, in several passes).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/mask_math.h"
#include "cpu/memory.h"
#include "ops/masks.h"

namespace pydet::masks {
namespace {

// Output pixels (or mask pixels read) one task should have before a call goes parallel.
constexpr int64_t kGrainPixels = 1 << 16;

// Each mask's pasted region (rows x cols) and its columns' taps (Tap: torchvision's ResizeTap,
// detectron2's GridTap).
template <class Tap>
struct Regions {
  std::vector<Span> rows, cols;
  std::vector<int64_t> first_tap;  // mask n's column taps: taps[first_tap[n] .. first_tap[n] + cols[n] size)
  std::vector<Tap> taps;
  std::vector<int64_t> resized_h, top;  // torchvision: the box's height in pixels and its first row
  int64_t pixels = 0;                   // in all regions

  void add(Span r, Span c) {
    rows.push_back(r);
    cols.push_back(c);
    first_tap.push_back(static_cast<int64_t>(taps.size()));
    pixels += (r.end - r.begin) * (c.end - c.begin);
  }
};

template <class B, class T>
Regions<ResizeTap<T>> torchvision_regions(const B* boxes, const PasteGeometry& g) {
  Regions<ResizeTap<T>> r;
  const B scale = static_cast<B>(g.scale);
  for (int64_t n = 0; n < g.masks; ++n) {
    const B* box = boxes + 4 * n;
    const bool finite = finite_box(box);
    const PixelBox x = expanded_axis(box[0], box[2], scale), y = expanded_axis(box[1], box[3], scale);
    const int64_t w = std::max<int64_t>(x.last - x.first + 1, 1), h = std::max<int64_t>(y.last - y.first + 1, 1);
    r.add(finite ? clipped(y.first, y.last + 1, g.height) : Span{0, 0},
          finite ? clipped(x.first, x.last + 1, g.width) : Span{0, 0});
    r.resized_h.push_back(h);
    r.top.push_back(y.first);
    for (int64_t c = r.cols.back().begin; c < r.cols.back().end; ++c) {
      r.taps.push_back(resize_tap<T>(g.mask_w, w, c - x.first));
    }
  }
  return r;
}

template <class B, class T>
Regions<GridTap<T>> detectron2_regions(const B* boxes, const PasteGeometry& g) {
  Regions<GridTap<T>> r;
  for (int64_t n = 0; n < g.masks; ++n) {
    const B* box = boxes + 4 * n;
    const bool finite = finite_box(box);
    r.add(finite ? sampled_region(box[1], box[3], g.height) : Span{0, 0},
          finite ? sampled_region(box[0], box[2], g.width) : Span{0, 0});
    for (int64_t c = r.cols.back().begin; c < r.cols.back().end; ++c) {
      r.taps.push_back(grid_tap<B, T>(c, box[0], box[2], g.mask_w));
    }
  }
  return r;
}

// f(n, y, row) for every row y of every mask n's region (row: out's row of mask n at image row y), in
// parallel over masks; out is zeroed, so nothing outside the regions is written.
template <class Tap, class O, class F>
void for_each_region_row(const Regions<Tap>& r, const PasteGeometry& g, O* out, const F& f) {
  const int64_t per_mask = std::max<int64_t>(1, r.pixels / std::max<int64_t>(1, g.masks));
  at::parallel_for(0, g.masks, std::max<int64_t>(1, kGrainPixels / per_mask), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      if (r.cols[n].begin == r.cols[n].end) continue;
      for (int64_t y = r.rows[n].begin; y < r.rows[n].end; ++y) f(n, y, out + (n * g.height + y) * g.width);
    }
  });
}

template <class B, class T>
void paste_torchvision(const T* masks, const B* boxes, T* out, const PasteGeometry& g) {
  const auto r = torchvision_regions<B, T>(boxes, g);
  for_each_region_row(r, g, out, [&](int64_t n, int64_t y, T* row) {
    const ResizeTap<T> ty = resize_tap<T>(g.mask_h, r.resized_h[n], y - r.top[n]);
    const T* mask = masks + n * g.mask_h * g.mask_w;
    const T* low = mask + ty.low * g.mask_w;
    const T* high = mask + ty.high * g.mask_w;
    const ResizeTap<T>* tx = r.taps.data() + r.first_tap[n] - r.cols[n].begin;
    for (int64_t x = r.cols[n].begin; x < r.cols[n].end; ++x) {
      row[x] = resized(ty, tx[x], low[tx[x].low], low[tx[x].high], high[tx[x].low], high[tx[x].high]);
    }
  });
}

template <class B, class T>
void paste_detectron2(const T* masks, const B* boxes, uint8_t* out, const PasteGeometry& g) {
  const auto r = detectron2_regions<B, T>(boxes, g);
  const int64_t stride = g.mask_w + 2;  // the zero-bordered mask's rows
  for_each_region_row(r, g, out, [&](int64_t n, int64_t y, uint8_t* row) {
    const B* box = boxes + 4 * n;
    const GridTap<T> ty = grid_tap<B, T>(y, box[1], box[3], g.mask_h);
    const T* mask = masks + n * (g.mask_h + 2) * stride;
    const T* low = mask + ty.low * stride;
    const T* high = mask + ty.high * stride;
    const GridTap<T>* tx = r.taps.data() + r.first_tap[n] - r.cols[n].begin;
    for (int64_t x = r.cols[n].begin; x < r.cols[n].end; ++x) {
      row[x] = thresholded(sampled(ty, tx[x], low, high), g.threshold);
    }
  });
}

// A pixel's bits as an unsigned integer of its size, without the sign bit for floating types (so -0.0
// is zero and NaN nonzero, as in masks.bool()): OR-ing them tests a stretch of pixels for any nonzero
// in integer vector operations.
template <class M>
using Bits = std::conditional_t<
    sizeof(M) == 1, uint8_t,
    std::conditional_t<sizeof(M) == 2, uint16_t, std::conditional_t<sizeof(M) == 4, uint32_t, uint64_t>>>;

template <class M>
bool any_nonzero(const M* pixels, int64_t count) {
  constexpr int kShift = std::is_integral_v<M> ? 0 : 1;
  Bits<M> acc = 0;
  for (int64_t i = 0; i < count; ++i) {
    Bits<M> b;
    std::memcpy(&b, pixels + i, sizeof(M));
    acc |= static_cast<Bits<M>>(b << kShift);
  }
  return acc != 0;
}

// The first (kForward) or last nonzero pixel of row[begin, end), or -1: chunk by chunk, then pixel by
// pixel inside the chunk that has one.
template <bool kForward, class M>
int64_t nonzero_end(const M* row, int64_t begin, int64_t end) {
  constexpr int64_t kChunk = 64;
  while (end - begin >= kChunk && !any_nonzero(kForward ? row + begin : row + end - kChunk, kChunk)) {
    if (kForward) {
      begin += kChunk;
    } else {
      end -= kChunk;
    }
  }
  for (int64_t i = 0; i < end - begin; ++i) {
    const int64_t x = kForward ? begin + i : end - 1 - i;
    if (any_nonzero(row + x, 1)) return x;
  }
  return -1;
}

// The box of one mask (x1, y1, x2, y2 of its nonzero pixels; zeros when it has none). Each row is read
// from the left up to its first nonzero pixel and from the right down to the box's right edge so far.
template <class M>
void box_of(const M* mask, int64_t height, int64_t width, float* box) {
  int64_t x1 = width, x2 = -1, y1 = -1, y2 = -1;
  for (int64_t y = 0; y < height; ++y) {
    const M* row = mask + y * width;
    const int64_t left = nonzero_end<true>(row, 0, width);
    if (left < 0) continue;
    x1 = std::min(x1, left);
    x2 = std::max(x2, nonzero_end<false>(row, std::max(x2, left), width));
    if (y1 < 0) y1 = y;
    y2 = y;
  }
  const bool empty = y1 < 0;
  box[0] = empty ? 0.f : static_cast<float>(x1);
  box[1] = empty ? 0.f : static_cast<float>(y1);
  box[2] = empty ? 0.f : static_cast<float>(x2);
  box[3] = empty ? 0.f : static_cast<float>(y2);
}

struct CpuKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) { return st == at::kDouble ? st : at::kFloat; }

  static void paste(const at::Tensor& masks, const at::Tensor& boxes, at::Tensor& out, const PasteGeometry& g) {
    out = cpu::lazily_zeroed(out.sizes(), out.options());  // only the regions are written
    AT_DISPATCH_FLOATING_TYPES(masks.scalar_type(), "paste_masks_in_image", [&] {
      using T = scalar_t;
      AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "paste_masks_in_image", [&] {
        using B = scalar_t;
        if (g.convention == Convention::kTorchvision) {
          paste_torchvision<B, T>(masks.const_data_ptr<T>(), boxes.const_data_ptr<B>(), out.data_ptr<T>(), g);
        } else {
          paste_detectron2<B, T>(masks.const_data_ptr<T>(), boxes.const_data_ptr<B>(),
                                 static_cast<uint8_t*>(out.data_ptr()), g);
        }
      });
    });
  }

  static void boxes_of(const at::Tensor& masks, at::Tensor& boxes) {
    const int64_t n = masks.size(0), h = masks.size(1), w = masks.size(2);
    float* out = boxes.data_ptr<float>();
    AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kHalf, at::kBFloat16, masks.scalar_type(), "masks_to_boxes", [&] {
      const scalar_t* m = masks.const_data_ptr<scalar_t>();
      const int64_t grain = std::max<int64_t>(1, kGrainPixels / std::max<int64_t>(1, h * w));
      at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) box_of(m + i * h * w, h, w, out + 4 * i);
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

}  // namespace pydet::masks
