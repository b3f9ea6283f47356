// CPU kernels of paste_masks_in_image (both conventions) and masks_to_boxes (front end: ops/masks.h;
// resampling: common/mask_math.h).
//
// Pasting writes every output byte once: one task per output row fills it with zeros outside its
// mask's region and resamples inside, from the mask's column taps (tabulated once per mask) and the
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
#include <vector>

#include "common/mask_math.h"
#include "ops/masks.h"

namespace pydet::masks {
namespace {

// Output bytes (or mask pixels read) one task should have before a call goes parallel.
constexpr int64_t kGrainBytes = 1 << 16;

// Each mask's pasted region and its columns' taps (torchvision: ResizeTap; detectron2: GridTap).
template <class T, class Tap>
struct Regions {
  std::vector<Span> rows, cols;
  std::vector<int64_t> first_tap;  // mask n's column taps: taps[first_tap[n] .. first_tap[n] + cols[n] size)
  std::vector<Tap> taps;
  std::vector<int64_t> resized_h, top;  // torchvision: the box's height in pixels and its first row
};

template <class B, class T>
Regions<T, ResizeTap<T>> torchvision_regions(const B* boxes, const PasteGeometry& g) {
  Regions<T, ResizeTap<T>> r;
  const B scale = static_cast<B>(g.scale);
  for (int64_t n = 0; n < g.masks; ++n) {
    const B* box = boxes + 4 * n;
    const bool finite = finite_box(box);
    const PixelBox x = expanded_axis(box[0], box[2], scale), y = expanded_axis(box[1], box[3], scale);
    const int64_t w = std::max<int64_t>(x.last - x.first + 1, 1), h = std::max<int64_t>(y.last - y.first + 1, 1);
    r.rows.push_back(finite ? clipped(y.first, y.last + 1, g.height) : Span{0, 0});
    r.cols.push_back(finite ? clipped(x.first, x.last + 1, g.width) : Span{0, 0});
    r.resized_h.push_back(h);
    r.top.push_back(y.first);
    r.first_tap.push_back(static_cast<int64_t>(r.taps.size()));
    for (int64_t c = r.cols.back().begin; c < r.cols.back().end; ++c) {
      r.taps.push_back(resize_tap<T>(g.mask_w, w, c - x.first));
    }
  }
  return r;
}

template <class B, class T>
Regions<T, GridTap<T>> detectron2_regions(const B* boxes, const PasteGeometry& g) {
  Regions<T, GridTap<T>> r;
  for (int64_t n = 0; n < g.masks; ++n) {
    const B* box = boxes + 4 * n;
    const bool finite = finite_box(box);
    r.rows.push_back(finite ? sampled_region(box[1], box[3], g.height) : Span{0, 0});
    r.cols.push_back(finite ? sampled_region(box[0], box[2], g.width) : Span{0, 0});
    r.first_tap.push_back(static_cast<int64_t>(r.taps.size()));
    for (int64_t c = r.cols.back().begin; c < r.cols.back().end; ++c) {
      r.taps.push_back(grid_tap<B, T>(c, box[0], box[2], g.mask_w));
    }
  }
  return r;
}

// f(n, y, row) for every output row (row: out's row of mask n at image row y), in parallel.
template <class O, class F>
void for_each_row(const PasteGeometry& g, O* out, const F& f) {
  const int64_t rows = g.masks * g.height;
  const int64_t grain = std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(1, g.width * int64_t(sizeof(O))));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) f(task / g.height, task % g.height, out + task * g.width);
  });
}

template <class B, class T>
void paste_torchvision(const T* masks, const B* boxes, T* out, const PasteGeometry& g) {
  const auto r = torchvision_regions<B, T>(boxes, g);
  for_each_row(g, out, [&](int64_t n, int64_t y, T* row) {
    const Span rows = r.rows[n], cols = r.cols[n];
    if (y < rows.begin || y >= rows.end || cols.begin == cols.end) {
      std::fill(row, row + g.width, T(0));
      return;
    }
    std::fill(row, row + cols.begin, T(0));
    std::fill(row + cols.end, row + g.width, T(0));
    const ResizeTap<T> ty = resize_tap<T>(g.mask_h, r.resized_h[n], y - r.top[n]);
    const T* mask = masks + n * g.mask_h * g.mask_w;
    const T* low = mask + ty.low * g.mask_w;
    const T* high = mask + ty.high * g.mask_w;
    const ResizeTap<T>* tx = r.taps.data() + r.first_tap[n] - cols.begin;
    for (int64_t x = cols.begin; x < cols.end; ++x) {
      row[x] = resized(ty, tx[x], low[tx[x].low], low[tx[x].high], high[tx[x].low], high[tx[x].high]);
    }
  });
}

template <class B, class T>
void paste_detectron2(const T* masks, const B* boxes, uint8_t* out, const PasteGeometry& g) {
  const auto r = detectron2_regions<B, T>(boxes, g);
  for_each_row(g, out, [&](int64_t n, int64_t y, uint8_t* row) {
    const Span rows = r.rows[n], cols = r.cols[n];
    if (y < rows.begin || y >= rows.end || cols.begin == cols.end) {
      std::memset(row, 0, g.width);
      return;
    }
    std::memset(row, 0, cols.begin);
    std::memset(row + cols.end, 0, g.width - cols.end);
    const B* box = boxes + 4 * n;
    const GridTap<T> ty = grid_tap<B, T>(y, box[1], box[3], g.mask_h);
    const T* mask = masks + n * g.mask_h * g.mask_w;
    const T* low = ty.low_inside ? mask + ty.low * g.mask_w : nullptr;
    const T* high = ty.high_inside ? mask + (ty.low + 1) * g.mask_w : nullptr;
    const GridTap<T>* tx = r.taps.data() + r.first_tap[n] - cols.begin;
    for (int64_t x = cols.begin; x < cols.end; ++x) row[x] = thresholded(sampled(ty, tx[x], low, high), g.threshold);
  });
}

// The box of one mask (x1, y1, x2, y2 of its nonzero pixels; zeros when it has none).
template <class M>
void box_of(const M* mask, int64_t height, int64_t width, float* box) {
  int64_t x1 = width, x2 = -1, y1 = -1, y2 = -1;
  for (int64_t y = 0; y < height; ++y) {
    const M* row = mask + y * width;
    int64_t left = 0;
    while (left < width && !(row[left] != M(0))) ++left;  // NaN counts as nonzero, as in masks.bool()
    if (left == width) continue;
    int64_t right = width - 1;
    while (right > x2 && !(row[right] != M(0))) --right;
    x1 = std::min(x1, left);
    x2 = std::max(x2, right);
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
      const int64_t grain = std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(1, h * w * int64_t(sizeof(scalar_t))));
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
