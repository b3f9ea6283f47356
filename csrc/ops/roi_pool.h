// roi_pool, ps_roi_pool and ps_roi_align (torchvision.ops' operators: same schemas, checks and
// numerics) and their backwards: the device-independent front end. It validates arguments, allocates
// outputs and brings tensors to the layout and dtype the kernels index; the kernels
// (cpu/roi_pool.cpp, cuda/roi_pool.cu) find bins with common/roi_pool_math.h (roi_pool, ps_roi_pool)
// and sample with common/roi_align_math.h (ps_roi_align).
//
// Each forward returns the pooled bins and an int32 tensor of their shape, as torchvision's:
// roi_pool's argmax (the pixel h * W + w each bin's maximum came from, -1 for an empty bin), which its
// backward routes the gradient by, and the position-sensitive ops' channel mapping (bin (c, ph, pw)
// reads input channel (c * PH + ph) * PW + pw). That mapping is fixed by the shapes, so the backwards
// check its shape and dtype but do not read it. The rois' batch indices and roi_pool's argmax are data,
// so the kernels check them (CPU: ValueError; CUDA: a device-side assert).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "ops/roi_checks.h"

namespace pydet::roi {

enum class Pooling {
  kMax,        // roi_pool: the maximum of each bin's pixels
  kPsAverage,  // ps_roi_pool: the mean of each bin's pixels, one input channel per bin
  kPsAlign,    // ps_roi_align: roi_align's sampling (aligned), one input channel per bin
};

struct PoolGeometry {
  Pooling pooling;
  int64_t batch, channels, height, width;  // the input's
  int64_t rois, out_channels, pooled_h, pooled_w, sampling_ratio;
  double spatial_scale;
};

// The message for a roi_pool argmax that is neither -1 nor a pixel of the plane.
inline void fail_argmax(const char* op, int64_t index, int64_t value, int64_t pixels) {
  C10_THROW_ERROR(ValueError, c10::str("pydet.", op, ": argmax (flat index ", index,
                                       ") must be -1 or a pixel index in [0, ", pixels, "), got ", value));
}

// Kernels must provide (input [N, C, H, W] contiguous, rois [K, 5] contiguous, both in compute_dtype):
//   static void forward(const Tensor& input, const Tensor& rois, Tensor& out /*[K, C_out, PH, PW]*/,
//                       Tensor& index /*int32, out's shape*/, const PoolGeometry&);
//   static void backward(const Tensor& grad /*[K, C_out, PH, PW]*/, const Tensor& rois,
//                        const Tensor& argmax /*int32 (roi_pool) or undefined*/,
//                        Tensor& grad_input /*uninitialised: the kernel writes all of it*/, const PoolGeometry&);
//   static at::ScalarType compute_dtype(at::ScalarType);
template <class Kernels>
struct PoolOps {
  // The output channels: C for roi_pool; C / (PH * PW) for the position-sensitive ops, which need C
  // to be a multiple of PH * PW.
  static c10::SymInt out_channels(const char* op, Pooling pooling, const c10::SymInt& channels,
                                  const c10::SymInt& pooled_h, const c10::SymInt& pooled_w) {
    if (pooling == Pooling::kMax) return channels;
    const c10::SymInt bins = pooled_h * pooled_w;
    TORCH_CHECK_VALUE(channels % bins == 0, "pydet.", op, ": the input's channels (", channels,
                      ") must be a multiple of output_size's bins (", pooled_h, " x ", pooled_w, " = ", bins, ")");
    return channels / bins;
  }

  static PoolGeometry geometry(Pooling pooling, int64_t batch, int64_t channels, int64_t height, int64_t width,
                               const at::Tensor& out, int64_t sampling_ratio, double spatial_scale) {
    return PoolGeometry{pooling,     batch,       channels,    height,         width,        out.size(0),
                        out.size(1), out.size(2), out.size(3), sampling_ratio, spatial_scale};
  }

  static std::tuple<at::Tensor, at::Tensor> pool(const char* op, Pooling pooling, const at::Tensor& input,
                                                 const at::Tensor& rois, double spatial_scale,
                                                 const c10::SymInt& pooled_h, const c10::SymInt& pooled_w,
                                                 int64_t sampling_ratio) {
    check_features(op, "input", input);
    check_rois(op, rois, input, "input");
    check_arguments(op, pooled_h, pooled_w, sampling_ratio);
    const c10::SymInt c_out = out_channels(op, pooling, input.sym_size(1), pooled_h, pooled_w);
    TORCH_CHECK_VALUE(
        pooling != Pooling::kMax || input.sym_size(2) * input.sym_size(3) <= std::numeric_limits<int32_t>::max(),
        "pydet.", op, ": the input's planes must have fewer than 2^31 pixels (argmax is int32), got ",
        shape_str(input.sym_sizes()));
    const at::ScalarType dt = Kernels::compute_dtype(input.scalar_type());
    const std::vector<c10::SymInt> shape{rois.sym_size(0), c_out, pooled_h, pooled_w};
    at::Tensor out = at::empty_symint(shape, input.options().dtype(dt));
    at::Tensor index = at::empty_symint(shape, input.options().dtype(at::kInt));
    if (computes(out)) {
      Kernels::forward(input.to(dt).contiguous(), rois.to(dt).contiguous(), out, index,
                       geometry(pooling, input.size(0), input.size(1), input.size(2), input.size(3), out,
                                sampling_ratio, spatial_scale));
    }
    return {out.to(input.scalar_type()), index};
  }

