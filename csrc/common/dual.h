// Forward-mode automatic differentiation for the box formulas.
//
// Every box formula in pydet is written once, as a template over its value type V. Forward kernels
// instantiate it with V = float/double; backward kernels instantiate the same code with
// V = Dual<S, K>, which carries the K partial derivatives of each intermediate value with respect to
// the box coordinates. Forward values and gradients therefore can never drift apart.
//
// The non-smooth primitives reproduce PyTorch's autograd conventions exactly, so gradients match
// what autograd gives for torchvision's eager formulas:
//   maximum/minimum at a tie: each operand receives half of the gradient (torch.maximum);
//   clamp_min(x, lo):         gradient flows where x >= lo (torch.clamp);
//   clamp(x, lo, hi):         gradient flows where lo <= x <= hi;
//   detach(x):                no gradient (torch.no_grad() blocks in the reference formulas).
#pragma once

#include <c10/macros/Macros.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

// Host/device function that must be inlined: the dual-number operations are only fast once the
// compiler sees through them (kept out of line, a Dual<float, 8> op becomes a call per add).
#if defined(__CUDACC__)
#define PYDET_HD __host__ __device__ __forceinline__
#define PYDET_UNROLL _Pragma("unroll")
#else
#define PYDET_HD inline __attribute__((always_inline))
// Fully unroll the loops over partials, so a loop over boxes around dual-number code has no inner
// loops left and can be vectorised across boxes.
#define PYDET_UNROLL _Pragma("GCC unroll 16")
#endif

namespace pydet {

template <class S, int K>
struct Dual {
  S v;
  S d[K];

  PYDET_HD Dual() : v(0) {
    PYDET_UNROLL
    for (int k = 0; k < K; ++k) d[k] = S(0);
  }
  template <class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>
  PYDET_HD Dual(A value) : v(static_cast<S>(value)) {
    PYDET_UNROLL
    for (int k = 0; k < K; ++k) d[k] = S(0);
  }
  // The k-th input variable: value `value`, derivative 1 with respect to itself.
  static PYDET_HD Dual variable(S value, int k) {
    Dual r(value);
    r.d[k] = S(1);
    return r;
  }
};

template <class V>
struct scalar_of {
  using type = V;
};
template <class S, int K>
struct scalar_of<Dual<S, K>> {
  using type = S;
};
template <class V>
using scalar_of_t = typename scalar_of<V>::type;

template <class S>
PYDET_HD S value_of(S x) {
  return x;
}
template <class S, int K>
PYDET_HD S value_of(const Dual<S, K>& x) {
  return x.v;
}

// ---- arithmetic -------------------------------------------------------------------------------
template <class S, int K>
PYDET_HD Dual<S, K> operator-(const Dual<S, K>& a) {
  Dual<S, K> r;
  r.v = -a.v;
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) r.d[k] = -a.d[k];
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> operator+(const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = a.v + b.v;
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) r.d[k] = a.d[k] + b.d[k];
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> operator-(const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = a.v - b.v;
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) r.d[k] = a.d[k] - b.d[k];
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> operator*(const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = a.v * b.v;
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) r.d[k] = a.d[k] * b.v + a.v * b.d[k];
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> operator/(const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = a.v / b.v;
  // d(a/b) = (da - (a/b) db) / b
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) r.d[k] = (a.d[k] - r.v * b.d[k]) / b.v;
  return r;
}
#define PYDET_DUAL_MIXED_OP(op)                               \
  template <class S, int K>                                   \
  PYDET_HD Dual<S, K> operator op(const Dual<S, K>& a, S b) { \
    return a op Dual<S, K>(b);                                \
  }                                                           \
  template <class S, int K>                                   \
  PYDET_HD Dual<S, K> operator op(S a, const Dual<S, K>& b) { \
    return Dual<S, K>(a) op b;                                \
  }
PYDET_DUAL_MIXED_OP(+)
PYDET_DUAL_MIXED_OP(-)
PYDET_DUAL_MIXED_OP(*)
PYDET_DUAL_MIXED_OP(/)
#undef PYDET_DUAL_MIXED_OP

// Comparisons look at values only.
#define PYDET_DUAL_CMP(op)                                              \
  template <class S, int K>                                             \
  PYDET_HD bool operator op(const Dual<S, K>& a, const Dual<S, K>& b) { \
    return a.v op b.v;                                                  \
  }
