// roi_align (torchvision.ops.roi_align's operator: same schema, checks and numerics),
// multi_scale_roi_align (torchvision's MultiScaleRoIAlign pooling, all levels in one call) and their
// backwards: the device-independent front end. It validates arguments, allocates outputs and brings
// tensors to the layout and dtype the kernels index; the kernels (cpu/roi_align.cpp,
// cuda/roi_align.cu) sample with common/roi_align_math.h. roi_align is the one-level case. The rois'
// batch indices and levels are data, so the kernels check them (CPU: ValueError; CUDA: a device-side
// assert).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "common/roi_align_math.h"
#include "ops/roi_checks.h"

namespace pydet::roi {

// multi_scale_roi_align's feature maps at most (the CUDA kernels take them as one argument).
inline constexpr int64_t kMaxLevels = 8;

struct Level {
  int64_t height, width;
  double spatial_scale;
};

struct Geometry {
  int64_t batch, channels, rois, pooled_h, pooled_w, sampling_ratio;
  bool aligned;
  std::vector<Level> levels;  // roi_align: one
};

// The message for a row whose level is not in [0, levels).
inline void fail_level(const char* op, int64_t row, int64_t value, int64_t levels) {
  C10_THROW_ERROR(ValueError, c10::str("pydet.", op, ": levels[", row, "] must be in [0, ", levels,
                                       ") (the number of feature maps), got ", value));
}

// Kernels must provide (features [N, C, H_l, W_l] contiguous, or channels_last-contiguous where
// kReadsChannelsLast; rois [K, 5] contiguous, both in compute_dtype; levels [K] int64 contiguous, or
// undefined for roi_align, where every RoI is on level 0):
//   static void forward(const std::vector<Tensor>& features, const Tensor& rois, const Tensor& levels,
//                       Tensor& out /*[K, C, PH, PW]*/, const Geometry&);
//   static void backward(const Tensor& grad /*[K, C, PH, PW]*/, const Tensor& rois, const Tensor& levels,
//                        std::vector<Tensor>& grads /*uninitialised: the kernel writes all of them*/,
//                        const Geometry&);
//   static at::ScalarType compute_dtype(at::ScalarType);
//   static constexpr bool kReadsChannelsLast;
template <class Kernels>
struct Ops {
  static void check_levels(const char* op, const at::Tensor& levels, const at::Tensor& rois, int64_t count,
                           size_t scales) {
    TORCH_CHECK_VALUE(count >= 1 && count <= kMaxLevels, "pydet.", op, ": features must hold 1 to ", kMaxLevels,
                      " feature maps, got ", count);
    TORCH_CHECK_VALUE(static_cast<int64_t>(scales) == count, "pydet.", op,
                      ": spatial_scales must have one scale per feature map (", count, "), got ", scales);
    TORCH_CHECK_TYPE(levels.scalar_type() == at::kLong, "pydet.", op, ": levels must be an int64 tensor, got ",
                     dtype_name(levels.scalar_type()));
    TORCH_CHECK_VALUE(levels.dim() == 1 && levels.sym_size(0) == rois.sym_size(0), "pydet.", op,
                      ": levels must have shape [K] with K = ", rois.sym_size(0), " (one level per RoI), got ",
                      shape_str(levels.sym_sizes()));
    check_same_device(rois, "rois", levels, "levels", op);
  }

  static Geometry geometry(int64_t batch, int64_t channels, const at::Tensor& rois, std::vector<Level> levels,
                           const c10::SymInt& pooled_h, const c10::SymInt& pooled_w, int64_t sampling_ratio,
                           bool aligned) {
    return Geometry{batch,          channels, rois.size(0),     pooled_h.expect_int(), pooled_w.expect_int(),
                    sampling_ratio, aligned,  std::move(levels)};
  }

  // Both operators' forward: `levels` undefined for roi_align.
  static at::Tensor pool(const char* op, at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                         c10::ArrayRef<double> scales, const c10::SymInt& pooled_h, const c10::SymInt& pooled_w,
                         int64_t sampling_ratio, bool aligned) {
    const at::Tensor& first = features[0];
    const at::ScalarType dt = Kernels::compute_dtype(first.scalar_type());
    at::Tensor out =
        at::empty_symint({rois.sym_size(0), first.sym_size(1), pooled_h, pooled_w}, first.options().dtype(dt));
    if (computes(out)) {
      std::vector<at::Tensor> inputs;
      std::vector<Level> geometry_levels;
      for (size_t l = 0; l < features.size(); ++l) {
        const at::Tensor in = features[l].to(dt);
        const bool in_place = Kernels::kReadsChannelsLast && in.is_contiguous(at::MemoryFormat::ChannelsLast);
        inputs.push_back(in_place ? in : in.contiguous());
        geometry_levels.push_back(Level{in.size(2), in.size(3), scales[l]});
      }
      Kernels::forward(inputs, rois.to(dt).contiguous(), levels.defined() ? levels.contiguous() : levels, out,
                       geometry(first.size(0), first.size(1), rois, std::move(geometry_levels), pooled_h, pooled_w,
                                sampling_ratio, aligned));
    }
    return out.to(first.scalar_type());
  }

