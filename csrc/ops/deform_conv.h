// deform_conv2d (torchvision's schema: v1, and v2 with use_mask) and its backward: the
// device-independent front end. It validates arguments, brings tensors to the layout the kernels
// index (input channels_last, offset and mask contiguous) and runs the convolution as torchvision
// does, sampled columns times the weight, but over tiles of output pixels: the kernels
// (cpu/deform_conv.cpp, cuda/deform_conv.cu; sampling in common/deform_conv_math.h) fill one tile's
// columns, a GEMM (ATen's mm, on either device) multiplies them, and the next tile reuses the buffer.
// torchvision materialises the columns of up to 32 images at once (hundreds of MB at detection
// sizes); a tile is a few MB and stays in cache between the sampling and the GEMM.
//
// Columns are laid out [pixel][weight group][tap][channel of the group], so a tap's channels are
// contiguous in both the channels_last input and the columns (the kernels sample every channel of an
// offset group with one set of taps), and the weight is permuted to [out channel][tap][channel] to
// match. The backward computes the columns' gradient (weight^T x grad) tile by tile, from which the
// kernels derive the input's, offsets' and mask's gradients, and accumulates weight^T's gradient
// (grad x columns^T) over tiles.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "common/checks.h"
#include "common/deform_conv_math.h"

namespace pydet::deform {

// Kernels must provide (input [N, C, H, W] channels_last, offset [N, 2 OG KH KW, OH, OW] and mask
// [N, OG KH KW, OH, OW] contiguous, all in compute_dtype; a tile is output pixels [first, first + T)
// counted over all images, T = columns.size(0)):
//   static int64_t column_bytes();  // the tile's column buffer, about
//   static void columns(const Tensor& input, const Tensor& offset, const Tensor& mask, int64_t first,
//                       Tensor& columns /*[T, C KH KW]*/, const Geometry&);
//   static void columns_backward(const Tensor& input, const Tensor& offset, const Tensor& mask, int64_t first,
//                                const Tensor& grad_columns /*[T, C KH KW]*/,
//                                Tensor& grad_input /*channels_last, accumulated*/,
//                                Tensor& grad_offset, Tensor& grad_mask /*the tile's pixels written*/,
//                                const Geometry&);
template <class Kernels>
struct Ops {
  struct Prepared {
    at::Tensor input, weight, offset, mask, bias;  // weight: [G, OC / G, KH KW C / G]
    std::vector<c10::SymInt> out_shape;
    Geometry g;  // not filled on the meta device
  };

