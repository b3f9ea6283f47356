// CPU SIMD dispatch. The hot loops of the CPU kernels are compiled several times (AVX-512F, AVX2 and
// the baseline x86-64 ISA) with GCC/Clang function multi-versioning; the loader picks the best
// variant the machine supports. One wheel therefore runs on any x86-64 CPU and still uses the
// widest vectors available, without compiling whole files per ISA.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define PYDET_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
namespace pydet::simd {
inline constexpr const char* kCompiledVariants = "avx512f,avx2,default";
// Mirrors the multi-versioning resolver's choice.
inline const char* active_variant() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
  return "default";
}
}  // namespace pydet::simd
#else
#define PYDET_TARGET_CLONES
namespace pydet::simd {
inline constexpr const char* kCompiledVariants = "default";
inline const char* active_variant() {
  return "default";
}
}  // namespace pydet::simd
#endif
