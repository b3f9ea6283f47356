// box_encode / box_decode: the device-agnostic front end (kernels in cpu/coders.cpp and
// cuda/coders.cu; formulas in common/coder_math.h). It validates arguments, promotes float16/bfloat16
// to float32, and brings every tensor to the canonical 3-D view the kernels index:
//   reference [Br, N, 4]   (Br = 1 when shared by every image: a stride-0 expand, never a copy)
//   targets   [B, N, 4], or [B, M, 4] gathered through target_index [B, N]
//   deltas    [B, N, 4 C]  (C classes per box: class-specific regression), decoded as they are or
//             gathered through index [Bi, K] (Bi = 1 or B)
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "common/checks.h"
#include "common/coder_math.h"

namespace pydet::coders {

inline CoderParams<double> make_params(const char* op, c10::ArrayRef<double> weights, c10::ArrayRef<double> means,
                                       double wh_min, double wh_max, double center_clamp,
                                       std::optional<c10::ArrayRef<double>> max_shape) {
  TORCH_CHECK_VALUE(weights.size() == 4, "pydet.", op, ": weights must hold 4 values, got ", weights.size());
  TORCH_CHECK_VALUE(means.size() == 4, "pydet.", op, ": means must hold 4 values, got ", means.size());
  for (double w : weights) {
    TORCH_CHECK_VALUE(std::isfinite(w) && w != 0.0, "pydet.", op, ": weights must be finite and non-zero");
  }
  TORCH_CHECK_VALUE(!(wh_min > wh_max), "pydet.", op, ": wh_clip_min (", wh_min, ") must be <= wh_clip_max (", wh_max,
                    ")");
  TORCH_CHECK_VALUE(center_clamp >= 0.0, "pydet.", op, ": center_clamp must be >= 0, got ", center_clamp);
  CoderParams<double> p{};
  for (int k = 0; k < 4; ++k) {
    p.weights[k] = weights[k];
    p.means[k] = means[k];
  }
  p.wh_min = wh_min;
  p.wh_max = wh_max;
  p.center_clamp = center_clamp;
  p.clip_lo = -std::numeric_limits<double>::infinity();
  p.max_h = p.max_w = std::numeric_limits<double>::infinity();
  if (max_shape.has_value()) {
    TORCH_CHECK_VALUE(max_shape->size() == 2 && (*max_shape)[0] >= 0 && (*max_shape)[1] >= 0, "pydet.", op,
                      ": max_shape must be (height, width) with both >= 0, got ", max_shape->size(), " values");
    p.clip_lo = 0.0;
    p.max_h = (*max_shape)[0];
    p.max_w = (*max_shape)[1];
  }
  return p;
}

// max_shape clips decoded corners; the SSD coding decodes (cx, cy, w, h), which has none.
inline void check_clip_coding(const char* op, Coding c, bool clip) {
  TORCH_CHECK_VALUE(!(clip && c == Coding::kSsd), "pydet.", op,
                    ": max_shape clips xyxy boxes (the 'torchvision' and 'mmdet' codings); the 'ssd' coding "
                    "decodes (cx, cy, w, h)");
}

// A row index (int64) into `data` ([N, ...] or [B, N, ...]): [K] or [B, K] respectively (`shapes` spells
// this out for the error message). Returns it as [Bi, K] (Bi = 1 or B).
inline at::Tensor row_index_view(const char* op, const char* name, const at::Tensor& index, const at::Tensor& data,
                                 const char* data_name, const char* shapes) {
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, "pydet.", op, ": ", name, " must be an int64 tensor, got ",
                   dtype_name(index.scalar_type()));
  check_same_device(data, data_name, index, name, op);
  TORCH_CHECK_VALUE(index.dim() == data.dim() - 1 && (index.dim() == 1 || index.sym_size(0) == data.sym_size(0)),
                    "pydet.", op, ": ", name, " must have shape ", shapes, ", got ", shape_str(index.sym_sizes()),
                    " with ", data_name, " ", shape_str(data.sym_sizes()));
  return index.dim() == 1 ? index.unsqueeze(0) : index;
}

// Kernels must provide (inputs in the compute dtype, any strides; outputs contiguous):
//   static void encode(const Tensor& reference, const Tensor& targets, const Tensor& target_index /*or undefined*/,
//                      Tensor& out, Coding, const CoderParams<double>&);
//   static void decode(const Tensor& reference, const Tensor& deltas, const Tensor& index /*[Bi, K] or undefined*/,
//                      Tensor& out, Coding, const CoderParams<double>&);
//   static void decode_backward(const Tensor& grad, const Tensor& reference, const Tensor& deltas, Tensor& out,
//                               Coding, const CoderParams<double>&);
template <class Kernels>
struct Ops {
  // reference [N, 4] or [B, N, 4] -> [B, N, 4] (a view; B = 1 broadcasts with stride 0).
  static at::Tensor reference_view(const at::Tensor& reference, const c10::SymInt& batch, at::ScalarType dtype) {
    const at::Tensor r = reference.to(dtype);
    return r.dim() == 2 ? r.unsqueeze(0).expand_symint({batch, r.sym_size(0), 4}) : r;
  }