  static Prepared prepare(const char* op, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                          const at::Tensor& mask, const at::Tensor& bias, int64_t stride_h, int64_t stride_w,
                          int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t groups,
                          int64_t offset_groups, bool use_mask) {
    check_floating(input, op, "input");
    TORCH_CHECK_VALUE(input.dim() == 4, "pydet.", op, ": input must have shape [N, C, H, W], got ",
                      shape_str(input.sym_sizes()));
    const auto same_kind = [&](const at::Tensor& t, const char* name) {
      TORCH_CHECK_TYPE(t.scalar_type() == input.scalar_type(), "pydet.", op, ": ", name, " must have input's dtype (",
                       dtype_name(input.scalar_type()), "), got ", dtype_name(t.scalar_type()));
      check_same_device(input, "input", t, name, op);
    };
    same_kind(weight, "weight");
    same_kind(offset, "offset");
    same_kind(bias, "bias");
    if (use_mask) same_kind(mask, "mask");
    TORCH_CHECK_VALUE(stride_h >= 1 && stride_w >= 1, "pydet.", op, ": stride must be >= 1, got (", stride_h, ", ",
                      stride_w, ")");
    TORCH_CHECK_VALUE(pad_h >= 0 && pad_w >= 0, "pydet.", op, ": padding must be >= 0, got (", pad_h, ", ", pad_w, ")");
    TORCH_CHECK_VALUE(dilation_h >= 1 && dilation_w >= 1, "pydet.", op, ": dilation must be >= 1, got (", dilation_h,
                      ", ", dilation_w, ")");
    const c10::SymInt n = input.sym_size(0), c = input.sym_size(1);
    TORCH_CHECK_VALUE(groups >= 1 && offset_groups >= 1, "pydet.", op, ": groups and offset_groups must be >= 1, got ",
                      groups, " and ", offset_groups);
    TORCH_CHECK_VALUE(weight.dim() == 4 && weight.sym_size(1) * groups == c && weight.sym_size(0) % groups == 0 &&
                          weight.sym_size(2) > 0 && weight.sym_size(3) > 0,
                      "pydet.", op, ": weight must have shape [OC, C / groups, KH, KW] with C = ", c,
                      " (input channels), groups = ", groups, " and OC divisible by groups, got ",
                      shape_str(weight.sym_sizes()));
    TORCH_CHECK_VALUE(c % offset_groups == 0, "pydet.", op, ": the input's channels (", c,
                      ") must be divisible by offset_groups (", offset_groups, ")");
    const c10::SymInt kh = weight.sym_size(2), kw = weight.sym_size(3);
    const c10::SymInt oh = (input.sym_size(2) + 2 * pad_h - dilation_h * (kh - 1) - 1) / stride_h + 1;
    const c10::SymInt ow = (input.sym_size(3) + 2 * pad_w - dilation_w * (kw - 1) - 1) / stride_w + 1;
    TORCH_CHECK_VALUE(input.sym_size(2) + 2 * pad_h - dilation_h * (kh - 1) > 0 &&
                          input.sym_size(3) + 2 * pad_w - dilation_w * (kw - 1) > 0,
                      "pydet.", op, ": the output would be empty: input ", shape_str(input.sym_sizes()),
                      " with kernel ", kh, "x", kw, ", padding (", pad_h, ", ", pad_w, ") and dilation (", dilation_h,
                      ", ", dilation_w, ")");
    const c10::SymInt taps = kh * kw;
    const auto check_map = [&](const at::Tensor& t, const char* name, const c10::SymInt& per_group, const char* what) {
      TORCH_CHECK_VALUE(t.dim() == 4 && t.sym_size(0) == n && t.sym_size(1) == per_group * offset_groups &&
                            t.sym_size(2) == oh && t.sym_size(3) == ow,
                        "pydet.", op, ": ", name, " must have shape [N, ", what, " x offset_groups, OH, OW] = [", n,
                        ", ", per_group * offset_groups, ", ", oh, ", ", ow, "], got ", shape_str(t.sym_sizes()));
    };
    check_map(offset, "offset", 2 * taps, "2 KH KW");
    if (use_mask) check_map(mask, "mask", taps, "KH KW");
    TORCH_CHECK_VALUE(bias.dim() == 1 && bias.sym_size(0) == weight.sym_size(0), "pydet.", op,
                      ": bias must have shape [OC] = [", weight.sym_size(0), "], got ", shape_str(bias.sym_sizes()));

    const at::ScalarType dt = compute_dtype(input.scalar_type());
    Prepared p;
    p.input = input.to(dt).contiguous(at::MemoryFormat::ChannelsLast);
    p.weight = weight.to(dt)
                   .permute({0, 2, 3, 1})
                   .contiguous()
                   .view_symint({groups, weight.sym_size(0) / groups, taps * weight.sym_size(1)});
    p.offset = offset.to(dt).contiguous();
    p.mask = use_mask ? mask.to(dt).contiguous() : at::Tensor();
    p.bias = bias.to(dt);
    p.out_shape = {n, weight.sym_size(0), oh, ow};
    if (!input.is_meta()) {
      p.g = Geometry{input.size(0),  input.size(1),   input.size(2),   input.size(3), weight.size(0), weight.size(2),
                     weight.size(3), oh.expect_int(), ow.expect_int(), stride_h,      stride_w,       pad_h,
                     pad_w,          dilation_h,      dilation_w,      groups,        offset_groups,  use_mask};
    }
    return p;
  }

  // Output pixels per tile: the column buffer's budget, at least 16 pixels, at most all.
  static int64_t tile_pixels(const Prepared& p) {
    const int64_t row = p.g.column_width() * p.input.element_size();
    return std::clamp<int64_t>(Kernels::column_bytes() / std::max<int64_t>(row, 1), 16,
                               std::max<int64_t>(p.g.pixels(), 1));
  }

  // f(image, first pixel in the image, first pixel in the tile, count) for each image's share of the
  // tile [first, first + count).
  template <class F>
  static void for_each_image(const Geometry& g, int64_t first, int64_t count, const F& f) {
    const int64_t plane = g.plane();
    for (int64_t q = first; q < first + count;) {
      const int64_t b = q / plane, in_image = q - b * plane;
      const int64_t n = std::min(plane - in_image, first + count - q);
      f(b, in_image, q - first, n);
      q += n;
    }
  }

  // The columns of weight group k: [T, KH KW C / G].
  static at::Tensor group_columns(const at::Tensor& columns, const Geometry& g, int64_t k) {
    const int64_t width = g.taps() * g.group_channels();
    return columns.narrow(1, k * width, width);
  }

