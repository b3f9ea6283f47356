// The CPU variant a process runs (simd.h): chosen once, from what the CPU supports and what
// PYDET_CPU_CAPABILITY (else ATEN_CPU_CAPABILITY) asks for.
#include "common/simd.h"

#include <cstdlib>
#include <string>

namespace pydet::simd {
namespace {

struct Variant {
  Isa isa;
  const char* name;
  const char* level;
};

// Widest first. Only what this build compiled.
#if PYDET_MULTI_ISA
constexpr Variant kVariants[] = {{Isa::kAvx512, "avx512", PYDET_ISA_WIDE},
                                 {Isa::kAvx2, "avx2", PYDET_ISA_MID},
                                 {Isa::kBaseline, "default", "default"}};
#else
constexpr Variant kVariants[] = {{Isa::kBaseline, "default", "default"}};
#endif

bool cpu_supports(Isa isa) {
#if PYDET_MULTI_ISA
  __builtin_cpu_init();
  if (isa == Isa::kAvx512) return __builtin_cpu_supports(PYDET_ISA_WIDE);
  if (isa == Isa::kAvx2) return __builtin_cpu_supports(PYDET_ISA_MID);
#endif
  return isa == Isa::kBaseline;
}

Capability choose() {
  const Variant* widest = nullptr;
  for (const Variant& v : kVariants) {
    if (cpu_supports(v.isa)) {
      widest = &v;
      break;
    }
  }
  Capability c{widest->isa, widest->name, widest->level, ""};
  const char* variable = "PYDET_CPU_CAPABILITY";
  const char* asked = std::getenv(variable);
  if (asked == nullptr || *asked == '\0') {
    variable = "ATEN_CPU_CAPABILITY";
    asked = std::getenv(variable);
  }
  if (asked == nullptr || *asked == '\0') return c;
  const std::string want(asked);
  const std::string runs = std::string("; running ") + c.name + " (" + c.level + ") instead";
  if (want != "avx512" && want != "avx2" && want != "default") {
    c.warning = std::string(variable) + "=" + want + " is not a CPU capability pydet knows (avx512, avx2, default)";
    c.warning += runs;
    return c;
  }
  for (const Variant& v : kVariants) {
    if (want != v.name) continue;
    if (static_cast<int>(v.isa) > static_cast<int>(c.isa)) {
      c.warning = std::string(variable) + "=" + want + " asks for more than this CPU supports" + runs;
    } else {
      c = Capability{v.isa, v.name, v.level, ""};
    }
    return c;
  }
  c.warning = std::string(variable) + "=" + want + " was not compiled into this build of pydet" + runs;
  return c;
}

}  // namespace

const Capability& capability() {
  static const Capability c = choose();
  return c;
}

const char* compiled_variants() {
#if PYDET_MULTI_ISA
  return PYDET_ISA_WIDE "," PYDET_ISA_MID ",default";
#else
  return "default";
#endif
}

}  // namespace pydet::simd