  static void check_reference(const char* op, const at::Tensor& reference, const c10::SymInt& batch,
                              const c10::SymInt& n, int64_t data_rank, const char* data_name) {
    TORCH_CHECK_VALUE(reference.sym_size(-2) == n && (reference.dim() == 2 || reference.sym_size(0) == batch), "pydet.",
                      op, ": reference must have shape [N, 4] or [B, N, 4] matching ", data_name, " (N = ", n,
                      data_rank == 3 ? c10::str(", B = ", batch) : std::string(), "), got ",
                      shape_str(reference.sym_sizes()));
    TORCH_CHECK_VALUE(reference.dim() == 2 || data_rank == 3, "pydet.", op, ": a batched reference [B, N, 4] needs ",
                      "batched ", data_name, " [B, ...], got ", data_name, " of rank 2");
  }

  static at::Tensor encode(const at::Tensor& reference, const at::Tensor& targets, c10::string_view coding,
                           c10::ArrayRef<double> weights, c10::ArrayRef<double> means,
                           const std::optional<at::Tensor>& target_index) {
    const char* op = "box_encode";
    const Coding c = parse_choice(coding, kCodings, op, "coding");
    const CoderParams<double> p = make_params(op, weights, means, -INFINITY, INFINITY, INFINITY, std::nullopt);
    check_boxes(reference, op, "reference", "[N, 4] or [B, N, 4]", 2, 3);
    check_boxes(targets, op, "targets", "[N, 4] or [B, N, 4]", 2, 3);
    check_same_device(reference, "reference", targets, "targets", op);
    TORCH_CHECK_TYPE(reference.scalar_type() == targets.scalar_type(), "pydet.", op, ": reference and targets must ",
                     "have the same dtype, got ", dtype_name(reference.scalar_type()), " and ",
                     dtype_name(targets.scalar_type()));
    const bool gather = target_index.has_value();
    const c10::SymInt batch = targets.dim() == 3 ? targets.sym_size(0) : c10::SymInt(1);
    at::Tensor idx2;
    if (gather) {
      idx2 = row_index_view(op, "target_index", *target_index, targets, "targets",
                            "[N] for targets [M, 4] or [B, N] for targets [B, M, 4]");
    }
    const c10::SymInt n = gather ? idx2.sym_size(1) : targets.sym_size(-2);
    check_reference(op, reference, batch, n, targets.dim(), gather ? "target_index" : "targets");
    const at::ScalarType dt = compute_dtype(targets.scalar_type());
    const at::Tensor ref3 = reference_view(reference, batch, dt);
    const at::Tensor tgt = targets.to(dt);
    const at::Tensor tgt3 = tgt.dim() == 2 ? tgt.unsqueeze(0) : tgt;
    at::Tensor out = at::empty_symint({batch, n, 4}, tgt.options());
    if (computes(out)) Kernels::encode(ref3, tgt3, idx2, out, c, p);
    out = out.to(targets.scalar_type());
    return targets.dim() == 2 ? out.squeeze(0) : out;
  }

  struct DecodeView {
    at::Tensor reference, deltas;        // [B, N, 4], [B, N, 4C] in the compute dtype
    at::Tensor index;                    // [Bi, K], or undefined: every row
    std::vector<c10::SymInt> out_shape;  // deltas' shape, with K rows for N when gathering
  };

  static DecodeView decode_view(const char* op, const at::Tensor& reference, const at::Tensor& deltas,
                                const std::optional<at::Tensor>& index) {
    check_boxes(reference, op, "reference", "[N, 4] or [B, N, 4]", 2, 3);
    check_floating(deltas, op, "deltas");
    check_same_device(reference, "reference", deltas, "deltas", op);
    TORCH_CHECK_VALUE(
        (deltas.dim() == 2 || deltas.dim() == 3) && deltas.sym_size(-1) > 0 && deltas.sym_size(-1) % 4 == 0, "pydet.",
        op, ": deltas must have shape [N, 4 * C] or [B, N, 4 * C] (C >= 1), got ", shape_str(deltas.sym_sizes()));
    const c10::SymInt batch = deltas.dim() == 3 ? deltas.sym_size(0) : c10::SymInt(1);
    check_reference(op, reference, batch, deltas.sym_size(-2), deltas.dim(), "deltas");
    const at::ScalarType dt = compute_dtype(deltas.scalar_type());
    const at::Tensor d = deltas.to(dt);
    DecodeView v{reference_view(reference, batch, dt), d.dim() == 2 ? d.unsqueeze(0) : d, at::Tensor(),
                 deltas.sym_sizes().vec()};
    if (index.has_value()) {
      v.index = row_index_view(op, "index", *index, deltas, "deltas",
                               "[K] for deltas [N, 4 * C] or [B, K] for deltas [B, N, 4 * C]");
      v.out_shape[v.out_shape.size() - 2] = v.index.sym_size(1);
    }
    return v;
  }

