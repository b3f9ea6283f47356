#include "common/checks.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <sstream>

namespace pydet {

namespace {
template <class Sizes>
std::string join_sizes(Sizes sizes) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << ']';
  return s.str();
}
}  // namespace

std::string shape_str(at::IntArrayRef sizes) {
  return join_sizes(sizes);
}
std::string shape_str(c10::SymIntArrayRef sizes) {
  return join_sizes(sizes);
}

std::optional<std::vector<c10::SymInt>> broadcast_shapes(c10::SymIntArrayRef a, c10::SymIntArrayRef b) {
  const size_t n = std::max(a.size(), b.size());
  std::vector<c10::SymInt> out(n);
  for (size_t i = 0; i < n; ++i) {
    const c10::SymInt da = i < n - a.size() ? c10::SymInt(1) : a[i - (n - a.size())];
    const c10::SymInt db = i < n - b.size() ? c10::SymInt(1) : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1) return std::nullopt;
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::string dtype_name(at::ScalarType st) {
  switch (st) {
    case at::kByte:
      return "uint8";
    case at::kChar:
      return "int8";
    case at::kShort:
      return "int16";
    case at::kInt:
      return "int32";
    case at::kLong:
      return "int64";
    case at::kBool:
      return "bool";
    case at::kHalf:
      return "float16";
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kBFloat16:
      return "bfloat16";
    case at::kComplexFloat:
      return "complex64";
    case at::kComplexDouble:
      return "complex128";
    default:
      return c10::toString(st);
  }
}

namespace {
// The floating dtypes pydet's kernels take (not float8 or complex).
bool is_kernel_floating(at::ScalarType st) {
  return st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16;
}
}  // namespace

void check_floating(const at::Tensor& t, const char* op, const char* arg) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(is_kernel_floating(st), "pydet.", op, ": ", arg,
                   " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ", dtype_name(st));
}

void check_integer(const at::Tensor& t, const char* op, const char* arg, const char* what) {
  TORCH_CHECK_TYPE(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), "pydet.", op, ": ", arg,
                   " must be an integer tensor (", what, "), got ", dtype_name(t.scalar_type()));
}

void check_boxes(const at::Tensor& t, const char* op, const char* arg, const char* expected, int64_t min_rank,
                 int64_t max_rank, BoxDtypes dtypes, int64_t coordinates) {
  TORCH_CHECK_VALUE(t.dim() >= min_rank && t.dim() <= max_rank && t.sym_size(-1) == coordinates, "pydet.", op, ": ",
                    arg, " must have shape ", expected, ", got ", shape_str(t.sym_sizes()));
  if (dtypes == BoxDtypes::kFloating) return check_floating(t, op, arg);
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(is_kernel_floating(st) || at::isIntegralType(st, /*includeBool=*/false), "pydet.", op, ": ", arg,
                   " must be a floating-point or integer tensor (float32, float64, float16, bfloat16 or int8 to "
                   "int64), got ",
                   dtype_name(st));
}

void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                       const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), "pydet.", op, ": ", a_name, " and ", b_name,
                    " must be on the same device, got ", a.device().str(), " and ", b.device().str());
}

}  // namespace pydet
