// Pointwise activations fused into pydet's convolution kernels, with PyTorch's forward formulas and
// its backward conventions at the kinks (torch.nn.functional.relu/relu6/silu/hardswish):
//   relu       y = max(x, 0)            dy/dx = x > 0
//   relu6      y = min(max(x, 0), 6)    dy/dx = 0 < x < 6        (hardtanh_backward)
//   silu       y = x sigmoid(x)         dy/dx = s (1 + x (1 - s))
//   hardswish  y = x relu6(x + 3) / 6   dy/dx = 0 (x < -3), x / 3 + 1/2 (x <= 3), 1 (x > 3)
// NaN propagates through every forward, as in PyTorch.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/dual.h"

namespace pydet {

enum class Activation : int8_t { kNone, kRelu, kRelu6, kSilu, kHardswish };

// Calls f(std::integral_constant<Activation, a>) so kernels are compiled once per activation.
template <class F>
void with_activation(Activation a, const F& f) {
  switch (a) {
    case Activation::kNone:
      return f(std::integral_constant<Activation, Activation::kNone>{});
    case Activation::kRelu:
      return f(std::integral_constant<Activation, Activation::kRelu>{});
    case Activation::kRelu6:
      return f(std::integral_constant<Activation, Activation::kRelu6>{});
    case Activation::kSilu:
      return f(std::integral_constant<Activation, Activation::kSilu>{});
    case Activation::kHardswish:
      return f(std::integral_constant<Activation, Activation::kHardswish>{});
  }
}

template <class T>
PYDET_HD T sigmoid_(T x) {
  return T(1) / (T(1) + exp_(-x));
}

template <Activation A, class T>
PYDET_HD T activate(T x) {
  if constexpr (A == Activation::kRelu) {
    return select(x < T(0), T(0), x);
  } else if constexpr (A == Activation::kRelu6) {
    return select(x < T(0), T(0), select(x > T(6), T(6), x));
  } else if constexpr (A == Activation::kSilu) {
    return x * sigmoid_(x);
  } else if constexpr (A == Activation::kHardswish) {
    const T r = select(x + T(3) < T(0), T(0), select(x + T(3) > T(6), T(6), x + T(3)));
    return x * r / T(6);  // PyTorch's order of operations
  } else {
    return x;
  }
}

// d activate(x) / dx, with PyTorch's choice at the kinks.
template <Activation A, class T>
PYDET_HD T activate_grad(T x) {
  if constexpr (A == Activation::kRelu) {
    return select(x > T(0), T(1), T(0));
  } else if constexpr (A == Activation::kRelu6) {
    return select((x > T(0)) & (x < T(6)), T(1), T(0));
  } else if constexpr (A == Activation::kSilu) {
    const T s = sigmoid_(x);
    return s * (T(1) + x * (T(1) - s));
  } else if constexpr (A == Activation::kHardswish) {
    return select(x < T(-3), T(0), select(x <= T(3), x / T(3) + T(0.5), T(1)));
  } else {
    return T(1);
  }
}

}  // namespace pydet
