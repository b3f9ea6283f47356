// depthwise_conv2d: the device-agnostic front end (kernels in cpu/depthwise_conv.cpp and
// cuda/depthwise_conv.cu; activations in common/activation.h). It validates arguments, computes the
// output geometry and brings the tensors to the layout the kernels index: input NCHW contiguous,
// weight [C, KH, KW] contiguous, bias [C] (zeros when absent).
//
// Semantics: out[n, c] = act(bias[c] + sum_{kh, kw} weight[c, 0, kh, kw] *
//                              input[n, c, oh sh - ph + kh dh, ow sw - pw + kw dw])
// with zero padding: F.conv2d(input, weight, bias, stride, padding, dilation, groups=C) followed by
// the activation. The backward op returns the gradients of all three tensors (bias's also when the
// forward had none; callers drop it).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common/activation.h"
#include "common/checks.h"

namespace pydet::depthwise {

struct Geometry {
  int64_t n, c, h, w;  // input
  int64_t kh, kw;      // kernel
  int64_t oh, ow;      // output
  int64_t sh, sw, ph, pw, dh, dw;
};

// One output dimension (sizes may be symbolic under torch.compile).
inline c10::SymInt plane_out(const c10::SymInt& in, const c10::SymInt& k, int64_t s, int64_t p, int64_t d) {
  const c10::SymInt span = in + 2 * p - d * (k - 1) - 1;  // < 0: the kernel does not fit
  return span < 0 ? c10::SymInt(0) : span / s + 1;
}

// Kernels must provide (tensors in the compute dtype, contiguous):
//   static void forward(const Tensor& input, const Tensor& weight, const Tensor& bias, Tensor& out,
//                       const Geometry&, Activation);
//   static void backward(const Tensor& grad, const Tensor& input, const Tensor& weight, const Tensor& bias,
//                        Tensor& grad_input, Tensor& grad_weight, Tensor& grad_bias, const Geometry&, Activation);
//   static at::ScalarType compute_dtype(at::ScalarType): float16/bfloat16 stay (CUDA) or become float32 (CPU).
template <class Kernels>
struct Ops {
  struct Prepared {
    at::Tensor input, weight, bias;
    std::vector<c10::SymInt> out_shape;  // [N, C, OH, OW]
    Geometry g;                          // out_shape and the rest, as integers (not filled on the meta device)
    Activation act;
  };

  static Prepared prepare(const char* op, const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, c10::IntArrayRef stride, c10::IntArrayRef padding,
                          c10::IntArrayRef dilation, c10::string_view activation) {
    check_floating(input, op, "input");
    TORCH_CHECK_VALUE(input.dim() == 4, "pydet.", op, ": input must have shape [N, C, H, W], got ",
                      shape_str(input.sym_sizes()));
    const c10::SymInt c = input.sym_size(1);
    TORCH_CHECK_TYPE(weight.scalar_type() == input.scalar_type(), "pydet.", op, ": weight must have input's dtype (",
                     dtype_name(input.scalar_type()), "), got ", dtype_name(weight.scalar_type()));
    check_same_device(input, "input", weight, "weight", op);
    TORCH_CHECK_VALUE(weight.dim() == 4 && weight.sym_size(0) == c && weight.sym_size(1) == 1 &&
                          weight.sym_size(2) > 0 && weight.sym_size(3) > 0,
                      "pydet.", op, ": weight must have shape [C, 1, KH, KW] with C = ", c,
                      " (input channels; one filter per channel), got ", shape_str(weight.sym_sizes()));
    if (bias.has_value()) {
      TORCH_CHECK_TYPE(bias->scalar_type() == input.scalar_type(), "pydet.", op, ": bias must have input's dtype (",
                       dtype_name(input.scalar_type()), "), got ", dtype_name(bias->scalar_type()));
      check_same_device(input, "input", *bias, "bias", op);
      TORCH_CHECK_VALUE(bias->dim() == 1 && bias->sym_size(0) == c, "pydet.", op,
                        ": bias must have shape [C] with C = ", c, ", got ", shape_str(bias->sym_sizes()));
    }
    TORCH_CHECK_VALUE(stride.size() == 2 && stride[0] >= 1 && stride[1] >= 1, "pydet.", op,
                      ": stride must be 2 integers >= 1, got ", stride);
    TORCH_CHECK_VALUE(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0, "pydet.", op,
                      ": padding must be 2 integers >= 0, got ", padding);
    TORCH_CHECK_VALUE(dilation.size() == 2 && dilation[0] >= 1 && dilation[1] >= 1, "pydet.", op,
                      ": dilation must be 2 integers >= 1, got ", dilation);
    const c10::SymInt kh = weight.sym_size(2), kw = weight.sym_size(3);
    const c10::SymInt oh = plane_out(input.sym_size(2), kh, stride[0], padding[0], dilation[0]);
    const c10::SymInt ow = plane_out(input.sym_size(3), kw, stride[1], padding[1], dilation[1]);
    TORCH_CHECK_VALUE(oh > 0 && ow > 0, "pydet.", op, ": the output would be empty: input ",
                      shape_str(input.sym_sizes()), " with kernel ", kh, "x", kw, ", padding ", padding,
                      " and dilation ", dilation, " gives an output of ", oh, "x", ow);
    const at::ScalarType dt = Kernels::compute_dtype(input.scalar_type());
    Prepared p;
    p.input = input.to(dt).contiguous();
    p.weight = weight.to(dt).contiguous().view_symint({c, kh, kw});
    p.bias = bias.has_value() ? bias->to(dt).contiguous() : at::zeros_symint({c}, p.input.options());
    p.out_shape = {input.sym_size(0), c, oh, ow};
    p.act = parse_choice(activation, kActivations, op, "activation");
    if (!input.is_meta()) {
      p.g = Geometry{input.size(0),  c.expect_int(),  input.size(2),   input.size(3), weight.size(2),
                     weight.size(3), oh.expect_int(), ow.expect_int(), stride[0],     stride[1],
                     padding[0],     padding[1],      dilation[0],     dilation[1]};
    }
    return p;
  }

  static at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                            c10::string_view activation) {
    const Prepared p = prepare("depthwise_conv2d", input, weight, bias, stride, padding, dilation, activation);
    at::Tensor out = at::empty_symint(p.out_shape, p.input.options());
    if (computes(out)) Kernels::forward(p.input, p.weight, p.bias, out, p.g, p.act);
    return out.to(input.scalar_type());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
      const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
      c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, c10::string_view activation) {
    const char* op = "depthwise_conv2d_backward";
    const Prepared p = prepare(op, input, weight, bias, stride, padding, dilation, activation);
    TORCH_CHECK_VALUE(grad.sym_sizes() == c10::SymIntArrayRef(p.out_shape), "pydet.", op,
                      ": grad must have the output's shape ", shape_str(p.out_shape), ", got ",
                      shape_str(grad.sym_sizes()));
    const at::Tensor g = grad.to(p.input.scalar_type()).contiguous();
    at::Tensor gi = at::empty_like(p.input), gw = at::empty_like(p.weight), gb = at::empty_like(p.bias);
    if (!p.input.is_meta()) Kernels::backward(g, p.input, p.weight, p.bias, gi, gw, gb, p.g, p.act);
    return {gi.to(input.scalar_type()), gw.to(weight.scalar_type()).view_symint(weight.sym_sizes()),
            gb.to(input.scalar_type())};
  }

  static void register_all(torch::Library& m) {
    m.impl("depthwise_conv2d", &forward);
    m.impl("_depthwise_conv2d_backward", &backward);
  }
};

}  // namespace pydet::depthwise