PYDET_DUAL_CMP(<)
PYDET_DUAL_CMP(>)
PYDET_DUAL_CMP(<=)
PYDET_DUAL_CMP(>=)
#undef PYDET_DUAL_CMP

// ---- non-smooth primitives with torch semantics -------------------------------------------------
// NaN in either operand gives NaN, like torch.maximum / torch.minimum. Written as selects so the
// plain-float versions vectorise.
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S maximum(S a, S b) {
  return ((a > b) | (a != a)) ? a : b;
}
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S minimum(S a, S b) {
  return ((a < b) | (a != a)) ? a : b;
}
// torch.clamp(x, min=lo): NaN stays NaN.
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S clamp_min(S x, S lo) {
  return x < lo ? lo : x;
}
// torch.clamp(x, min=lo, max=hi): NaN stays NaN; hi wins where lo > hi, as in torch. In two steps,
// each of which compiles to one IEEE max/min instruction (maxps/minps) once vectorised.
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S clamp(S x, S lo, S hi) {
  const S at_least_lo = x < lo ? lo : x;
  return at_least_lo > hi ? hi : at_least_lo;
}
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S detach(S x) {
  return x;
}
// atan in float32. On the CPU, libm's atanf is an opaque call that stops a loop from vectorising, so
// this is the classic fdlibm reduction (five intervals, |x| -> a small argument with one division)
// and odd polynomial, written branch-free. Checked over all 2^32 inputs (tests/math/ulp_check.cpp;
// CI runs a strided sweep): at most 0.86 ulp from the exact value (PyTorch's vectorised atan, Sleef
// u10, promises 1.0 ulp); inf gives +-pi/2, NaN stays NaN, -0 stays -0. CUDA uses its own atanf.
PYDET_HD float atan_(float x) {
#if defined(__CUDA_ARCH__)
  return ::atanf(x);
#else
  const float ax = std::fabs(x);
  const bool r1 = ax >= 0.4375f, r2 = ax >= 0.6875f, r3 = ax >= 1.1875f, r4 = ax >= 2.4375f;
  // atan(|x|) = hi + lo + atan(num / den), atan(c) = hi + lo for c = 1/2, 1, 3/2, inf.
  float num = ax, den = 1.0f, hi = 0.0f, lo = 0.0f;
  num = r1 ? 2.0f * ax - 1.0f : num;
  den = r1 ? 2.0f + ax : den;
  hi = r1 ? 4.6364760399e-01f : hi;
  lo = r1 ? 5.0121582440e-09f : lo;
  num = r2 ? ax - 1.0f : num;
  den = r2 ? ax + 1.0f : den;
  hi = r2 ? 7.8539812565e-01f : hi;
  lo = r2 ? 3.7748947079e-08f : lo;
  num = r3 ? ax - 1.5f : num;
  den = r3 ? 1.0f + 1.5f * ax : den;
  hi = r3 ? 9.8279368877e-01f : hi;
  lo = r3 ? 3.4473217170e-08f : lo;
  num = r4 ? -1.0f : num;
  den = r4 ? ax : den;
  hi = r4 ? 1.5707962513e+00f : hi;
  lo = r4 ? 7.5497894159e-08f : lo;
  const float t = num / den;
  const float z = t * t, w = z * z;
  const float odd = z * (3.3333328366e-01f + w * (1.4253635705e-01f + w * 6.1687607318e-02f));
  const float even = w * (-1.9999158382e-01f + w * -1.0648017377e-01f);
  const float y = r1 ? hi - ((t * (odd + even) - lo) - t) : t - t * (odd + even);
  return std::copysign(y, x);
#endif
}
template <class S>
PYDET_HD S select(bool c, S x, S y);  // below
// exp in float32, for the same reason as atan_: a branch-free Cephes-style reduction (x = n ln2 +
// r, degree-5 polynomial for e^r, times 2^n) that vectorises. Checked over all floats
// (tests/math/ulp_check.cpp): at most 0.9994 ulp from the exact value over the whole
// non-overflowing range; results below the smallest normal float (x <= kLo) flush to 0, beyond the
// largest (x >= kHi) give inf, NaN stays NaN. CUDA uses expf. The steps are fused multiply-adds
// (std::fma): one instruction each on the AVX2 and AVX-512 variants (simd.h); on the baseline
// variant a libm fmaf call, the same correctly rounded result but a call that stops vectorisation. The
// polynomial is evaluated in Estrin's order: its dependency chain is 3 multiply-adds deep instead
// of Horner's 5, and in a vectorised loop the latency of that chain, not the count of operations,
// bounds the throughput (the out-of-order window fills with operations waiting on it).
PYDET_HD float exp_(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  constexpr float kLo = -87.3365447505f, kHi = 88.7228391117f;
  // n = x / ln2 rounded to the nearest integer by adding 1.5 * 2^23: the sum's low mantissa bits are
  // n (two's complement), read back below with bit_cast. Unlike a clamp of x followed by nearbyint and
  // a float-to-int conversion, this is defined for every x (results outside (kLo, kHi) and NaN are
  // selected away at the end), and GCC keeps it to two operations: it turned the clamp into masked
  // constant blends, 10 more instructions per exp.
  constexpr float kRound = 12582912.0f;
  const float shifted = std::fma(x, 1.44269504088896341f, kRound);
  const float n = shifted - kRound;
  // r = x - n ln2, ln2 split in two; n * 0.693359375f is exact, so the first step is too
  const float r = std::fma(n, 2.12194440e-4f, std::fma(n, -0.693359375f, x));
  const float r2 = r * r;
  const float p01 = std::fma(1.6666665459e-1f, r, 5.0000001201e-1f);
  const float p23 = std::fma(8.3334519073e-3f, r, 4.1665795894e-2f);
  const float p45 = std::fma(1.9875691500e-4f, r, 1.3981999507e-3f);
  const float p = std::fma(std::fma(p45, r2, p23), r2, p01);
  const float y = p * r2 + r + 1.0f;  // not fused: fusing p * r2 + r takes the error past 1 ulp
  // times 2^n by adding n to y's exponent field (n << 23; the bits above n's shift out): exact, since
  // strictly between kLo and kHi the result is a normal float
  const float scaled = std::bit_cast<float>(std::bit_cast<uint32_t>(y) + (std::bit_cast<uint32_t>(shifted) << 23));
  const float normal = select(x > kLo, scaled, 0.0f);
  return select(x < kHi, normal, x + std::numeric_limits<float>::infinity());  // x >= kHi: inf; NaN stays NaN
#endif
}
PYDET_HD double exp_(double x) {
  return ::exp(x);
}
// log in float32, vectorisable for the same reason: x = m 2^e with m in (sqrt(1/2), sqrt(2)], then
// Cephes' degree-9 polynomial for log(1 + f), its steps fused as in exp_. At most 0.853 ulp from the
// exact value (checked against a double-precision log on every positive float, subnormals
// included: tests/math/ulp_check.cpp); log(0) is -inf, a negative x or NaN gives NaN, inf stays inf. CUDA uses logf.
PYDET_HD float log_(float x) {
#if defined(__CUDA_ARCH__)
  return ::logf(x);
#else
  // Positive subnormals are scaled by 2^23 into the normal range (their exponent corrected below).
  // Selects are select() rather than ?:, which GCC may turn back into branches (moving the work of an
  // arm into it), and a loop with branches does not vectorise.
  const bool subnormal = x < 1.17549435e-38f;
  const float xs = x * select(subnormal, 8388608.0f, 1.0f);
  // x = m 2^e with m in (sqrt(1/2), sqrt(2)], in one integer subtraction: taking away the bits of
  // sqrt(1/2) (rounded up, 0x3f3504f4) moves mantissas above sqrt(2) into the next exponent, and
  // adding them back to the low 23 bits gives m.
  constexpr uint32_t kSqrtHalf = 0x3f3504f4u;
  const uint32_t ix = std::bit_cast<uint32_t>(xs) - select(subnormal, kSqrtHalf + (23u << 23), kSqrtHalf);
  const int32_t e = static_cast<int32_t>(ix) >> 23;  // arithmetic shift: the exponent's sign is kept
  const float m = std::bit_cast<float>((ix & 0x007fffffu) + kSqrtHalf);
  const float f = m - 1.0f;
  const float z = f * f, z2 = z * z;
  // the polynomial in Estrin's order, as in exp_: 4 multiply-adds deep instead of 9
  const float p01 = std::fma(-2.4999993993e-1f, f, 3.3333331174e-1f);
  const float p23 = std::fma(-1.6668057665e-1f, f, 2.0000714765e-1f);
  const float p45 = std::fma(-1.2420140846e-1f, f, 1.4249322787e-1f);
  const float p67 = std::fma(-1.1514610310e-1f, f, 1.1676998740e-1f);
  const float p = std::fma(z2, std::fma(z2, 7.0376836292e-2f, std::fma(z, p67, p45)), std::fma(z, p23, p01));
  const float fe = static_cast<float>(e);
  float y = f * z * p;
  y = std::fma(fe, -2.12194440e-4f, y);
  y = std::fma(-0.5f, z, y);
  const float r = std::fma(fe, 0.693359375f, f + y);
  const float finite = select(x == 0.0f, -std::numeric_limits<float>::infinity(), r);
  const float positive = select(x < std::numeric_limits<float>::infinity(), finite, x);  // inf stays inf
  return select(x >= 0.0f, positive, std::numeric_limits<float>::quiet_NaN());           // x < 0 or NaN
#endif
}
PYDET_HD double log_(double x) {
  return ::log(x);
}
PYDET_HD double atan_(double x) {
  return ::atan(x);
}

