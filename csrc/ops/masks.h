// paste_masks_in_image in torchvision's and detectron2's conventions (two operators over one kernel)
// and masks_to_boxes: the device-independent front end. It validates arguments, allocates outputs
// and brings tensors to the layout and dtype the kernels index; the kernels (cpu/masks.cpp,
// cuda/masks.cu) resample with common/mask_math.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>

#include "common/checks.h"
#include "common/mask_math.h"

namespace pydet::masks {

enum class Convention {
  kTorchvision,  // resize the padded mask to the expanded, whole-pixel box; float result
  kDetectron2,   // grid-sample the mask at every pixel near the box; bool (thresholded) or uint8 result
};

struct PasteGeometry {
  Convention convention;
  int64_t masks, mask_h, mask_w;  // torchvision: of the padded masks; detectron2: before the zero border
  int64_t height, width;          // the image's
  double scale;                   // torchvision: the boxes' expansion, (M + 2 padding) / M
  double threshold;               // detectron2
};

// Kernels must provide (masks [N, Mh, Mw] contiguous in compute_dtype, torchvision's padded, detectron2's
// with a one-pixel zero border: [N, Mh + 2, Mw + 2]; boxes [N, 4] contiguous float32 or float64):
//   static void paste(const Tensor& masks, const Tensor& boxes, Tensor& out /*[N, H, W] (torchvision:
//                     [N, 1, H, W]) of compute_dtype, bool or uint8; uninitialised: the kernel writes all
//                     of it, or replaces it with a tensor of its sizes and options*/, const PasteGeometry&);
//   static void boxes_of(const Tensor& masks /*[N, H, W] contiguous*/, Tensor& boxes /*[N, 4] float32*/);
//   static at::ScalarType compute_dtype(at::ScalarType);
template <class Kernels>
struct Ops {
  static void check_boxes(const char* op, const at::Tensor& boxes, const at::Tensor& masks) {
    check_floating(boxes, op, "boxes");
    TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.sym_size(0) == masks.sym_size(0) && boxes.sym_size(1) == 4, "pydet.",
                      op, ": boxes must have shape [N, 4] (x1, y1, x2, y2) with N = ", masks.sym_size(0),
                      " (one box per mask), got ", shape_str(boxes.sym_sizes()));
    check_same_device(masks, "masks", boxes, "boxes", op);
  }

  static void check_image(const char* op, const c10::SymInt& height, const c10::SymInt& width) {
    TORCH_CHECK_VALUE(height >= 0 && width >= 0, "pydet.", op, ": the image size must be >= 0, got (", height, ", ",
                      width, ")");
  }

  // float32 boxes, or float64 ones as they are (the libraries compute boxes in the boxes' dtype).
  static at::Tensor box_values(const at::Tensor& boxes) {
    return (boxes.scalar_type() == at::kDouble ? boxes : boxes.to(at::kFloat)).contiguous();
  }

  static at::Tensor paste_torchvision(const at::Tensor& masks, const at::Tensor& boxes, c10::SymInt height,
                                      c10::SymInt width, int64_t padding) {
    const char* op = "paste_masks_in_image";
    check_floating(masks, op, "masks");
    TORCH_CHECK_VALUE(masks.dim() == 4 && masks.sym_size(1) == 1 && masks.sym_size(2) >= 1 && masks.sym_size(3) >= 1,
                      "pydet.", op, ": masks must have shape [N, 1, M, M] with M >= 1, got ",
                      shape_str(masks.sym_sizes()));
    check_boxes(op, boxes, masks);
    check_image(op, height, width);
    TORCH_CHECK_VALUE(padding >= 0, "pydet.", op, ": padding must be >= 0, got ", padding);
    const at::ScalarType dt = Kernels::compute_dtype(masks.scalar_type());
    at::Tensor out = at::empty_symint({masks.sym_size(0), 1, height, width}, masks.options().dtype(dt));
    if (computes(out)) {
      const at::Tensor padded = at::constant_pad_nd(masks.select(1, 0).to(dt), {padding, padding, padding, padding}, 0);
      const int64_t m = masks.size(3);  // torchvision scales by the last dimension
      Kernels::paste(
          padded.contiguous(), box_values(boxes), out,
          PasteGeometry{Convention::kTorchvision, padded.size(0), padded.size(1), padded.size(2), height.expect_int(),
                        width.expect_int(), static_cast<double>(m + 2 * padding) / static_cast<double>(m), 0.0});
    }
    return out.to(masks.scalar_type());
  }

  static at::Tensor paste_detectron2(const at::Tensor& masks, const at::Tensor& boxes, c10::SymInt height,
                                     c10::SymInt width, double threshold) {
    const char* op = "paste_masks_in_image_detectron2";
    TORCH_CHECK_VALUE(masks.dim() == 3 && masks.sym_size(1) >= 1 && masks.sym_size(2) >= 1, "pydet.", op,
                      ": masks must have shape [N, M, M] with M >= 1, got ", shape_str(masks.sym_sizes()));
    check_boxes(op, boxes, masks);
    check_image(op, height, width);
    at::Tensor out = at::empty_symint({masks.sym_size(0), height, width},
                                      masks.options().dtype(threshold >= 0 ? at::kBool : at::kByte));
    if (computes(out)) {
      // detectron2 samples integer and boolean masks as float32; the kernels read a one-pixel zero
      // border for grid_sample's zero padding (common/mask_math.h)
      const at::ScalarType st = at::isFloatingType(masks.scalar_type()) ? masks.scalar_type() : at::kFloat;
      const at::Tensor bordered = at::constant_pad_nd(masks.to(Kernels::compute_dtype(st)), {1, 1, 1, 1}, 0);
      Kernels::paste(bordered.contiguous(), box_values(boxes), out,
                     PasteGeometry{Convention::kDetectron2, masks.size(0), masks.size(1), masks.size(2),
                                   height.expect_int(), width.expect_int(), 1.0, threshold});
    }
    return out;
  }

  static at::Tensor masks_to_boxes(const at::Tensor& masks) {
    TORCH_CHECK_VALUE(masks.dim() == 3, "pydet.masks_to_boxes: masks must have shape [N, H, W], got ",
                      shape_str(masks.sym_sizes()));
    at::Tensor boxes = at::empty_symint({masks.sym_size(0), 4}, masks.options().dtype(at::kFloat));
    if (computes(boxes)) {
      const at::Tensor m = masks.contiguous();
      Kernels::boxes_of(m, boxes);
    }
    return boxes;
  }

  static void register_all(torch::Library& m) {
    m.impl("paste_masks_in_image", &paste_torchvision);
    m.impl("paste_masks_in_image_detectron2", &paste_detectron2);
    m.impl("masks_to_boxes", &masks_to_boxes);
  }
};

}  // namespace pydet::masks
