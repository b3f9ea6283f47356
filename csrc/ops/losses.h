// sigmoid_focal_loss (+ backward): the device-agnostic front end (kernels in cpu/losses.cpp and
// cuda/losses.cu; formulas in common/focal_math.h). It validates arguments, computes float16/bfloat16
// in float32, and hands the kernels contiguous 1-D views of inputs and targets.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/binary_cross_entropy_with_logits.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/result_type.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "common/checks.h"
#include "common/focal_math.h"

namespace pydet::losses {

// Kernels must provide (x, t contiguous 1-D in the compute dtype; outputs contiguous, same length):
//   static void focal(const Tensor& x, const Tensor& t, Tensor& out, const FocalParams<double>&);
//   static Tensor focal_sum(const Tensor& x, const Tensor& t, const FocalParams<double>&);  // 0-d float64
//   static void focal_backward(const Tensor& grad /*[K] or [1] broadcast*/, double scale, const Tensor& x,
//                              const Tensor& t, Tensor& grad_x, Tensor* grad_t, const FocalParams<double>&);
template <class Kernels>
struct Ops {
  struct Inputs {
    at::Tensor x, t;  // contiguous, flat, compute dtype
    at::ScalarType out_dtype;
    FocalParams<double> params;
  };

  static Inputs inputs(const char* op, const at::Tensor& x, const at::Tensor& t, double alpha, double gamma) {
    check_floating(x, op, "inputs");
    check_floating(t, op, "targets");
    check_same_device(x, "inputs", t, "targets", op);
    TORCH_CHECK_VALUE(x.sym_sizes() == t.sym_sizes(), "pydet.", op, ": targets must have the same shape as inputs ",
                      shape_str(x.sym_sizes()), ", got ", shape_str(t.sym_sizes()));
    TORCH_CHECK_VALUE(alpha <= 1.0, "pydet.", op, ": alpha must be in [0, 1] (or negative to disable the ",
                      "class weighting), got ", alpha);
    TORCH_CHECK_VALUE(gamma >= 0.0 && std::isfinite(gamma), "pydet.", op, ": gamma must be finite and >= 0, got ",
                      gamma);
    const at::ScalarType out = at::result_type(x, t);
    const at::ScalarType compute = compute_dtype(out);
    return {x.to(compute).contiguous().view({-1}), t.to(compute).contiguous().view({-1}), out,
            FocalParams<double>{alpha, gamma, alpha >= 0.0}};
  }

  // At gamma = 0 the focal loss is the alpha-weighted binary cross-entropy, which torchvision computes
  // as alpha_t * (BCE * 1) with ATen's binary_cross_entropy_with_logits. ATen's exp/log1p differ by CPU
  // capability (SLEEF's vectors, libm's scalar tails), so no fused kernel matches them bit for bit;
  // calling ATen here does, and keeps torchvision's invariant loss <= BCE exact element by element.
  static at::Tensor weighted_bce(const Inputs& in) {
    at::Tensor loss = at::binary_cross_entropy_with_logits(in.x, in.t, {}, {}, at::Reduction::None);
    if (!in.params.weighted) return loss;
    const double alpha = in.params.alpha;
    return (in.t * alpha + (1 - in.t) * (1 - alpha)) * loss;  // torchvision's alpha_t, in its order
  }

  static at::Tensor forward(const at::Tensor& x, const at::Tensor& t, double alpha, double gamma,
                            c10::string_view reduction) {
    const char* op = "sigmoid_focal_loss";
    const Reduction red = parse_choice(reduction, kReductions, op, "reduction");
    Inputs in = inputs(op, x, t, alpha, gamma);
    if (red == Reduction::kNone && gamma == 0.0) return weighted_bce(in).to(in.out_dtype).view_symint(x.sym_sizes());
    if (red == Reduction::kNone) {
      at::Tensor out = at::empty_symint({in.x.sym_numel()}, in.x.options());
      if (computes(out)) Kernels::focal(in.x, in.t, out, in.params);
      return out.to(in.out_dtype).view_symint(x.sym_sizes());
    }
    // The mean of no elements is 0 (torchvision's IoU losses' convention; its focal loss gives NaN).
    if (!computes(in.x)) return at::zeros({}, in.x.options().dtype(in.out_dtype));
    at::Tensor total = Kernels::focal_sum(in.x, in.t, in.params);
    if (red == Reduction::kMean) total.div_(double(in.x.numel()));
    return total.to(in.out_dtype);
  }

  // (grad_inputs, grad_targets); grad_targets is computed only when asked, else an empty [0] tensor.
  static std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& t,
                                                     double alpha, double gamma, c10::string_view reduction,
                                                     bool targets_grad) {
    const char* op = "_sigmoid_focal_loss_backward";
    const Reduction red = parse_choice(reduction, kReductions, op, "reduction");
    Inputs in = inputs(op, x, t, alpha, gamma);
    const c10::SymInt n = in.x.sym_numel();
    const bool reduced = red != Reduction::kNone;
    TORCH_CHECK_VALUE(reduced ? grad.sym_numel() == 1 : grad.sym_sizes() == x.sym_sizes(), "pydet.", op,
                      ": grad must have shape ", reduced ? "[]" : shape_str(x.sym_sizes()), ", got ",
                      shape_str(grad.sym_sizes()));
    const at::Tensor g = grad.to(in.x.scalar_type()).contiguous().view({-1});
    at::Tensor grad_x = at::empty_symint({n}, in.x.options());
    at::Tensor grad_t = at::empty_symint({targets_grad ? n : c10::SymInt(0)}, in.x.options());
    if (computes(grad_x)) {
      const double scale = red == Reduction::kMean ? 1.0 / double(grad_x.numel()) : 1.0;
      Kernels::focal_backward(g, scale, in.x, in.t, grad_x, targets_grad ? &grad_t : nullptr, in.params);
    }
    return {grad_x.to(x.scalar_type()).view_symint(x.sym_sizes()),
            targets_grad ? grad_t.to(t.scalar_type()).view_symint(t.sym_sizes()) : grad_t.to(t.scalar_type())};
  }

  static void register_all(torch::Library& m) {
    m.impl("sigmoid_focal_loss", &forward);
    m.impl("_sigmoid_focal_loss_backward", &backward);
  }
};

// Runs f.template operator()<G>() with the Gamma matching `gamma`, so kernels are specialised on it.
template <class F>
void dispatch_gamma(double gamma, const F& f) {
  switch (classify_gamma(gamma)) {
    case Gamma::kZero:
      return f.template operator()<Gamma::kZero>();
    case Gamma::kOne:
      return f.template operator()<Gamma::kOne>();
    case Gamma::kTwo:
      return f.template operator()<Gamma::kTwo>();
    default:
      return f.template operator()<Gamma::kAny>();
  }
}

}  // namespace pydet::losses
