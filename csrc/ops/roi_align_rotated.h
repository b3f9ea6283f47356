// roi_align_rotated (detectron2's ROIAlignRotated: rois [K, 6] = batch index, cx, cy, w, h, angle in
// degrees counter-clockwise) and its backward: the device-independent front end. It validates
// arguments, allocates outputs and brings tensors to the layout and dtype the kernels index; the
// kernels (cpu/roi_align_rotated.cpp, cuda/roi_align_rotated.cu) sample with
// common/roi_align_rotated_math.h. The rois' batch indices and sizes are data, so the kernels check
// them (CPU: ValueError; CUDA: a device-side assert).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "ops/roi_checks.h"

namespace pydet::roi {

struct RotatedGeometry {
  int64_t batch, channels, height, width, rois, pooled_h, pooled_w, sampling_ratio;
  double spatial_scale;
};

// The message for an RoI of negative scaled width or height (detectron2 asserts).
inline void fail_rotated_size(const char* op, int64_t row, double width, double height) {
  C10_THROW_ERROR(ValueError, c10::str("pydet.", op, ": rois[", row, ", 3:5] (w, h) must be >= 0 after scaling, got (",
                                       width, ", ", height, ")"));
}

// Kernels must provide (input [N, C, H, W] contiguous, rois [K, 6] contiguous, both in compute_dtype):
//   static void forward(const Tensor& input, const Tensor& rois, Tensor& out /*[K, C, PH, PW]*/,
//                       const RotatedGeometry&);
//   static void backward(const Tensor& grad /*[K, C, PH, PW]*/, const Tensor& rois,
//                        Tensor& grad_input /*uninitialised: the kernel writes all of it*/, const RotatedGeometry&);
//   static at::ScalarType compute_dtype(at::ScalarType);
template <class Kernels>
struct RotatedOps {
  static at::Tensor forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                            c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio) {
    const char* op = "roi_align_rotated";
    check_features(op, "input", input);
    check_rois(op, rois, input, "input", /*rotated=*/true);
    check_arguments(op, pooled_height, pooled_width, sampling_ratio);
    const at::ScalarType dt = Kernels::compute_dtype(input.scalar_type());
    at::Tensor out =
        at::empty_symint({rois.sym_size(0), input.sym_size(1), pooled_height, pooled_width}, input.options().dtype(dt));
    if (computes(out)) {
      Kernels::forward(input.to(dt).contiguous(), rois.to(dt).contiguous(), out,
                       RotatedGeometry{input.size(0), input.size(1), input.size(2), input.size(3), rois.size(0),
                                       out.size(2), out.size(3), sampling_ratio, spatial_scale});
    }
    return out.to(input.scalar_type());
  }

  static at::Tensor backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                             c10::SymInt pooled_height, c10::SymInt pooled_width, c10::SymInt batch_size,
                             c10::SymInt channels, c10::SymInt height, c10::SymInt width, int64_t sampling_ratio) {
    const char* op = "_roi_align_rotated_backward";
    check_floating(grad, op, "grad");
    check_rois(op, rois, grad, "grad", /*rotated=*/true);
    check_arguments(op, pooled_height, pooled_width, sampling_ratio);
    const std::vector<c10::SymInt> sizes{height, width};
    check_input_sizes(op, batch_size, channels, sizes);
    const std::vector<c10::SymInt> shape{rois.sym_size(0), channels, pooled_height, pooled_width};
    TORCH_CHECK_VALUE(grad.sym_sizes() == c10::SymIntArrayRef(shape), "pydet.", op,
                      ": grad must have the output's shape ", shape_str(shape), ", got ", shape_str(grad.sym_sizes()));
    const at::ScalarType dt = Kernels::compute_dtype(grad.scalar_type());
    at::Tensor grad_input = at::empty_symint({batch_size, channels, height, width}, grad.options().dtype(dt));
    if (computes(grad_input)) {
      Kernels::backward(grad.to(dt).contiguous(), rois.to(dt).contiguous(), grad_input,
                        RotatedGeometry{batch_size.expect_int(), channels.expect_int(), height.expect_int(),
                                        width.expect_int(), rois.size(0), pooled_height.expect_int(),
                                        pooled_width.expect_int(), sampling_ratio, spatial_scale});
    }
    return grad_input.to(grad.scalar_type());
  }

  static void register_all(torch::Library& m) {
    m.impl("roi_align_rotated", &forward);
    m.impl("_roi_align_rotated_backward", &backward);
  }
};

}  // namespace pydet::roi
