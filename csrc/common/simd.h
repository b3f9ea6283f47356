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
// Index maps of the [kV64, 4] <-> 4 x [kV64] transposes below, in two shuffle stages (N = kV64 lanes):
// PickCoords<P>: of 2 vectors holding N/2 boxes, coordinates 2P and 2P+1 (N/2 lanes each);
// PickHalves<H>: half H of each of 2 vectors, side by side;
// Weave<Q>: from (x|y, z|w) halves, boxes Q N/4 .. (Q+1) N/4 - 1 with their 4 coordinates.
template <class T, int kPart>
struct PickCoords {
  static constexpr int at(std::size_t j) {
    constexpr int half = int(kV64<T>) / 2;
    return 4 * (int(j) % half) + 2 * kPart + int(j) / half;
  }
};
template <class T, int kHalf>
struct PickHalves {
  static constexpr int at(std::size_t j) {
    constexpr int n = int(kV64<T>), half = n / 2;
    return (int(j) / half) * n + kHalf * half + int(j) % half;
  }
};
template <class T, int kQuarter>
struct Weave {
  static constexpr int at(std::size_t j) {
    constexpr int n = int(kV64<T>), half = n / 2;
    const int box = kQuarter * (n / 4) + int(j) / 4, coord = int(j) % 4;
    return (coord / 2) * n + (coord % 2) * half + box;
  }
};

// kV64 boxes of 4 coordinates, stored row after row at p, as 4 vectors (one per coordinate): the
// boxes' lanes line up, so a formula over one box vectorises across kV64 of them. 8 two-source
// shuffles; interleave4 is the inverse.
template <class T>
__attribute__((always_inline)) inline void deinterleave4(const T* p, V64<T>* coords) {
  constexpr auto kI = std::make_index_sequence<std::size_t(kV64<T>)>{};
  const V64<T> v0 = load64(p), v1 = load64(p + kV64<T>), v2 = load64(p + 2 * kV64<T>), v3 = load64(p + 3 * kV64<T>);
  const V64<T> ab0 = permute2<PickCoords<T, 0>>(v0, v1, kI), cd0 = permute2<PickCoords<T, 1>>(v0, v1, kI);
  const V64<T> ab1 = permute2<PickCoords<T, 0>>(v2, v3, kI), cd1 = permute2<PickCoords<T, 1>>(v2, v3, kI);
  coords[0] = permute2<PickHalves<T, 0>>(ab0, ab1, kI);
  coords[1] = permute2<PickHalves<T, 1>>(ab0, ab1, kI);
  coords[2] = permute2<PickHalves<T, 0>>(cd0, cd1, kI);
  coords[3] = permute2<PickHalves<T, 1>>(cd0, cd1, kI);
}
template <class T>
__attribute__((always_inline)) inline void interleave4(T* p, const V64<T>* coords) {
  constexpr auto kI = std::make_index_sequence<std::size_t(kV64<T>)>{};
  const V64<T> ab0 = permute2<PickHalves<T, 0>>(coords[0], coords[1], kI);
  const V64<T> cd0 = permute2<PickHalves<T, 0>>(coords[2], coords[3], kI);
  const V64<T> ab1 = permute2<PickHalves<T, 1>>(coords[0], coords[1], kI);
  const V64<T> cd1 = permute2<PickHalves<T, 1>>(coords[2], coords[3], kI);
  store64(p, permute2<Weave<T, 0>>(ab0, cd0, kI));
  store64(p + kV64<T>, permute2<Weave<T, 1>>(ab0, cd0, kI));
  store64(p + 2 * kV64<T>, permute2<Weave<T, 0>>(ab1, cd1, kI));
  store64(p + 3 * kV64<T>, permute2<Weave<T, 1>>(ab1, cd1, kI));
}
}  // namespace pydet::simd
