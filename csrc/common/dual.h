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
#include <type_traits>

// Host/device function that must be inlined: the dual-number operations are only fast once the
// compiler sees through them (kept out of line, a Dual<float, 8> op becomes a call per add).
#if defined(__CUDACC__)
#define PYDET_HD __host__ __device__ __forceinline__
#else
#define PYDET_HD inline __attribute__((always_inline))
#endif

namespace pydet {

template <class S, int K>
struct Dual {
  S v;
  S d[K];

  PYDET_HD Dual() : v(0) {
    for (int k = 0; k < K; ++k) d[k] = S(0);
  }
  template <class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>
  PYDET_HD Dual(A value) : v(static_cast<S>(value)) {
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
  for (int k = 0; k < K; ++k) r.d[k] = -a.d[k];
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> operator+(const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = a.v + b.v;
  for (int k = 0; k < K; ++k) r.d[k] = a.d[k] + b.d[k];
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> operator-(const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = a.v - b.v;
  for (int k = 0; k < K; ++k) r.d[k] = a.d[k] - b.d[k];
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> operator*(const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = a.v * b.v;
  for (int k = 0; k < K; ++k) r.d[k] = a.d[k] * b.v + a.v * b.d[k];
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> operator/(const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = a.v / b.v;
  // d(a/b) = (da - (a/b) db) / b
  for (int k = 0; k < K; ++k) r.d[k] = (a.d[k] - r.v * b.d[k]) / b.v;
  return r;
}
#define PYDET_DUAL_MIXED_OP(op)                                                  \
  template <class S, int K>                                                      \
  PYDET_HD Dual<S, K> operator op(const Dual<S, K>& a, S b) {      \
    return a op Dual<S, K>(b);                                                   \
  }                                                                              \
  template <class S, int K>                                                      \
  PYDET_HD Dual<S, K> operator op(S a, const Dual<S, K>& b) {      \
    return Dual<S, K>(a) op b;                                                   \
  }
PYDET_DUAL_MIXED_OP(+)
PYDET_DUAL_MIXED_OP(-)
PYDET_DUAL_MIXED_OP(*)
PYDET_DUAL_MIXED_OP(/)
#undef PYDET_DUAL_MIXED_OP

// Comparisons look at values only.
#define PYDET_DUAL_CMP(op)                                                        \
  template <class S, int K>                                                       \
  PYDET_HD bool operator op(const Dual<S, K>& a, const Dual<S, K>& b) { \
    return a.v op b.v;                                                            \
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
  return (a > b || a != a) ? a : b;
}
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S minimum(S a, S b) {
  return (a < b || a != a) ? a : b;
}
// torch.clamp(x, min=lo): NaN stays NaN.
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S clamp_min(S x, S lo) {
  return x < lo ? lo : x;
}
// torch.clamp(x, min=lo, max=hi) with lo <= hi: NaN stays NaN.
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S clamp(S x, S lo, S hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
PYDET_HD S detach(S x) {
  return x;
}
PYDET_HD float atan_(float x) {
  return ::atanf(x);
}
PYDET_HD double atan_(double x) {
  return ::atan(x);
}

// Branch-free select: the comparisons in the box formulas are data-dependent and unpredictable, so
// on the CPU they become bit masks (vectorisable) instead of branches.
template <class S>
PYDET_HD S select(bool c, S x, S y) {
#if defined(__CUDA_ARCH__)
  return c ? x : y;
#else
  using U = std::conditional_t<sizeof(S) == 4, uint32_t, uint64_t>;
  const U m = U(0) - U(c);
  return std::bit_cast<S>((std::bit_cast<U>(x) & m) | (std::bit_cast<U>(y) & ~m));
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
  for (int k = 0; k < K; ++k) r.d[k] = select(c, x.d[k], y.d[k]);
  return r;
}

// torch.maximum/minimum on dual numbers: the larger (smaller) operand, NaN first; at a tie the value
// is shared and each side's gradient is halved.
template <class S, int K>
PYDET_HD Dual<S, K> pick_or_share(bool take_a, bool take_b, const Dual<S, K>& a, const Dual<S, K>& b) {
  Dual<S, K> r;
  r.v = select(take_a, a.v, b.v);
  for (int k = 0; k < K; ++k) {
    const S shared = (a.d[k] + b.d[k]) / S(2);
    r.d[k] = select(take_a, a.d[k], select(take_b, b.d[k], shared));
  }
  return r;
}
template <class S, int K>
PYDET_HD Dual<S, K> maximum(const Dual<S, K>& a, const Dual<S, K>& b) {
  return pick_or_share(a.v > b.v || a.v != a.v, a.v < b.v || b.v != b.v, a, b);
}
template <class S, int K>
PYDET_HD Dual<S, K> minimum(const Dual<S, K>& a, const Dual<S, K>& b) {
  return pick_or_share(a.v < b.v || a.v != a.v, a.v > b.v || b.v != b.v, a, b);
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
PYDET_HD Dual<S, K> atan_(const Dual<S, K>& x) {
  Dual<S, K> r;
  r.v = atan_(x.v);
  const S scale = S(1) / (S(1) + x.v * x.v);
  for (int k = 0; k < K; ++k) r.d[k] = x.d[k] * scale;
  return r;
}

}  // namespace pydet