  // Both operators' backward: the gradient of every feature map, shaped [N, C, sizes[2l], sizes[2l + 1]].
  static std::vector<at::Tensor> unpool(const char* op, const at::Tensor& grad, const at::Tensor& rois,
                                        const at::Tensor& levels, c10::ArrayRef<double> scales,
                                        c10::SymIntArrayRef sizes, const c10::SymInt& batch_size,
                                        const c10::SymInt& channels, const c10::SymInt& pooled_h,
                                        const c10::SymInt& pooled_w, int64_t sampling_ratio, bool aligned) {
    check_floating(grad, op, "grad");
    check_rois(op, rois, grad, "grad");
    check_arguments(op, pooled_h, pooled_w, sampling_ratio);
    check_input_sizes(op, batch_size, channels, sizes);
    const std::vector<c10::SymInt> grad_shape{rois.sym_size(0), channels, pooled_h, pooled_w};
    TORCH_CHECK_VALUE(grad.sym_sizes() == c10::SymIntArrayRef(grad_shape), "pydet.", op,
                      ": grad must have the output's shape ", shape_str(grad_shape), ", got ",
                      shape_str(grad.sym_sizes()));
    const at::ScalarType dt = Kernels::compute_dtype(grad.scalar_type());
    std::vector<at::Tensor> grads;
    std::vector<Level> geometry_levels;
    bool any = false;
    for (size_t l = 0; l < scales.size(); ++l) {
      grads.push_back(
          at::empty_symint({batch_size, channels, sizes[2 * l], sizes[2 * l + 1]}, grad.options().dtype(dt)));
      any = any || computes(grads.back());
      if (!grad.is_meta()) {
        geometry_levels.push_back(Level{sizes[2 * l].expect_int(), sizes[2 * l + 1].expect_int(), scales[l]});
      }
    }
    if (any) {
      Kernels::backward(grad.to(dt).contiguous(), rois.to(dt).contiguous(),
                        levels.defined() ? levels.contiguous() : levels, grads,
                        geometry(batch_size.expect_int(), channels.expect_int(), rois, std::move(geometry_levels),
                                 pooled_h, pooled_w, sampling_ratio, aligned));
    }
    for (at::Tensor& g : grads) g = g.to(grad.scalar_type());
    return grads;
  }

  static at::Tensor forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                            c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio, bool aligned) {
    const char* op = "roi_align";
    check_features(op, "input", input);
    check_rois(op, rois, input, "input");
    check_arguments(op, pooled_height, pooled_width, sampling_ratio);
    return pool(op, input, rois, at::Tensor(), spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
  }

  static at::Tensor backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                             c10::SymInt pooled_height, c10::SymInt pooled_width, c10::SymInt batch_size,
                             c10::SymInt channels, c10::SymInt height, c10::SymInt width, int64_t sampling_ratio,
                             bool aligned) {
    const std::vector<c10::SymInt> sizes{height, width};
    return unpool("_roi_align_backward", grad, rois, at::Tensor(), spatial_scale, sizes, batch_size, channels,
                  pooled_height, pooled_width, sampling_ratio, aligned)[0];
  }

  static at::Tensor multi_scale_forward(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                                        c10::ArrayRef<double> spatial_scales, c10::SymInt pooled_height,
                                        c10::SymInt pooled_width, int64_t sampling_ratio, bool aligned) {
    const char* op = "multi_scale_roi_align";
    TORCH_CHECK_VALUE(!features.empty(), "pydet.", op, ": features must hold 1 to ", kMaxLevels,
                      " feature maps, got 0");
    check_features(op, "features", features);
    check_rois(op, rois, features[0], "features[0]");
    check_levels(op, levels, rois, static_cast<int64_t>(features.size()), spatial_scales.size());
    check_arguments(op, pooled_height, pooled_width, sampling_ratio);
    return pool(op, features, rois, levels, spatial_scales, pooled_height, pooled_width, sampling_ratio, aligned);
  }

  static std::vector<at::Tensor> multi_scale_backward(const at::Tensor& grad, const at::Tensor& rois,
                                                      const at::Tensor& levels, c10::ArrayRef<double> spatial_scales,
                                                      c10::SymInt pooled_height, c10::SymInt pooled_width,
                                                      c10::SymIntArrayRef feature_sizes, c10::SymInt batch_size,
                                                      c10::SymInt channels, int64_t sampling_ratio, bool aligned) {
    const char* op = "_multi_scale_roi_align_backward";
    check_levels(op, levels, rois, static_cast<int64_t>(spatial_scales.size()), spatial_scales.size());
    TORCH_CHECK_VALUE(feature_sizes.size() == 2 * spatial_scales.size(), "pydet.", op,
                      ": feature_sizes must hold (height, width) of each feature map, ", 2 * spatial_scales.size(),
                      " values, got ", feature_sizes.size());
    return unpool(op, grad, rois, levels, spatial_scales, feature_sizes, batch_size, channels, pooled_height,
                  pooled_width, sampling_ratio, aligned);
  }

  static void register_all(torch::Library& m) {
    m.impl("roi_align", &forward);
    m.impl("_roi_align_backward", &backward);
    m.impl("multi_scale_roi_align", &multi_scale_forward);
    m.impl("_multi_scale_roi_align_backward", &multi_scale_backward);
  }
};

}  // namespace pydet::roi
