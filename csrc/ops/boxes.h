// Box utilities (box_area, box_convert, clip_boxes_to_image, remove_small_boxes): the device-agnostic
// half of each operator. It validates arguments, promotes float16/bfloat16 to float32, flattens the
// leading dimensions and allocates outputs; the device half (`Kernels`, see cpu/boxes.cpp and
// cuda/boxes.cu) only computes. Both devices register these same front ends.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>

#include "common/checks.h"
#include "ops/eager_boxes.h"
#include "ops/rotated_formats.h"

namespace pydet::boxes {

// [..., 4] -> [K, 4] in the compute dtype (a view when possible; strides are arbitrary).
inline at::Tensor rows(const at::Tensor& boxes) {
  return boxes.to(compute_dtype(boxes.scalar_type())).reshape_symint({-1, 4});
}

constexpr int64_t kAnyRank = std::numeric_limits<int64_t>::max();

// Kernels must provide (inputs [K, 4] float/double with any strides, outputs contiguous):
//   static void area(const Tensor& boxes, Tensor& out /*[K]*/, BoxFormat fmt);
//   static void area_backward(const Tensor& grad /*[K]*/, const Tensor& boxes, Tensor& grad_boxes, BoxFormat fmt);
//   static void convert(const Tensor& boxes, Tensor& out, BoxFormat in, BoxFormat out_fmt);
//   static void convert_backward(const Tensor& grad, Tensor& grad_boxes, BoxFormat in, BoxFormat out_fmt);
//   static void clip(const Tensor& boxes, Tensor& out, double height, double width);
//   static void clip_backward(const Tensor& grad, const Tensor& boxes, Tensor& grad_boxes, double h, double w);
//   static at::Tensor keep_large(const Tensor& boxes, double min_size);  // int64 indices
template <class Kernels>
struct Ops {
  // torchvision.ops.box_area(boxes, fmt): (x2 - x1) * (y2 - y1) for xyxy, w * h for xywh and cxcywh.
  // float16/bfloat16 give float32 areas, as torchvision's _upcast does (areas overflow float16 above
  // 65504 px^2).
  static at::Tensor area(const at::Tensor& boxes, c10::string_view fmt) {
    check_boxes(boxes, "box_area", "boxes", "[..., 4]", 1, kAnyRank, BoxDtypes::kFloatingOrInteger);
    const BoxFormat f = parse_choice(fmt, kBoxFormats, "box_area", "fmt");
    if (eager_boxes::is_integer(boxes)) return eager_boxes::area(boxes, f);
    const at::Tensor r = rows(boxes);
    at::Tensor out = at::empty_symint({r.sym_size(0)}, r.options());
    if (computes(out)) Kernels::area(r, out, f);
    return out.view_symint(boxes.sym_sizes().slice(0, boxes.dim() - 1));
  }

  static at::Tensor area_backward(const at::Tensor& grad, const at::Tensor& boxes, c10::string_view fmt) {
    const BoxFormat f = parse_choice(fmt, kBoxFormats, "_box_area_backward", "fmt");
    const at::Tensor r = rows(boxes);
    at::Tensor g = grad.to(r.scalar_type()).reshape_symint({-1});
    at::Tensor out = at::empty_symint(r.sym_sizes(), r.options());
    if (computes(out)) Kernels::area_backward(g, r, out, f);
    return out.to(boxes.scalar_type()).view_symint(boxes.sym_sizes());
  }

  // torchvision.ops.box_convert: between the axis-aligned formats (the kernels; integer and half
  // boxes as torchvision computes them, ops/eager_boxes.h) or between the rotated ones
  // (ops/rotated_formats.h).
  static at::Tensor convert(const at::Tensor& boxes, c10::string_view in_fmt, c10::string_view out_fmt) {
    const BoxFormat fi = parse_choice(in_fmt, kAllBoxFormats, "box_convert", "in_fmt");
    const BoxFormat fo = parse_choice(out_fmt, kAllBoxFormats, "box_convert", "out_fmt");
    const int64_t k = coordinates_of(fi);
    check_boxes(boxes, "box_convert", "boxes",
                k == 4   ? "[..., 4]"
                : k == 5 ? "[..., 5]"
                         : "[..., 8]",
                1, kAnyRank, BoxDtypes::kFloatingOrInteger, k);
    if (fi == fo) return boxes.clone();  // torchvision also returns a copy
    // torchvision raises NotImplementedError here; under fake tensors (torch.compile, export) that
    // exception means "no fake kernel", so the message would be lost.
    TORCH_CHECK_VALUE(is_rotated(fi) == is_rotated(fo), "pydet.box_convert: no conversion from '", std::string(in_fmt),
                      "' to '", std::string(out_fmt), "': one format is rotated, the other axis-aligned");
    if (is_rotated(fi)) return rotated_formats::convert(boxes, fi, fo);
    if (eager_boxes::is_integer(boxes) || eager_boxes::is_half(boxes.scalar_type())) {
      return eager_boxes::convert(boxes, fi, fo);
    }
    const at::Tensor r = rows(boxes);
    at::Tensor out = at::empty_symint(r.sym_sizes(), r.options());
    if (computes(out)) Kernels::convert(r, out, fi, fo);
    return out.to(boxes.scalar_type()).view_symint(boxes.sym_sizes());
  }

