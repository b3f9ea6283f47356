// The accuracy claims of dual.h's float32 atan_, exp_ and log_, checked: every float (or every
// stride-th, for CI) against the double-precision libm result, printing the maximum error in ulp of
// the correctly rounded float and checking the special cases (0, -0, inf, NaN, negative logs,
// exp's flush below the smallest normal and overflow). Exits 1 when a bound or a special case fails.
//
//   c++ -O2 -std=c++20 -ffp-contract=off -Icsrc -isystem <torch>/include tests/math/ulp_check.cpp
//   ./a.out [stride]    one float in `stride` (CI: 251); 1 checks all 2^32 (minutes on one core)
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <limits>

#include "common/dual.h"

namespace {

// The distance from got to the exact value in units of the ulp of the float nearest the exact value.
double ulp_error(float got, double exact) {
  const float nearest = static_cast<float>(exact);
  const int exponent = nearest == 0.0f ? -126 : std::max(std::ilogb(nearest), -126);
  return std::fabs(double(got) - exact) / std::ldexp(1.0, exponent - 23);
}

struct Tally {
  const char* name;
  double bound;  // the claim in dual.h
  double worst = 0.0;
  float worst_x = 0.0f;
  uint64_t checked = 0, special_failures = 0;

  void error(float x, float got, double exact) {
    const double e = ulp_error(got, exact);
    ++checked;
    if (e > worst) {
      worst = e;
      worst_x = x;
    }
  }
  void special(bool ok, float x, float got) {
    if (!ok && special_failures++ < 5) std::printf("  %s(%a) = %a: wrong special case\n", name, x, got);
  }
  bool report() const {
    const bool ok = worst <= bound && special_failures == 0;
    std::printf("%-5s max %.4f ulp (bound %.4f) at x = %a over %llu finite results; %llu special-case failures: %s\n",
                name, worst, bound, worst_x, static_cast<unsigned long long>(checked),
                static_cast<unsigned long long>(special_failures), ok ? "ok" : "FAILED");
    return ok;
  }
};

// exp_ flushes results below the smallest normal float to 0 and gives inf from its overflow bound on.
constexpr float kExpLo = -87.3365447505f, kExpHi = 88.7228391117f;

}  // namespace

int main(int argc, char** argv) {
  const uint64_t stride = argc > 1 ? std::max<uint64_t>(1, std::strtoull(argv[1], nullptr, 10)) : 251;
  Tally atan_t{"atan_", 0.86}, exp_t{"exp_", 0.9994}, log_t{"log_", 0.853};
  for (uint64_t bits = 0; bits <= 0xffffffffull; bits += stride) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(bits));
    const double xd = x;
    const float a = pydet::atan_(x), e = pydet::exp_(x), l = pydet::log_(x);
    if (std::isnan(x)) {
      atan_t.special(std::isnan(a), x, a);
      exp_t.special(std::isnan(e), x, e);
      log_t.special(std::isnan(l), x, l);
      continue;
    }
    if (std::isinf(x)) {
      atan_t.special(a == std::copysign(float(M_PI / 2), x), x, a);
    } else {
      atan_t.special(!(x == 0.0f) || std::signbit(a) == std::signbit(x), x, a);
      atan_t.error(x, a, std::atan(xd));
    }
    if (x <= kExpLo) {
      exp_t.special(e == 0.0f, x, e);
    } else if (x >= kExpHi) {
      exp_t.special(std::isinf(e) && e > 0, x, e);
    } else {
      exp_t.error(x, e, std::exp(xd));
    }
    if (x < 0.0f) {
      log_t.special(std::isnan(l), x, l);
    } else if (x == 0.0f) {
      log_t.special(std::isinf(l) && l < 0, x, l);
    } else if (std::isinf(x)) {
      log_t.special(std::isinf(l) && l > 0, x, l);
    } else {
      log_t.error(x, l, std::log(xd));
    }
  }
  std::printf("one float in %llu:\n", static_cast<unsigned long long>(stride));
  const bool ok = atan_t.report() & exp_t.report() & log_t.report();
  return ok ? 0 : 1;
}
