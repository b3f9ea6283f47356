// CPU SIMD dispatch. The hot loops of the CPU kernels are compiled several times: for the
// x86-64-v4 level (AVX-512 F/BW/CD/DQ/VL), for x86-64-v3 (AVX2 + FMA) and for the baseline x86-64
// ISA. One wheel therefore runs on any x86-64 CPU and still uses the widest vectors available,
// without compiling whole files per ISA. Levels rather than single features because of FMA:
// exp_/log_ (dual.h) call std::fma, one instruction from x86-64-v3 on. GCC < 12 and Clang do not
// take level names in target attributes; they get avx512f (which implies FMA), avx2 (where std::fma
// is a libm call: slower, same results) and the baseline.
//
// The variant is chosen once per process, as ATen's DispatchStub chooses its own: the widest the
// CPU supports, narrowed by PYDET_CPU_CAPABILITY (or, when that is unset, ATEN_CPU_CAPABILITY) =
// avx512 | avx2 | default. A kernel runs its hot loop through simd::dispatch([&] { loop(...); }):
// dispatch calls the lambda from one of three trampolines, each compiled for one ISA with
// `flatten`, so the lambda and what it calls is inlined and compiled for that ISA. The loop
// functions themselves are PYDET_SIMD_INLINE (always_inline): flatten alone gives up on a callee
// whose inlining would grow the stack frame past GCC's limits (the depthwise transposes' tiles),
// and that callee then runs baseline code on every variant. A lambda taking one argument receives
// IsaTag<I>, to specialise on the ISA at compile time. (GCC's target_clones resolver runs when the
// library loads and cannot be overridden; these can.)
#pragma once

#include <string>
#include <type_traits>

// A function a dispatched lambda calls for its hot loop: inlined into each ISA's trampoline.
#define PYDET_SIMD_INLINE __attribute__((always_inline)) inline

namespace pydet::simd {

enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

struct Capability {
  Isa isa;
  const char* name;     // ATen's spelling: avx512, avx2, default
  const char* level;    // what the compiler was told: x86-64-v4, x86-64-v3 (or avx512f, avx2), default
  std::string warning;  // non-empty when the requested variant could not be honoured: what runs instead
};

// The variant this process runs (chosen on first use; see above), and the levels compiled
// (comma-separated, widest first).
const Capability& capability();
const char* compiled_variants();

inline Isa active_isa() {
  static const Isa isa = capability().isa;
  return isa;
}

// The vector width (bytes) of the running variant: AVX-512 64, AVX2 32, baseline 16. Loops built on
// explicit two-source shuffles take their width from it (GCC lowers a 64-byte shuffle compiled for
// AVX2 element by element, through memory).
inline int vector_bytes() {
  switch (active_isa()) {
    case Isa::kAvx512:
      return 64;
    case Isa::kAvx2:
      return 32;
    default:
      return 16;
  }
}

// PYDET_SINGLE_ISA (sanitizer builds) compiles the baseline ISA only, and so do non-x86 targets.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && \
    !defined(PYDET_SINGLE_ISA)
#define PYDET_MULTI_ISA 1
#if !defined(__clang__) && __GNUC__ >= 12
#define PYDET_ISA_WIDE "x86-64-v4"
#define PYDET_ISA_MID "x86-64-v3"
#define PYDET_TARGET_WIDE "arch=" PYDET_ISA_WIDE
#define PYDET_TARGET_MID "arch=" PYDET_ISA_MID
#else
#define PYDET_ISA_WIDE "avx512f"
#define PYDET_ISA_MID "avx2"
#define PYDET_TARGET_WIDE PYDET_ISA_WIDE
#define PYDET_TARGET_MID PYDET_ISA_MID
#endif
#else
#define PYDET_MULTI_ISA 0
#endif

// What a dispatched lambda may take as its argument, to specialise on the ISA at compile time (the
// width of explicit shuffles, say): IsaTag<I>::kVectorBytes is the width of I's vectors.
template <Isa I>
struct IsaTag {
  static constexpr Isa kIsa = I;
  static constexpr int kVectorBytes = I == Isa::kAvx512 ? 64 : I == Isa::kAvx2 ? 32 : 16;
};
template <Isa I, class F>
__attribute__((always_inline)) inline decltype(auto) call_for(F& f) {
  if constexpr (std::is_invocable_v<F&, IsaTag<I>>) {
    return f(IsaTag<I>{});
  } else {
    return f();
  }
}
#if PYDET_MULTI_ISA
template <class F>
__attribute__((target(PYDET_TARGET_WIDE), flatten)) decltype(auto) run_wide(F& f) {
  return call_for<Isa::kAvx512>(f);
}
template <class F>
__attribute__((target(PYDET_TARGET_MID), flatten)) decltype(auto) run_mid(F& f) {
  return call_for<Isa::kAvx2>(f);
}
#endif
template <class F>
__attribute__((flatten)) decltype(auto) run_baseline(F& f) {
  return call_for<Isa::kBaseline>(f);
}

// f() (or f(IsaTag<I>{})) compiled for the running variant's ISA I.
template <class F>
inline decltype(auto) dispatch(F&& f) {
#if PYDET_MULTI_ISA
  switch (active_isa()) {
    case Isa::kAvx512:
      return run_wide(f);
    case Isa::kAvx2:
      return run_mid(f);
    default:
      break;
  }
#endif
  return run_baseline(f);
}

}  // namespace pydet::simd

