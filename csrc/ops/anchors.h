// anchor_grid: every anchor generator's grid in one pass (the device-agnostic front end; kernels in
// cpu/anchors.cpp and cuda/anchors.cu).
//
// For level l with base anchors B_l [A, 4], per-column shifts sx_l [W] and per-row shifts sy_l [H]:
//   row (y, x, a)  ->  (B_l[a] + (sx[x], sy[y], sx[x], sy[y])) * (s_x, s_y, s_x, s_y)
// (with shift_corners=False only the first two coordinates are shifted: centre-size boxes). Rows are
// location-major (y, x, then anchor: mmdet, torchvision, detectron2) or, with anchor_major,
// anchor-major (a, then y, x: NVIDIA/super-gradients SSD). The per-axis shifts carry each library's
// exact arithmetic (computed by the Python generators on a few hundred values); the kernel does the
// H * W * A broadcast, which is where the time goes.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "common/dual.h"

namespace pydet::anchors {

// One level of the grid: where its rows start in the output, its sizes, its per-axis scales and its
// base anchors [A, 4] and shifts [W], [H] (contiguous, in the output dtype).
struct Level {
  int64_t row_start, anchors, height, width;
  double scale_x, scale_y;
  const void* base;
  const void* shifts_x;
  const void* shifts_y;
};

// One output coordinate, (base + shift) * scale (just base * scale without kShift), rounded to T after
// each step exactly as PyTorch's broadcast add and multiply do: half and bfloat16 compute in float
// and round after every op, so the grid equals the library formulas bit for bit in every dtype.
template <class T, bool kShift>
PYDET_HD T anchor_coord(T base, T shift, at::opmath_type<T> scale) {
  using Acc = at::opmath_type<T>;
  const T shifted = kShift ? T(Acc(base) + Acc(shift)) : base;
  return T(Acc(shifted) * scale);
}

// Kernels must provide:
//   static void grid(const std::vector<Level>&, bool anchor_major, bool shift_corners, at::Tensor& out /*[rows, 4]*/);
// Levels are read where they lie (no concatenation): the output is the only tensor written.
template <class Kernels>
struct Ops {
  static at::Tensor grid(at::TensorList base_anchors, at::TensorList shifts_x, at::TensorList shifts_y,
                         c10::ArrayRef<double> scales, bool anchor_major, bool shift_corners) {
    const char* op = "anchor_grid";
    const size_t L = base_anchors.size();
    TORCH_CHECK_VALUE(L > 0, "pydet.anchor_grid: base_anchors must hold at least one level");
    TORCH_CHECK_VALUE(shifts_x.size() == L && shifts_y.size() == L,
                      "pydet.anchor_grid: base_anchors, shifts_x and "
                      "shifts_y must have one entry per level, got ",
                      L, ", ", shifts_x.size(), " and ", shifts_y.size());
    TORCH_CHECK_VALUE(scales.empty() || scales.size() == 2 * L,
                      "pydet.anchor_grid: scales must be empty or hold "
                      "(scale_x, scale_y) per level (",
                      2 * L, " values), got ", scales.size());
    const at::Tensor& first = base_anchors[0];
    c10::SymInt rows = 0;
    for (size_t l = 0; l < L; ++l) {
      const at::Tensor& b = base_anchors[l];
      TORCH_CHECK_VALUE(b.dim() == 2 && b.sym_size(1) == 4, "pydet.anchor_grid: base_anchors[", l,
                        "] must have shape [A, 4], got ", shape_str(b.sym_sizes()));
      TORCH_CHECK_VALUE(shifts_x[l].dim() == 1 && shifts_y[l].dim() == 1, "pydet.anchor_grid: shifts_x[", l,
                        "] and shifts_y[", l, "] must be 1-D, got ", shape_str(shifts_x[l].sym_sizes()), " and ",
                        shape_str(shifts_y[l].sym_sizes()));
      for (const at::Tensor* t : {&b, &shifts_x[l], &shifts_y[l]}) {
        check_floating(*t, op, "base_anchors/shifts");
        TORCH_CHECK_TYPE(t->scalar_type() == first.scalar_type(),
                         "pydet.anchor_grid: every tensor must have the "
                         "dtype of base_anchors[0] (",
                         dtype_name(first.scalar_type()), "), got ", dtype_name(t->scalar_type()));
        check_same_device(first, "base_anchors[0]", *t, "every other tensor", op);
      }
      rows += b.sym_size(0) * shifts_y[l].sym_size(0) * shifts_x[l].sym_size(0);
    }
    at::Tensor out = at::empty_symint({rows, 4}, first.options());
    if (!computes(out)) return out;
    std::vector<at::Tensor> inputs;  // contiguous inputs, alive while the kernel reads them
    inputs.reserve(3 * L);
    std::vector<Level> levels(L);
    int64_t row_start = 0;
    for (size_t l = 0; l < L; ++l) {
      for (const at::Tensor* t : {&base_anchors[l], &shifts_x[l], &shifts_y[l]}) inputs.push_back(t->contiguous());
      Level& level = levels[l];
      level.row_start = row_start;
      level.anchors = base_anchors[l].size(0);
      level.height = shifts_y[l].size(0);
      level.width = shifts_x[l].size(0);
      level.scale_x = scales.empty() ? 1.0 : scales[2 * l];
      level.scale_y = scales.empty() ? 1.0 : scales[2 * l + 1];
      level.base = inputs[3 * l].const_data_ptr();
      level.shifts_x = inputs[3 * l + 1].const_data_ptr();
      level.shifts_y = inputs[3 * l + 2].const_data_ptr();
      row_start += level.anchors * level.height * level.width;
    }
    Kernels::grid(levels, anchor_major, shift_corners, out);
    return out;
  }

  static void register_all(torch::Library& m) { m.impl("anchor_grid", &grid); }
};

}  // namespace pydet::anchors
