// The pybind11 module pydet._C. Importing it loads the library, which registers every operator
// (csrc/schemas.cpp) and kernel; the module itself only exposes build information.
//
// Operators reach Python through the dispatcher (torch.ops.pydet), never through pybind11, so this
// file needs pybind11 but none of torch's Python bindings: it includes the pybind11 headers bundled
// with torch (the same version torch uses) rather than torch/extension.h, and pydet does not link
// libtorch_python. That keeps this file's compile time at a few seconds instead of ~40.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

#include <sstream>
#include <string>

#include "common/simd.h"

namespace {

pybind11::list split_csv(const std::string& csv) {
  pybind11::list out;
  std::stringstream ss(csv);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.append(item);
  }
  return out;
}

pybind11::dict build_info() {
  pybind11::dict d;
  d["version"] = PYDET_VERSION;
  d["torch_version"] = PYDET_TORCH_VERSION;
  d["cuda"] = bool(PYDET_WITH_CUDA);
  d["cuda_version"] = PYDET_CUDA_VERSION;
  d["cuda_archs"] = split_csv(PYDET_CUDA_ARCHS);
  d["compiler"] = PYDET_COMPILER;
  d["build_type"] = PYDET_BUILD_TYPE;
#ifdef _OPENMP
  d["openmp"] = int(_OPENMP);
#else
  d["openmp"] = pybind11::none();
#endif
  d["num_threads"] = at::get_num_threads();
  const pydet::simd::Capability& cpu = pydet::simd::capability();
  d["cpu_kernel_variants"] = split_csv(pydet::simd::compiled_variants());
  d["cpu_kernel_variant"] = cpu.level;
  d["cpu_capability"] = cpu.name;
  d["cpu_capability_warning"] = cpu.warning;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pydet compiled core: registers torch.ops.pydet.* and reports how it was built";
  m.def("build_info", &build_info,
        "How this pydet was built: versions, CUDA kernels and architectures, compiler, OpenMP and threads, "
        "and the CPU kernel variant (SIMD width) this process runs.");
}
