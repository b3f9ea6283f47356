// Argument validation shared by every device's kernels. Messages name the operator, the argument
// and what was expected; pydet/ops/_checks.py raises the same messages from the fake kernels.
//   shape / value / device problems -> ValueError   (TORCH_CHECK_VALUE)
//   dtype problems                  -> TypeError    (TORCH_CHECK_TYPE)
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <string>
#include <vector>

#include "common/box_math.h"
#include "common/choices.h"

namespace pydet {

std::string shape_str(at::IntArrayRef sizes);
std::string shape_str(c10::SymIntArrayRef sizes);  // symbolic sizes print as their expressions

// Whether a front end runs the device kernel on `out`: not for empty outputs, and not on the meta
// device. Each family's front end is registered for Meta too (with the CPU kernels type, which then
// never runs), so one contract serves eager calls, meta tensors, torch.compile and torch.export.
// Sizes may be symbolic there, hence the sym_* accessors and *_symint factories in the front ends.
inline bool computes(const at::Tensor& out) {
  return !out.is_meta() && out.sym_numel() > 0;
}

// The dtype pydet's kernels compute in: float16/bfloat16 inputs are computed in float32 (CUDA
// kernels that take them natively say so).
inline at::ScalarType compute_dtype(at::ScalarType st) {
  return (st == at::kHalf || st == at::kBFloat16) ? at::kFloat : st;
}

// torch's Python name of a dtype ("int64", not c10's "Long"), so messages match the fake kernels'.
std::string dtype_name(at::ScalarType st);

// NumPy broadcast of two shapes; nullopt when they are not broadcastable.
std::optional<std::vector<c10::SymInt>> broadcast_shapes(c10::SymIntArrayRef a, c10::SymIntArrayRef b);

// Which dtypes a box argument takes: floating only, or integers too (torchvision's box_area and
// pairwise IoU functions take pixel coordinates as int8 to int64).
enum class BoxDtypes : int8_t { kFloating, kFloatingOrInteger };

// `t` must be a float32/float64/float16/bfloat16 tensor (or an integer one, with kFloatingOrInteger)
// of rank in [min_rank, max_rank] whose last dimension is `coordinates` (4, or a rotated format's 5
// or 8). `expected` is the shape as documented, e.g. "[N, 4]".
void check_boxes(const at::Tensor& t, const char* op, const char* arg, const char* expected, int64_t min_rank,
                 int64_t max_rank, BoxDtypes dtypes = BoxDtypes::kFloating, int64_t coordinates = 4);

void check_floating(const at::Tensor& t, const char* op, const char* arg);

// An integer tensor (any width, not bool); `what` says what its values are, for the message.
void check_integer(const at::Tensor& t, const char* op, const char* arg, const char* what);

void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                       const char* op);

}  // namespace pydet
