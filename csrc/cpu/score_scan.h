// Scanning scores for the few at or above a bound (candidate selection: multiclass_nms,
// topk_per_level). CPU kernels only.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/simd.h"

namespace pydet::nms {

//
// Candidate selection (multiclass_nms, topk_per_level) looks for the few scores at or above a bound
// among many. Scores are scanned in blocks of 64 with one vectorised comparison per block; only the
// blocks that hold a candidate are looked at further, through a 64-bit mask of their hits.

// Blocks of 64 scores: bit j of a block's hit mask is set when its score j is >= lo (NaN never is).
constexpr int64_t kScanBlock = 64;

template <class S, class A>
__attribute__((always_inline)) inline uint64_t hit_mask(const S* p, A lo) {
  uint64_t m = 0;
  if constexpr (std::is_same_v<S, A>) {  // float, double: a vector compare per 64 bytes
    using U = std::conditional_t<sizeof(A) == 4, uint32_t, uint64_t>;
    constexpr int64_t kLanes = simd::kV64<A>, kLaneBits = 8 * sizeof(U);
    simd::V64<U> weight;  // lane l -> bit l
    for (int64_t l = 0; l < kLanes; ++l) weight[l] = U(1) << l;
    simd::V64<U> acc[kScanBlock / kLaneBits] = {};  // bit b of the block in bit b % kLaneBits of a lane
    for (int64_t q = 0; q < kScanBlock; q += kLanes) {
      const simd::V64<U> bits = (simd::V64<U>)(simd::load64(p + q) >= lo) & weight;
      acc[q / kLaneBits] |= bits << U(q % kLaneBits);
    }
    for (int64_t a = 0; a < kScanBlock / kLaneBits; ++a) m |= uint64_t(simd::or_lanes<U>(acc[a])) << (a * kLaneBits);
  } else {  // float16, bfloat16
    for (int64_t j = 0; j < kScanBlock; ++j) m |= uint64_t(static_cast<A>(p[j]) >= lo) << j;
  }
  return m;
}

// The offset of the first whole block of p[0, n) holding a score >= lo, with its hit mask; the offset
// of the partial last block (n rounded down to a block) when there is none. Blocks without one, the
// common case under a selective threshold, cost one vectorised comparison.
template <class S, class A>
PYDET_SIMD_INLINE int64_t next_hit_block(const S* __restrict p, int64_t n, A lo, uint64_t& mask) {
  int64_t i = 0;
  for (; i + kScanBlock <= n; i += kScanBlock) {
    int hit = 0;
    for (int64_t j = 0; j < kScanBlock; ++j) hit |= static_cast<A>(p[i + j]) >= lo;
    if (hit) {
      mask = hit_mask<S, A>(p + i, lo);
      return i;
    }
  }
  return i;
}

// Calls visit(i), in increasing order, for the positions i of p[0, n) whose score is >= lo. lo is
// read again after each call, so visit may raise it (visit must then check the score against it).
template <class S, class A, class Visit>
void for_each_at_least(const S* p, int64_t n, const A& lo, Visit&& visit) {
  int64_t i = 0;
  const auto next_hit = [&](uint64_t& mask) {
    return simd::dispatch([&] { return next_hit_block<S, A>(p + i, n - i, lo, mask); });
  };
  for (uint64_t mask = 0; (i += next_hit(mask)) + kScanBlock <= n; i += kScanBlock) {
    for (; mask != 0; mask &= mask - 1) visit(i + __builtin_ctzll(mask));
  }
  for (; i < n; ++i) {
    if (static_cast<A>(p[i]) >= lo) visit(i);
  }
}

}  // namespace pydet::nms
