// CPU SIMD dispatch. The hot loops of the CPU kernels are compiled several times (the x86-64-v4
// level: AVX-512 F/BW/CD/DQ/VL; x86-64-v3: AVX2 + FMA; and the baseline x86-64 ISA) with GCC/Clang
// function multi-versioning; the loader picks the best variant the machine supports. One wheel
// therefore runs on any x86-64 CPU and still uses the widest vectors available, without compiling
// whole files per ISA. Levels rather than single features because of FMA: exp_/log_ (dual.h) call
// std::fma, one instruction from x86-64-v3 on. GCC < 12 and Clang do not take level names in
// target_clones; they get avx512f (which implies FMA), avx2 (where std::fma is a libm call: slower,
// same results) and the baseline.
#pragma once

// PYDET_SINGLE_ISA (sanitizer builds) compiles the baseline ISA only.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && \
    !defined(PYDET_SINGLE_ISA)
#if !defined(__clang__) && __GNUC__ >= 12
#define PYDET_ISA_WIDE "x86-64-v4"
#define PYDET_ISA_MID "x86-64-v3"
#define PYDET_TARGET_CLONES __attribute__((target_clones("arch=" PYDET_ISA_WIDE, "arch=" PYDET_ISA_MID, "default")))
#else
#define PYDET_ISA_WIDE "avx512f"
#define PYDET_ISA_MID "avx2"
#define PYDET_TARGET_CLONES __attribute__((target_clones(PYDET_ISA_WIDE, PYDET_ISA_MID, "default")))
#endif
namespace pydet::simd {
inline constexpr const char* kCompiledVariants = PYDET_ISA_WIDE "," PYDET_ISA_MID ",default";
// Mirrors the multi-versioning resolver's choice.
inline const char* active_variant() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports(PYDET_ISA_WIDE)) return PYDET_ISA_WIDE;
  if (__builtin_cpu_supports(PYDET_ISA_MID)) return PYDET_ISA_MID;
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

#include <cstddef>
#include <cstring>
#include <utility>