// Branch-free select: the comparisons in the box formulas are data-dependent and unpredictable, so
// on the CPU they become bit masks instead of branches, and loops over many boxes stay free of
// control flow, which lets the compiler vectorise them across boxes. (Conditions are combined with
// `|`/`&`, not the short-circuiting `||`/`&&`, for the same reason.)
template <class S>
PYDET_HD S select(bool c, S x, S y) {
#if defined(__CUDA_ARCH__)
  return c ? x : y;
#else
  using U = std::conditional_t<sizeof(S) == 2, uint16_t, std::conditional_t<sizeof(S) == 4, uint32_t, uint64_t>>;
  const U m = U(0) - U(c);
  return std::bit_cast<S>(U((std::bit_cast<U>(x) & m) | (std::bit_cast<U>(y) & U(~m))));
#endif
}

// c ? x : y for plain values and, lane by lane, for dual numbers.
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S where(bool c, S x, S y) {
  return c ? x : y;
}
template <class S, int K>
PYDET_HD Dual<S, K> where(bool c, const Dual<S, K>& x, const Dual<S, K>& y) {
  Dual<S, K> r;
  r.v = select(c, x.v, y.v);
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) r.d[k] = select(c, x.d[k], y.d[k]);
  return r;
}

// torch.maximum/minimum on dual numbers: the larger (smaller) operand, NaN first; at a tie the value
// is shared and each side's gradient is halved.
template <class S, int K>
PYDET_HD Dual<S, K> pick_or_share(bool take_a, bool take_b, const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = select(take_a, a.v, b.v);
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) {
    const S shared = (a.d[k] + b.d[k]) / S(2);
    r.d[k] = select(take_a, a.d[k], select(take_b, b.d[k], shared));
  }
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> maximum(const Dual<S, K>& a, const Dual<S, K>& b) {
  return pick_or_share((a.v > b.v) | (a.v != a.v), (a.v < b.v) | (b.v != b.v), a, b);
}
template <class S, int K>
PYDET_HD Dual<S, K> minimum(const Dual<S, K>& a, const Dual<S, K>& b) {
  return pick_or_share((a.v < b.v) | (a.v != a.v), (a.v > b.v) | (b.v != b.v), a, b);
}
template <class S, int K>
PYDET_HD Dual<S, K> clamp_min(const Dual<S, K>& x, S lo) {
  return where(x.v < lo, Dual<S, K>(lo), x);
}
template <class S, int K>
PYDET_HD Dual<S, K> clamp(const Dual<S, K>& x, S lo, S hi) {
  return where(x.v < lo, Dual<S, K>(lo), where(x.v > hi, Dual<S, K>(hi), x));
}
template <class S, int K>
PYDET_HD Dual<S, K> detach(const Dual<S, K>& x) {
  return Dual<S, K>(x.v);
}
template <class S, int K>
PYDET_HD Dual<S, K> exp_(const Dual<S, K>& x) {
  Dual<S, K> r;
  r.v = exp_(x.v);
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) r.d[k] = x.d[k] * r.v;
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> atan_(const Dual<S, K>& x) {
  Dual<S, K> r;
  r.v = atan_(x.v);
  const S scale = S(1) / (S(1) + x.v * x.v);
  PYDET_UNROLL
  for (int k = 0; k < K; ++k) r.d[k] = x.d[k] * scale;
  return r;
}

}  // namespace pydet