  static at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                            const at::Tensor& mask, const at::Tensor& bias, int64_t stride_h, int64_t stride_w,
                            int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t groups,
                            int64_t offset_groups, bool use_mask) {
    const Prepared p = prepare("deform_conv2d", input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                               dilation_h, dilation_w, groups, offset_groups, use_mask);
    at::Tensor out = at::empty_symint(p.out_shape, p.input.options());
    if (!computes(out)) return out.to(input.scalar_type());
    const Geometry& g = p.g;
    const int64_t tile = tile_pixels(p), out_per_group = g.out_channels / g.groups, plane = g.plane();
    at::Tensor columns = at::empty({tile, g.column_width()}, p.input.options());
    at::Tensor products = at::empty({g.out_channels, tile}, p.input.options());
    const at::Tensor bias_column = p.bias.view({g.out_channels, 1});
    for (int64_t first = 0; first < g.pixels(); first += tile) {
      const int64_t count = std::min(tile, g.pixels() - first);
      at::Tensor cols = columns.narrow(0, 0, count);
      Kernels::columns(p.input, p.offset, p.mask, first, cols, g);
      at::Tensor prod = products.narrow(1, 0, count);
      for (int64_t k = 0; k < g.groups; ++k) {
        at::Tensor part = prod.narrow(0, k * out_per_group, out_per_group);
        at::mm_out(part, p.weight[k], group_columns(cols, g, k).t());
      }
      // + bias after the product, as torchvision adds it.
      for_each_image(g, first, count, [&](int64_t b, int64_t at_image, int64_t at_tile, int64_t n) {
        at::Tensor dst = out[b].view({g.out_channels, plane}).narrow(1, at_image, n);
        at::add_out(dst, prod.narrow(1, at_tile, n), bias_column);
      });
    }
    return out.to(input.scalar_type());
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
      const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
      const at::Tensor& mask, const at::Tensor& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
      int64_t dilation_h, int64_t dilation_w, int64_t groups, int64_t offset_groups, bool use_mask) {
    const char* op = "_deform_conv2d_backward";
    const Prepared p = prepare(op, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dilation_h,
                               dilation_w, groups, offset_groups, use_mask);
    TORCH_CHECK_VALUE(grad.sym_sizes() == c10::SymIntArrayRef(p.out_shape), "pydet.", op,
                      ": grad must have the output's shape ", shape_str(p.out_shape), ", got ",
                      shape_str(grad.sym_sizes()));
    check_floating(grad, op, "grad");
    check_same_device(input, "input", grad, "grad", op);
    const at::TensorOptions options = p.input.options();
    // [N, C, H, W] viewed over zeroed channels_last memory [N, H, W, C], which the kernels index.
    at::Tensor grad_input =
        at::zeros_symint({input.sym_size(0), input.sym_size(2), input.sym_size(3), input.sym_size(1)}, options)
            .permute({0, 3, 1, 2});
    at::Tensor grad_weight = at::zeros_symint(p.weight.sym_sizes(), options);
    at::Tensor grad_offset = at::zeros_symint(offset.sym_sizes(), options);
    at::Tensor grad_mask = at::zeros_symint(mask.sym_sizes(), options);
    const at::Tensor g_out = grad.to(p.input.scalar_type()).contiguous();
    at::Tensor grad_bias = g_out.sum({0, 2, 3});
    if (!input.is_meta() && g_out.numel() > 0) {
      const Geometry& g = p.g;
      const int64_t tile = tile_pixels(p), out_per_group = g.out_channels / g.groups, plane = g.plane();
      at::Tensor columns = at::empty({tile, g.column_width()}, options);
      at::Tensor grad_columns = at::empty({tile, g.column_width()}, options);
      at::Tensor grad_tile = at::empty({g.out_channels, tile}, options);
      for (int64_t first = 0; first < g.pixels(); first += tile) {
        const int64_t count = std::min(tile, g.pixels() - first);
        at::Tensor cols = columns.narrow(0, 0, count), grad_cols = grad_columns.narrow(0, 0, count);
        at::Tensor gt = grad_tile.narrow(1, 0, count);
        for_each_image(g, first, count, [&](int64_t b, int64_t at_image, int64_t at_tile, int64_t n) {
          gt.narrow(1, at_tile, n).copy_(g_out[b].view({g.out_channels, plane}).narrow(1, at_image, n));
        });
        Kernels::columns(p.input, p.offset, p.mask, first, cols, g);
        for (int64_t k = 0; k < g.groups; ++k) {
          const at::Tensor gk = gt.narrow(0, k * out_per_group, out_per_group);
          grad_weight[k].addmm_(gk, group_columns(cols, g, k));
          at::Tensor grad_part = group_columns(grad_cols, g, k);
          at::mm_out(grad_part, gk.t(), p.weight[k]);
        }
        Kernels::columns_backward(p.input, p.offset, p.mask, first, grad_cols, grad_input, grad_offset, grad_mask, g);
      }
    }
    return {grad_input.contiguous(input.suggest_memory_format()).to(input.scalar_type()),
            grad_weight.view_symint({weight.sym_size(0), weight.sym_size(2), weight.sym_size(3), weight.sym_size(1)})
                .permute({0, 3, 1, 2})
                .contiguous()
                .to(weight.scalar_type()),
            grad_offset.to(offset.scalar_type()), grad_mask.to(use_mask ? mask.scalar_type() : grad_mask.scalar_type()),
            grad_bias.to(bias.scalar_type())};
  }

  static void register_all(torch::Library& m) {
    m.impl("deform_conv2d", &forward);
    m.impl("_deform_conv2d_backward", &backward);
  }
};

}  // namespace pydet::deform
