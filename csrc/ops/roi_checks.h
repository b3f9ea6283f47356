// The arguments every RoI pooling operator shares (roi_align's and roi_pool's families), checked
// once: the rois, the output size and sampling ratio, and the feature maps.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "common/checks.h"
#include "common/roi_align_math.h"

namespace pydet::roi {

// The message for a row whose batch index is not an integer in [0, batch).
inline void fail_batch_index(const char* op, int64_t row, double value, int64_t batch) {
  C10_THROW_ERROR(ValueError, c10::str("pydet.", op, ": rois[", row, ", 0] must be an integer batch index in [0, ",
                                       batch, ") (the input's batch size), got ", value));
}

// rois: [K, 5] (batch index, x1, y1, x2, y2), or with rotated=true [K, 6] (batch index, cx, cy, w, h,
// angle in degrees).
inline void check_rois(const char* op, const at::Tensor& rois, const at::Tensor& like, const char* like_name,
                       bool rotated = false) {
  TORCH_CHECK_VALUE(
      rois.dim() == 2 && rois.sym_size(1) == (rotated ? 6 : 5), "pydet.", op, ": rois must have shape ",
      rotated ? "[K, 6] (batch index, cx, cy, w, h, angle in degrees)" : "[K, 5] (batch index, x1, y1, x2, y2)",
      ", got ", shape_str(rois.sym_sizes()));
  TORCH_CHECK_TYPE(rois.scalar_type() == like.scalar_type(), "pydet.", op, ": rois must have ", like_name, "'s dtype (",
                   dtype_name(like.scalar_type()), "), got ", dtype_name(rois.scalar_type()));
  check_same_device(like, like_name, rois, "rois", op);
}

inline void check_arguments(const char* op, const c10::SymInt& pooled_h, const c10::SymInt& pooled_w,
                            int64_t sampling_ratio) {
  TORCH_CHECK_VALUE(pooled_h > 0 && pooled_w > 0, "pydet.", op, ": output_size must be positive, got (", pooled_h, ", ",
                    pooled_w, ")");
  TORCH_CHECK_VALUE(sampling_ratio <= kMaxGrid, "pydet.", op, ": sampling_ratio must be at most ", kMaxGrid,
                    " (<= 0: adaptive), got ", sampling_ratio);
}

// features[l] must be [N, C, H_l, W_l] of features[0]'s N, C, dtype and device.
inline void check_features(const char* op, const char* name, at::TensorList features) {
  for (size_t l = 0; l < features.size(); ++l) {
    const at::Tensor& f = features[l];
    const std::string arg = features.size() == 1 ? std::string(name) : c10::str(name, "[", l, "]");
    check_floating(f, op, arg.c_str());
    TORCH_CHECK_VALUE(f.dim() == 4, "pydet.", op, ": ", arg, " must have shape [N, C, H, W], got ",
                      shape_str(f.sym_sizes()));
    if (l == 0) continue;
    TORCH_CHECK_VALUE(f.sym_size(0) == features[0].sym_size(0) && f.sym_size(1) == features[0].sym_size(1), "pydet.",
                      op, ": ", arg, " must have the batch size and channels of ", name, "[0] (",
                      features[0].sym_size(0), ", ", features[0].sym_size(1), "), got ", shape_str(f.sym_sizes()));
    TORCH_CHECK_TYPE(f.scalar_type() == features[0].scalar_type(), "pydet.", op, ": ", arg, " must have ", name,
                     "[0]'s dtype (", dtype_name(features[0].scalar_type()), "), got ", dtype_name(f.scalar_type()));
    check_same_device(features[0], c10::str(name, "[0]").c_str(), f, arg.c_str(), op);
  }
}

// A backward's description of the input it returns the gradient of: every size >= 0.
inline void check_input_sizes(const char* op, const c10::SymInt& batch_size, const c10::SymInt& channels,
                              c10::SymIntArrayRef sizes) {
  bool valid = batch_size >= 0 && channels >= 0;
  for (const c10::SymInt& s : sizes) valid = valid && s >= 0;
  TORCH_CHECK_VALUE(valid, "pydet.", op, ": the input's sizes must be >= 0, got batch_size ", batch_size, ", channels ",
                    channels, ", feature sizes ", shape_str(sizes));
}

}  // namespace pydet::roi