  // index: roi_pool's argmax or the channel mapping, of grad's shape.
  static at::Tensor unpool(const char* op, Pooling pooling, const at::Tensor& grad, const at::Tensor& rois,
                           const at::Tensor& index, double spatial_scale, const c10::SymInt& pooled_h,
                           const c10::SymInt& pooled_w, int64_t sampling_ratio, const c10::SymInt& batch_size,
                           const c10::SymInt& channels, const c10::SymInt& height, const c10::SymInt& width) {
    check_floating(grad, op, "grad");
    check_rois(op, rois, grad, "grad");
    check_arguments(op, pooled_h, pooled_w, sampling_ratio);
    const std::vector<c10::SymInt> sizes{height, width};
    check_input_sizes(op, batch_size, channels, sizes);
    const c10::SymInt c_out = out_channels(op, pooling, channels, pooled_h, pooled_w);
    const std::vector<c10::SymInt> shape{rois.sym_size(0), c_out, pooled_h, pooled_w};
    TORCH_CHECK_VALUE(grad.sym_sizes() == c10::SymIntArrayRef(shape), "pydet.", op,
                      ": grad must have the output's shape ", shape_str(shape), ", got ", shape_str(grad.sym_sizes()));
    const char* index_name = pooling == Pooling::kMax ? "argmax" : "channel_mapping";
    TORCH_CHECK_TYPE(index.scalar_type() == at::kInt, "pydet.", op, ": ", index_name, " must be an int32 tensor, got ",
                     dtype_name(index.scalar_type()));
    TORCH_CHECK_VALUE(index.sym_sizes() == c10::SymIntArrayRef(shape), "pydet.", op, ": ", index_name,
                      " must have the output's shape ", shape_str(shape), ", got ", shape_str(index.sym_sizes()));
    check_same_device(grad, "grad", index, index_name, op);
    const at::ScalarType dt = Kernels::compute_dtype(grad.scalar_type());
    at::Tensor grad_input = at::empty_symint({batch_size, channels, height, width}, grad.options().dtype(dt));
    if (computes(grad_input)) {
      const at::Tensor g = grad.to(dt).contiguous();
      Kernels::backward(g, rois.to(dt).contiguous(), pooling == Pooling::kMax ? index.contiguous() : at::Tensor(),
                        grad_input,
                        geometry(pooling, batch_size.expect_int(), channels.expect_int(), height.expect_int(),
                                 width.expect_int(), g, sampling_ratio, spatial_scale));
    }
    return grad_input.to(grad.scalar_type());
  }

  static std::tuple<at::Tensor, at::Tensor> roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                                     double spatial_scale, c10::SymInt pooled_height,
                                                     c10::SymInt pooled_width) {
    return pool("roi_pool", Pooling::kMax, input, rois, spatial_scale, pooled_height, pooled_width, 0);
  }

  static at::Tensor roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                      double spatial_scale, c10::SymInt pooled_height, c10::SymInt pooled_width,
                                      c10::SymInt batch_size, c10::SymInt channels, c10::SymInt height,
                                      c10::SymInt width) {
    return unpool("_roi_pool_backward", Pooling::kMax, grad, rois, argmax, spatial_scale, pooled_height, pooled_width,
                  0, batch_size, channels, height, width);
  }

  static std::tuple<at::Tensor, at::Tensor> ps_roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                                        double spatial_scale, c10::SymInt pooled_height,
                                                        c10::SymInt pooled_width) {
    return pool("ps_roi_pool", Pooling::kPsAverage, input, rois, spatial_scale, pooled_height, pooled_width, 0);
  }

  static at::Tensor ps_roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                                         const at::Tensor& channel_mapping, double spatial_scale,
                                         c10::SymInt pooled_height, c10::SymInt pooled_width, c10::SymInt batch_size,
                                         c10::SymInt channels, c10::SymInt height, c10::SymInt width) {
    return unpool("_ps_roi_pool_backward", Pooling::kPsAverage, grad, rois, channel_mapping, spatial_scale,
                  pooled_height, pooled_width, 0, batch_size, channels, height, width);
  }

  static std::tuple<at::Tensor, at::Tensor> ps_roi_align(const at::Tensor& input, const at::Tensor& rois,
                                                         double spatial_scale, c10::SymInt pooled_height,
                                                         c10::SymInt pooled_width, int64_t sampling_ratio) {
    return pool("ps_roi_align", Pooling::kPsAlign, input, rois, spatial_scale, pooled_height, pooled_width,
                sampling_ratio);
  }

  static at::Tensor ps_roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                                          const at::Tensor& channel_mapping, double spatial_scale,
                                          c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio,
                                          c10::SymInt batch_size, c10::SymInt channels, c10::SymInt height,
                                          c10::SymInt width) {
    return unpool("_ps_roi_align_backward", Pooling::kPsAlign, grad, rois, channel_mapping, spatial_scale,
                  pooled_height, pooled_width, sampling_ratio, batch_size, channels, height, width);
  }

  static void register_all(torch::Library& m) {
    m.impl("roi_pool", &roi_pool);
    m.impl("_roi_pool_backward", &roi_pool_backward);
    m.impl("ps_roi_pool", &ps_roi_pool);
    m.impl("_ps_roi_pool_backward", &ps_roi_pool_backward);
    m.impl("ps_roi_align", &ps_roi_align);
    m.impl("_ps_roi_align_backward", &ps_roi_align_backward);
  }
};

}  // namespace pydet::roi