namespace pydet::simd {
// A 64-byte GCC/Clang vector of T (16 floats, 8 doubles): explicit lanes for loops the compiler
// would not vectorise on its own, such as float sums, whose order it may not change. On targets
// narrower than 64 bytes the compiler splits each operation.
template <class T>
struct Lanes64 {
  typedef T type __attribute__((vector_size(64)));
};
template <class T>
using V64 = typename Lanes64<T>::type;
template <class T>
inline constexpr int64_t kV64 = 64 / sizeof(T);

template <class T>
inline V64<T> load64(const T* p) {
  V64<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <class T>
inline void store64(T* p, const V64<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// In-register transpose of a kV64 x kV64 tile (16 x 16 floats, 8 x 8 doubles): rows[i][j] becomes
// rows[j][i]. log2(kV64) stages; stage B swaps the off-diagonal B x B blocks of every 2B x 2B block
// with two-source shuffles (vpermt2ps/vshufps on AVX-512). always_inline: the callers are
// multi-versioned, and the shuffles must be compiled for the caller's ISA. (-Wno-psabi: GCC warns
// that 64-byte vectors change the ABI of non-AVX-512 functions; these are never called as such.)
template <std::size_t B, class V, std::size_t... J>
__attribute__((always_inline)) inline V swap_low(V a, V c, std::index_sequence<J...>) {
  constexpr std::size_t N = sizeof...(J);
  return __builtin_shufflevector(a, c, ((J & B) == 0 ? J : N + J - B)...);
}
template <std::size_t B, class V, std::size_t... J>
__attribute__((always_inline)) inline V swap_high(V a, V c, std::index_sequence<J...>) {
  constexpr std::size_t N = sizeof...(J);
  return __builtin_shufflevector(a, c, ((J & B) == 0 ? J + B : N + J)...);
}
// The bitwise OR of all lanes of an integer vector, by halving (log2(kV64) shuffles), instead of
// the lane-by-lane extraction compilers emit for a loop over the lanes.
template <std::size_t H, class V, std::size_t... J>
__attribute__((always_inline)) inline V rotate_lanes(V v, std::index_sequence<J...>) {
  return __builtin_shufflevector(v, v, ((J + H) % sizeof...(J))...);
}
template <class U, std::size_t H = kV64<U> / 2>
__attribute__((always_inline)) inline U or_lanes(V64<U> v) {
  if constexpr (H == 0) {
    return v[0];
  } else {
    return or_lanes<U, H / 2>(v | rotate_lanes<H>(v, std::make_index_sequence<std::size_t(kV64<U>)>{}));
  }
}

template <class T, std::size_t B = 1>
__attribute__((always_inline)) inline void transpose_tile(V64<T>* rows) {
  constexpr std::size_t N = kV64<T>;
  if constexpr (B < N) {
    for (std::size_t r = 0; r < N; ++r) {
      if (r & B) continue;
      const V64<T> a = rows[r], c = rows[r | B];
      rows[r] = swap_low<B>(a, c, std::make_index_sequence<N>{});
      rows[r | B] = swap_high<B>(a, c, std::make_index_sequence<N>{});
    }
    transpose_tile<T, 2 * B>(rows);
  }
}

// Lane j of the result is lane Map::at(j) of the concatenation (a, b): 0 .. N-1 from a, N .. 2N-1 from b.
template <class Map, class V, std::size_t... J>
__attribute__((always_inline)) inline V permute2(V a, V b, std::index_sequence<J...>) {
  return __builtin_shufflevector(a, b, Map::at(J)...);
}
// Index maps of the [kV64 / 2, 4] <-> 2 x [kV64] transposes below (N = kV64 lanes):
// PickPairs<P>: of 2 vectors holding N/2 boxes, coordinate pair P ((0, 1) or (2, 3)) of each box;
// WeavePairs<H>: from the (0, 1) and (2, 3) pairs of N/2 boxes, the 4 coordinates of boxes H N/4 ..
// (H+1) N/4 - 1.
template <class T, int kPair>
struct PickPairs {
  static constexpr int at(std::size_t j) { return 4 * (int(j) / 2) + 2 * kPair + int(j) % 2; }
};
template <class T, int kHalf>
struct WeavePairs {
  static constexpr int at(std::size_t j) {
    constexpr int n = int(kV64<T>);
    const int box = kHalf * (n / 4) + int(j) / 4, coord = int(j) % 4;
    return (coord / 2) * n + 2 * box + coord % 2;
  }
};

// kV64 / 2 boxes of 4 coordinates (a, b, c, d), stored row after row at p, as 2 vectors: (a, b) of
// every box and (c, d) of every box. Lane j then holds one axis (j % 2) of box j / 2 in both, so a
// per-axis formula vectorises across the lanes. 2 two-source shuffles; interleave_pairs is the inverse.
template <class T>
__attribute__((always_inline)) inline void deinterleave_pairs(const T* p, V64<T>& ab, V64<T>& cd) {
  constexpr auto kI = std::make_index_sequence<std::size_t(kV64<T>)>{};
  const V64<T> v0 = load64(p), v1 = load64(p + kV64<T>);
  ab = permute2<PickPairs<T, 0>>(v0, v1, kI);
  cd = permute2<PickPairs<T, 1>>(v0, v1, kI);
}
template <class T>
__attribute__((always_inline)) inline void interleave_pairs(T* p, const V64<T>& ab, const V64<T>& cd) {
  constexpr auto kI = std::make_index_sequence<std::size_t(kV64<T>)>{};
  store64(p, permute2<WeavePairs<T, 0>>(ab, cd, kI));
  store64(p + kV64<T>, permute2<WeavePairs<T, 1>>(ab, cd, kI));
}
}  // namespace pydet::simd