  static at::Tensor convert_backward(const at::Tensor& grad, const at::Tensor& boxes, c10::string_view in_fmt,
                                     c10::string_view out_fmt) {
    const BoxFormat fi = parse_choice(in_fmt, kAllBoxFormats, "_box_convert_backward", "in_fmt");
    const BoxFormat fo = parse_choice(out_fmt, kAllBoxFormats, "_box_convert_backward", "out_fmt");
    if (fi == fo) return grad.clone();
    if (is_rotated(fi)) return rotated_formats::convert_backward(grad, boxes, fi, fo);
    const at::Tensor g = rows(grad);
    at::Tensor out = at::empty_symint(g.sym_sizes(), g.options());
    if (computes(out)) Kernels::convert_backward(g, out, fi, fo);
    return out.to(grad.scalar_type()).view_symint(grad.sym_sizes());
  }

  static void check_size(c10::SymIntArrayRef size) {
    TORCH_CHECK_VALUE(size.size() == 2 && size[0] >= 0 && size[1] >= 0,
                      "pydet.clip_boxes_to_image: size must be "
                      "(height, width) with both >= 0, got ",
                      shape_str(size));
  }

  // torchvision.ops.clip_boxes_to_image: x clamped to [0, width], y to [0, height].
  // size may be symbolic under torch.compile (it is SymInt[2] in the schema); kernels see integers.
  static at::Tensor clip(const at::Tensor& boxes, c10::SymIntArrayRef size) {
    check_boxes(boxes, "clip_boxes_to_image", "boxes", "[..., 4]", 1, kAnyRank, BoxDtypes::kFloatingOrInteger);
    check_size(size);
    if (eager_boxes::is_integer(boxes)) return eager_boxes::clip(boxes, size[0].expect_int(), size[1].expect_int());
    const at::Tensor r = rows(boxes);
    at::Tensor out = at::empty_symint(r.sym_sizes(), r.options());
    if (computes(out)) Kernels::clip(r, out, double(size[0].expect_int()), double(size[1].expect_int()));
    return out.to(boxes.scalar_type()).view_symint(boxes.sym_sizes());
  }

  static at::Tensor clip_backward(const at::Tensor& grad, const at::Tensor& boxes, c10::SymIntArrayRef size) {
    check_size(size);
    const at::Tensor r = rows(boxes);
    const at::Tensor g = grad.to(r.scalar_type()).reshape_symint({-1, 4});
    at::Tensor out = at::empty_symint(r.sym_sizes(), r.options());
    if (computes(out)) {
      Kernels::clip_backward(g, r, out, double(size[0].expect_int()), double(size[1].expect_int()));
    }
    return out.to(boxes.scalar_type()).view_symint(boxes.sym_sizes());
  }

  // torchvision.ops.remove_small_boxes: indices of boxes with width >= min_size and height >= min_size
  // (boxes with a NaN side are removed).
  static at::Tensor remove_small(const at::Tensor& boxes, double min_size) {
    check_boxes(boxes, "remove_small_boxes", "boxes", "[N, 4]", 2, 2, BoxDtypes::kFloatingOrInteger);
    if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    if (eager_boxes::is_integer(boxes)) return eager_boxes::keep_large(boxes, min_size);
    const at::Tensor r = rows(boxes);
    return Kernels::keep_large(r, min_size);
  }

  // The ops whose output shapes follow from their inputs' (registered for CPU, CUDA and Meta).
  static void register_shaped(torch::Library& m) {
    m.impl("box_area", &area);
    m.impl("_box_area_backward", &area_backward);
    m.impl("box_convert", &convert);
    m.impl("_box_convert_backward", &convert_backward);
    m.impl("clip_boxes_to_image", &clip);
    m.impl("_clip_boxes_to_image_backward", &clip_backward);
  }

  // The ops whose output length depends on the data (their fakes are in pydet/ops/boxes.py).
  static void register_data_dependent(torch::Library& m) { m.impl("remove_small_boxes", &remove_small); }

  static void register_all(torch::Library& m) {
    register_shaped(m);
    register_data_dependent(m);
  }
};

}  // namespace pydet::boxes