  static at::Tensor decode(const at::Tensor& reference, const at::Tensor& deltas, c10::string_view coding,
                           c10::ArrayRef<double> weights, c10::ArrayRef<double> means, double wh_clip_min,
                           double wh_clip_max, double center_clamp, std::optional<c10::ArrayRef<double>> max_shape,
                           const std::optional<at::Tensor>& index) {
    const char* op = "box_decode";
    const Coding c = parse_choice(coding, kCodings, op, "coding");
    check_clip_coding(op, c, max_shape.has_value());
    const CoderParams<double> p = make_params(op, weights, means, wh_clip_min, wh_clip_max, center_clamp, max_shape);
    const DecodeView v = decode_view(op, reference, deltas, index);
    const c10::SymInt rows = v.index.defined() ? v.index.sym_size(1) : v.deltas.sym_size(1);
    at::Tensor out = at::empty_symint({v.deltas.sym_size(0), rows, v.deltas.sym_size(2)}, v.deltas.options());
    if (computes(out)) Kernels::decode(v.reference, v.deltas, v.index, out, c, p);
    return out.to(deltas.scalar_type()).view_symint(v.out_shape);
  }

  // With an index, the gradient of each gathered row is computed on the gathered rows and summed into
  // the rows of deltas they came from (an anchor may be gathered several times).
  static at::Tensor decode_backward(const at::Tensor& grad, const at::Tensor& reference, const at::Tensor& deltas,
                                    c10::string_view coding, c10::ArrayRef<double> weights, c10::ArrayRef<double> means,
                                    double wh_clip_min, double wh_clip_max, double center_clamp,
                                    std::optional<c10::ArrayRef<double>> max_shape,
                                    const std::optional<at::Tensor>& index) {
    const char* op = "box_decode";
    const Coding c = parse_choice(coding, kCodings, op, "coding");
    check_clip_coding(op, c, max_shape.has_value());
    const CoderParams<double> p = make_params(op, weights, means, wh_clip_min, wh_clip_max, center_clamp, max_shape);
    const DecodeView v = decode_view(op, reference, deltas, index);
    if (!v.index.defined()) {
      const at::Tensor g = grad.to(v.deltas.scalar_type()).reshape_symint(v.deltas.sym_sizes());
      at::Tensor out = at::empty_symint(v.deltas.sym_sizes(), v.deltas.options());
      if (computes(out)) Kernels::decode_backward(g, v.reference, v.deltas, out, c, p);
      return out.to(deltas.scalar_type()).view_symint(deltas.sym_sizes());
    }
    const c10::SymInt batch = v.deltas.sym_size(0), rows = v.index.sym_size(1), width = v.deltas.sym_size(2);
    const at::Tensor idx = v.index.expand_symint({batch, rows}).unsqueeze(-1);
    const at::Tensor source = idx.clamp_min(0);  // padding rows (index < 0) get a zero gradient below
    const at::Tensor ref_rows = v.reference.gather(1, source.expand_symint({batch, rows, 4}));
    const at::Tensor delta_rows = v.deltas.gather(1, source.expand_symint({batch, rows, width}));
    const at::Tensor g = grad.to(v.deltas.scalar_type()).reshape_symint({batch, rows, width});
    at::Tensor per_row = at::empty_symint({batch, rows, width}, v.deltas.options());
    if (computes(per_row)) Kernels::decode_backward(g, ref_rows, delta_rows, per_row, c, p);
    at::Tensor out = at::zeros_like(v.deltas, at::MemoryFormat::Contiguous);
    out.scatter_add_(1, source.expand_symint({batch, rows, width}), per_row.masked_fill(idx.lt(0), 0));
    return out.to(deltas.scalar_type()).view_symint(deltas.sym_sizes());
  }

  static void register_all(torch::Library& m) {
    m.impl("box_encode", &encode);
    m.impl("box_decode", &decode);
    m.impl("_box_decode_backward", &decode_backward);
  }
};

}  // namespace pydet::coders
