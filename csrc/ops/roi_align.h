// roi_align (torchvision.ops.roi_align's operator: same schema, checks and numerics) and its backward:
// the device-independent front end. It validates arguments, allocates outputs and brings tensors to the
// layout and dtype the kernels index (input NCHW contiguous, rois [K, 5] contiguous); the kernels
// (cpu/roi_align.cpp, cuda/roi_align.cu) sample with common/roi_align_math.h. The rois' batch indices
// are data, so the kernels check them (CPU: ValueError; CUDA: a device-side assert).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/roi_align_math.h"

namespace pydet::roi {

struct Geometry {
  int64_t batch, channels, height, width;  // the input's
  int64_t rois, pooled_h, pooled_w, sampling_ratio;
  double spatial_scale;
  bool aligned;
};

// The message for a row whose batch index is not an integer in [0, batch).
inline void fail_batch_index(const char* op, int64_t row, double value, int64_t batch) {
  C10_THROW_ERROR(ValueError, c10::str("pydet.", op, ": rois[", row, ", 0] must be an integer batch index in [0, ",
                                       batch, ") (the input's batch size), got ", value));
}

// Kernels must provide (input [N, C, H, W] contiguous, or channels_last-contiguous where
// kReadsChannelsLast, and rois [K, 5] contiguous, both in compute_dtype):
//   static void forward(const Tensor& input, const Tensor& rois, Tensor& out /*[K, C, PH, PW]*/, const Geometry&);
//   static void backward(const Tensor& grad /*[K, C, PH, PW]*/, const Tensor& rois,
//                        Tensor& grad_input /*uninitialised: the kernel writes all of it*/, const Geometry&);
//   static at::ScalarType compute_dtype(at::ScalarType);
//   static constexpr bool kReadsChannelsLast;
template <class Kernels>
struct Ops {
  static void check_rois(const char* op, const at::Tensor& rois, const at::Tensor& like, const char* like_name) {
    TORCH_CHECK_VALUE(rois.dim() == 2 && rois.sym_size(1) == 5, "pydet.", op,
                      ": rois must have shape [K, 5] (batch index, x1, y1, x2, y2), got ", shape_str(rois.sym_sizes()));
    TORCH_CHECK_TYPE(rois.scalar_type() == like.scalar_type(), "pydet.", op, ": rois must have ", like_name,
                     "'s dtype (", dtype_name(like.scalar_type()), "), got ", dtype_name(rois.scalar_type()));
    check_same_device(like, like_name, rois, "rois", op);
  }

  static void check_arguments(const char* op, const c10::SymInt& pooled_h, const c10::SymInt& pooled_w,
                              int64_t sampling_ratio) {
    TORCH_CHECK_VALUE(pooled_h > 0 && pooled_w > 0, "pydet.", op, ": output_size must be positive, got (", pooled_h,
                      ", ", pooled_w, ")");
    TORCH_CHECK_VALUE(sampling_ratio <= kMaxGrid, "pydet.", op, ": sampling_ratio must be at most ", kMaxGrid,
                      " (<= 0: adaptive), got ", sampling_ratio);
  }

  static Geometry geometry(c10::SymIntArrayRef input_shape, const at::Tensor& rois, double spatial_scale,
                           const c10::SymInt& pooled_h, const c10::SymInt& pooled_w, int64_t sampling_ratio,
                           bool aligned) {
    return Geometry{input_shape[0].expect_int(),
                    input_shape[1].expect_int(),
                    input_shape[2].expect_int(),
                    input_shape[3].expect_int(),
                    rois.size(0),
                    pooled_h.expect_int(),
                    pooled_w.expect_int(),
                    sampling_ratio,
                    spatial_scale,
                    aligned};
  }

  static at::Tensor forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                            c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio, bool aligned) {
    const char* op = "roi_align";
    check_floating(input, op, "input");
    TORCH_CHECK_VALUE(input.dim() == 4, "pydet.", op, ": input must have shape [N, C, H, W], got ",
                      shape_str(input.sym_sizes()));
    check_rois(op, rois, input, "input");
    check_arguments(op, pooled_height, pooled_width, sampling_ratio);
    const at::ScalarType dt = Kernels::compute_dtype(input.scalar_type());
    at::Tensor out =
        at::empty_symint({rois.sym_size(0), input.sym_size(1), pooled_height, pooled_width}, input.options().dtype(dt));
    if (computes(out)) {
      const at::Tensor in = input.to(dt);
      const bool in_place = Kernels::kReadsChannelsLast && in.is_contiguous(at::MemoryFormat::ChannelsLast);
      Kernels::forward(
          in_place ? in : in.contiguous(), rois.to(dt).contiguous(), out,
          geometry(input.sym_sizes(), rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned));
    }
    return out.to(input.scalar_type());
  }

  static at::Tensor backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                             c10::SymInt pooled_height, c10::SymInt pooled_width, c10::SymInt batch_size,
                             c10::SymInt channels, c10::SymInt height, c10::SymInt width, int64_t sampling_ratio,
                             bool aligned) {
    const char* op = "_roi_align_backward";
    check_floating(grad, op, "grad");
    check_rois(op, rois, grad, "grad");
    check_arguments(op, pooled_height, pooled_width, sampling_ratio);
    TORCH_CHECK_VALUE(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, "pydet.", op,
                      ": the input's sizes must be >= 0, got [", batch_size, ", ", channels, ", ", height, ", ", width,
                      "]");
    const std::vector<c10::SymInt> grad_shape{rois.sym_size(0), channels, pooled_height, pooled_width};
    TORCH_CHECK_VALUE(grad.sym_sizes() == c10::SymIntArrayRef(grad_shape), "pydet.", op,
                      ": grad must have the output's shape ", shape_str(grad_shape), ", got ",
                      shape_str(grad.sym_sizes()));
    const at::ScalarType dt = Kernels::compute_dtype(grad.scalar_type());
    const std::vector<c10::SymInt> input_shape{batch_size, channels, height, width};
    at::Tensor grad_input = at::empty_symint(input_shape, grad.options().dtype(dt));
    if (computes(grad_input)) {
      Kernels::backward(
          grad.to(dt).contiguous(), rois.to(dt).contiguous(), grad_input,
          geometry(input_shape, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned));
    }
    return grad_input.to(grad.scalar_type());
  }

  static void register_all(torch::Library& m) {
    m.impl("roi_align", &forward);
    m.impl("_roi_align_backward", &backward);
  }
};

}  // namespace pydet::roi
