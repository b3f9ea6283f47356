// Boxes in structure-of-arrays form and the suppression test over a run of them (IoU > threshold,
// vectorised): what greedy and multiclass NMS check each candidate against. CPU kernels only.
#pragma once

#include <algorithm>
#include <vector>

#include "common/nms_math.h"
#include "common/simd.h"

namespace pydet::nms {

template <class T>
struct SoaBoxes {
  std::vector<T> x1, y1, x2, y2, area;

  void resize(size_t n) {
    x1.resize(n);
    y1.resize(n);
    x2.resize(n);
    y2.resize(n);
    area.resize(n);
  }
  void set(size_t i, const BoxTerms<T>& t) {
    x1[i] = t.x1;
    y1[i] = t.y1;
    x2[i] = t.x2;
    y2[i] = t.y2;
    area[i] = t.area;
  }
  void push(const BoxTerms<T>& t) {
    x1.push_back(t.x1);
    y1.push_back(t.y1);
    x2.push_back(t.x2);
    y2.push_back(t.y2);
    area.push_back(t.area);
  }
  BoxTerms<T> terms(size_t i) const { return stored_terms(x1[i], y1[i], x2[i], y2[i], area[i]); }
  size_t size() const { return x1.size(); }
};

// Does any of the n boxes (SoA, starting at offset) have IoU > t with b? No early exit inside, so the
// loop vectorises; callers pass short runs.
template <class T>
PYDET_SIMD_INLINE bool any_iou_above(const BoxTerms<T> b, const T* __restrict x1, const T* __restrict y1,
                                     const T* __restrict x2, const T* __restrict y2, const T* __restrict area,
                                     int64_t n, T t) {
  int hit = 0;
  for (int64_t j = 0; j < n; ++j) {
    const BoxTerms<T> a = stored_terms(x1[j], y1[j], x2[j], y2[j], area[j]);
    hit |= nms_iou(a, b) > t;
  }
  return hit != 0;
}

template <class T>
bool any_iou_above(const BoxTerms<T>& b, const SoaBoxes<T>& s, size_t begin, size_t n, T t) {
  constexpr size_t kRun = 64;  // early exit between runs
  return simd::dispatch([&] {
    for (size_t k = 0; k < n; k += kRun) {
      const size_t m = std::min(kRun, n - k);
      const size_t o = begin + k;
      if (any_iou_above<T>(b, s.x1.data() + o, s.y1.data() + o, s.x2.data() + o, s.y2.data() + o, s.area.data() + o,
                           static_cast<int64_t>(m), t)) {
        return true;
      }
    }
    return false;
  });
}

}  // namespace pydet::nms