#include <cstddef>
#include <cstring>
#include <utility>

namespace pydet::simd {
// A GCC/Clang vector of kBytes bytes of T: explicit lanes for loops the compiler would not vectorise
// on its own, such as float sums, whose order it may not change. V64: 64 bytes (16 floats, 8
// doubles). On targets narrower than the vector the compiler splits arithmetic into native
// vectors, but a two-source shuffle it lowers element by element, through memory (the coders'
// dense loop ran 6x slower on AVX2 with 64-byte vectors than with 32): loops built on shuffles take
// their width from vector_bytes().
template <class T, int kBytes>
struct LanesOf {
  typedef T type __attribute__((vector_size(kBytes)));
};
template <class T, int kBytes>
using Vec = typename LanesOf<T, kBytes>::type;
template <class T>
using V64 = Vec<T, 64>;
template <class T>
inline constexpr int64_t kV64 = 64 / sizeof(T);

template <class V, class T>
inline V load_vec(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class T, class V>
inline void store_vec(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(v));
}
template <class T>
inline V64<T> load64(const T* p) {
  return load_vec<V64<T>>(p);
}
template <class T>
inline void store64(T* p, const V64<T>& v) {
  store_vec(p, v);
}

// In-register transpose of a kV64 x kV64 tile (16 x 16 floats, 8 x 8 doubles): rows[i][j] becomes
// rows[j][i]. log2(kV64) stages; stage B swaps the off-diagonal B x B blocks of every 2B x 2B block
// with two-source shuffles (vpermt2ps/vshufps on AVX-512). always_inline: the callers are
// dispatched (see above), and the shuffles must be compiled for the caller's ISA. (-Wno-psabi: GCC warns
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

// transpose_tile<T, kNative>: the same transpose for a machine whose vectors hold kNative bytes.
// Each row is handled as 64 / kNative native vectors ("chunks"): the stages that move blocks smaller
// than a chunk shuffle chunk by chunk, the larger ones only swap whole chunks between rows. Compiled
// for AVX2 or SSE, a 64-byte two-source shuffle is lowered element by element through memory; this
// keeps every shuffle native.
template <class V, std::size_t B, std::size_t N, std::size_t C>
__attribute__((always_inline)) inline void transpose_chunks(V (&rows)[N][C]) {
  constexpr std::size_t W = N / C;  // lanes per chunk
  if constexpr (B < N) {
    for (std::size_t r = 0; r < N; ++r) {
      if (r & B) continue;
      for (std::size_t k = 0; k < C; ++k) {
        if constexpr (B < W) {
          const V a = rows[r][k], c = rows[r | B][k];
          rows[r][k] = swap_low<B>(a, c, std::make_index_sequence<W>{});
          rows[r | B][k] = swap_high<B>(a, c, std::make_index_sequence<W>{});
        } else if (k & (B / W)) {
          std::swap(rows[r][k], rows[r | B][k - B / W]);
        }
      }
    }
    transpose_chunks<V, 2 * B>(rows);
  }
}

template <class T, int kNative = 64, std::size_t B = 1>
__attribute__((always_inline)) inline void transpose_tile(V64<T>* rows) {
  constexpr std::size_t N = kV64<T>, C = 64 / kNative;
  if constexpr (C == 1) {
    if constexpr (B < N) {
      for (std::size_t r = 0; r < N; ++r) {
        if (r & B) continue;
        const V64<T> a = rows[r], c = rows[r | B];
        rows[r] = swap_low<B>(a, c, std::make_index_sequence<N>{});
        rows[r | B] = swap_high<B>(a, c, std::make_index_sequence<N>{});
      }
      transpose_tile<T, kNative, 2 * B>(rows);
    }
  } else {
    using V = Vec<T, kNative>;
    V chunks[N][C];
    std::memcpy(chunks, rows, sizeof(chunks));
    transpose_chunks<V, 1>(chunks);
    std::memcpy(rows, chunks, sizeof(chunks));
  }
}

// Lane j of the result is lane Map::at(j) of the concatenation (a, b): 0 .. N-1 from a, N .. 2N-1 from b.
template <class Map, class V, std::size_t... J>
__attribute__((always_inline)) inline V permute2(V a, V b, std::index_sequence<J...>) {
  return __builtin_shufflevector(a, b, Map::at(J)...);
}
// Index maps of the transposes below, between N/2 boxes of 4 coordinates held in 2 vectors of N
// lanes (row after row: boxes 0 .. N/4 - 1 in the first) and their coordinate pairs (a, b) and
// (c, d) in 2 vectors. Slot s of the pair vectors holds box s / 2 of input vector s % 2, so each
// shuffle is one instruction at any vector width: within 16-byte lanes for float (shufps/vshufps),
// of whole 16-byte blocks for double (vperm2f128, vshuff64x2).
// PickPairs<N, P>: pair P of every box; WeavePairs<N, H>: the boxes of input vector H back.
template <int kN, int kPair>
struct PickPairs {
  static constexpr int at(std::size_t j) {
    const int slot = int(j) / 2;
    return (slot % 2) * kN + 4 * (slot / 2) + 2 * kPair + int(j) % 2;
  }
};
template <int kN, int kHalf>
struct WeavePairs {
  static constexpr int at(std::size_t j) {
    const int coord = int(j) % 4;
    return (coord / 2) * kN + 2 * (2 * (int(j) / 4) + kHalf) + coord % 2;
  }
};

// N/2 boxes of 4 coordinates (a, b, c, d), stored row after row at p, as 2 vectors V of N lanes:
// (a, b) and (c, d) of every box, lane j holding coordinate j % 2 of its pair. A per-axis formula
// then vectorises across the lanes. Boxes are in slot order (above) in between; interleave_pairs
// stores them back in row order. 2 shuffles each way.
template <class V, class T>
__attribute__((always_inline)) inline void deinterleave_pairs(const T* p, V& ab, V& cd) {
  constexpr int kN = int(sizeof(V) / sizeof(T));
  constexpr auto kI = std::make_index_sequence<std::size_t(kN)>{};
  const V v0 = load_vec<V>(p), v1 = load_vec<V>(p + kN);
  ab = permute2<PickPairs<kN, 0>>(v0, v1, kI);
  cd = permute2<PickPairs<kN, 1>>(v0, v1, kI);
}
template <class V, class T>
__attribute__((always_inline)) inline void interleave_pairs(T* p, const V& ab, const V& cd) {
  constexpr int kN = int(sizeof(V) / sizeof(T));
  constexpr auto kI = std::make_index_sequence<std::size_t(kN)>{};
  store_vec(p, permute2<WeavePairs<kN, 0>>(ab, cd, kI));
  store_vec(p + kN, permute2<WeavePairs<kN, 1>>(ab, cd, kI));
}
}  // namespace pydet::simd
