// Sigmoid focal loss (Lin et al., RetinaNet) per element, and its two partial derivatives, with
// torchvision's formula (torchvision.ops.sigmoid_focal_loss):
//   p    = sigmoid(x)
//   ce   = binary_cross_entropy_with_logits(x, t) = (1 - t) x - log_sigmoid(x)
//   m    = 1 - (p t + (1 - p)(1 - t))                       (1 - p_t)
//   loss = a_t ce m^gamma,  a_t = alpha t + (1 - alpha)(1 - t)   (a_t = 1 when alpha < 0)
// Derivatives (the ones PyTorch's autograd computes from that graph; BCE's is p - t):
//   dloss/dx = a_t ((p - t) m^gamma + ce gamma m^(gamma-1) (1 - 2t) p (1 - p))
//   dloss/dt = a_t (-x m^gamma + ce gamma m^(gamma-1) (1 - 2p)) + (2 alpha - 1) ce m^gamma   [alpha >= 0]
// gamma m^(gamma-1) is 0 when gamma == 0, as in PyTorch's pow backward. One exp per element: p and
// log_sigmoid both come from e = exp(-|x|). Everything is branch-free so the CPU loops vectorise.
#pragma once

#include <cmath>

#include "common/dual.h"

namespace pydet::losses {

// m^gamma for the exponents that have a cheap exact form; kAny uses pow.
enum class Gamma : int8_t { kZero, kOne, kTwo, kAny };

inline Gamma classify_gamma(double gamma) {
  return gamma == 0.0 ? Gamma::kZero : gamma == 1.0 ? Gamma::kOne : gamma == 2.0 ? Gamma::kTwo : Gamma::kAny;
}

template <class T>
struct FocalParams {
  T alpha, gamma;
  bool weighted;  // alpha >= 0
};

// log(1 + e) for e in [0, 1], accurate when 1 + e rounds to 1 (Goldberg's correction).
template <class T>
PYDET_HD T log1p_small(T e) {
  const T u = T(1) + e;
  return select(u == T(1), e, log_(u) * (e / (u - T(1))));
}

template <Gamma G, class T>
PYDET_HD T pow_gamma(T m, T gamma) {
  if constexpr (G == Gamma::kZero) {
    return T(1);
  } else if constexpr (G == Gamma::kOne) {
    return m;
  } else if constexpr (G == Gamma::kTwo) {
    return m * m;
  } else {
    return std::pow(m, gamma);
  }
}

// d m^gamma / d m
template <Gamma G, class T>
PYDET_HD T pow_gamma_grad(T m, T gamma) {
  if constexpr (G == Gamma::kZero) {
    return T(0);
  } else if constexpr (G == Gamma::kOne) {
    return T(1);
  } else if constexpr (G == Gamma::kTwo) {
    return T(2) * m;
  } else {
    return gamma * std::pow(m, gamma - T(1));
  }
}

template <class T>
struct FocalTerms {
  T p, ce, m, a;
};

template <class T>
PYDET_HD FocalTerms<T> focal_terms(T x, T t, const FocalParams<T>& f) {
  const T e = exp_(-(x < T(0) ? -x : x));  // NaN stays NaN
  const T p = select(x >= T(0), T(1), e) / (T(1) + e);
  const T log_sigmoid = (x < T(0) ? x : T(0)) - log1p_small(e);
  const T ce = (T(1) - t) * x - log_sigmoid;
  const T m = T(1) - (p * t + (T(1) - p) * (T(1) - t));
  const T a = f.weighted ? f.alpha * t + (T(1) - f.alpha) * (T(1) - t) : T(1);
  return {p, ce, m, a};
}

template <Gamma G, class T>
PYDET_HD T focal_loss(T x, T t, const FocalParams<T>& f) {
  const FocalTerms<T> q = focal_terms(x, t, f);
  return q.a * (q.ce * pow_gamma<G>(q.m, f.gamma));
}

template <class T>
struct FocalGrad {
  T dx, dt;
};

template <Gamma G, bool kTargets, class T>
PYDET_HD FocalGrad<T> focal_loss_grad(T x, T t, const FocalParams<T>& f) {
  const FocalTerms<T> q = focal_terms(x, t, f);
  const T mod = pow_gamma<G>(q.m, f.gamma);
  const T ce_dmod = q.ce * pow_gamma_grad<G>(q.m, f.gamma);
  FocalGrad<T> g{q.a * ((q.p - t) * mod + ce_dmod * ((T(1) - T(2) * t) * (q.p * (T(1) - q.p)))), T(0)};
  if constexpr (kTargets) {
    g.dt = q.a * (ce_dmod * (T(1) - T(2) * q.p) - x * mod);
    if (f.weighted) g.dt += (T(2) * f.alpha - T(1)) * (q.ce * mod);
  }
  return g;
}

}  // namespace pydet::losses
