// CPU kernel of anchor_grid (front end: ops/anchors.h). Tasks are equal ranges of output rows, so
// levels of very different sizes still split evenly across threads; within a task the rows are
// written in order, one feature-map line at a time. Along a line only one axis's shift changes, so
// the coordinates of the other axis are computed once per line and the loop over a cell's anchors
// is a flat, vectorisable select between "base + shift" and those constants.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/simd.h"
#include "ops/anchors.h"

namespace pydet::anchors {
namespace {

// 256 KiB of float output per task at least: below that, waking a second thread costs more than it saves.
constexpr int64_t kGrainRows = 16384;

template <class T>
using LaneInt = std::conditional_t<sizeof(T) == 8, int64_t, std::conditional_t<sizeof(T) == 4, int32_t, int16_t>>;

// kBoxes boxes of T (4 * kBoxes lanes) and the matching lane mask, as GCC/Clang vector-extension
// types. The location-major lines take kBoxes from the running variant's vector width (kGroup):
// a vector wider than the ISA's is split by the compiler, but a broadcast of the shift into it was
// built lane by lane through the stack for AVX2 and SSE, once per cell, which cost more than the
// cell's stores (the AVX2 variant ran 14x slower than AVX-512).
template <class T, int kBoxes>
struct BoxLanes {
  using Values = simd::Vec<T, int(4 * kBoxes * sizeof(T))>;
  using Mask = simd::Vec<LaneInt<T>, int(4 * kBoxes * sizeof(T))>;
};
// At most 4: the lane mask (LaneMask) holds four boxes.
template <class T, int kVectorBytes>
constexpr int kGroup = std::clamp<int>(kVectorBytes / int(4 * sizeof(T)), 1, 4);

// Lane masks: all ones in the lanes shifted along x (x1, and x2 for corner boxes), for 4 boxes.
// They reach the kernels as data, not as compile-time constants: given a constant mask, GCC rewrites
// the blend into lane-by-lane shuffles that cost several times the blend.
template <class I>
struct LaneMask {
  alignas(64) I lanes[16];
  explicit LaneMask(bool corners) {
    for (int k = 0; k < 16; ++k) lanes[k] = (corners ? k % 2 == 0 : k % 4 == 0) ? I(-1) : I(0);
  }
};

// kBoxes consecutive anchor boxes sharing the shift s: lanes shifted along x are (b + s) * scale_x,
// the others are the line's constants f. float and double run as lane-wise vector operations (the
// same IEEE operations, lane by lane); half and bfloat16 value by value in float.
template <class T, int kBoxes>
PYDET_HD void write_boxes(const T* b, const T* f, const LaneInt<T>* mask, T s, at::opmath_type<T> scale_x, T* o) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    using V = typename BoxLanes<T, kBoxes>::Values;
    using Mask = typename BoxLanes<T, kBoxes>::Mask;
    V base;
    Mask shifted, fixed;
    std::memcpy(&base, b, sizeof(V));
    std::memcpy(&fixed, f, sizeof(V));
    std::memcpy(&shifted, mask, sizeof(Mask));
    const V moved = (base + s) * scale_x;
    Mask moved_bits;
    std::memcpy(&moved_bits, &moved, sizeof(V));
    // The select as bit operations on the all-ones/zero lane mask: a vector ?: wider than the ISA's
    // vectors (64 bytes on AVX2 and SSE) is lowered lane by lane, with a branch per lane.
    // Stored as one unaligned vector: a 64-byte memcpy compiled for AVX2 went through the stack in
    // 16-byte pieces (ymm stored, xmm halves reloaded, which store forwarding cannot serve).
    typedef Mask Unaligned __attribute__((aligned(alignof(T))));
    *reinterpret_cast<Unaligned*>(o) = (moved_bits & shifted) | (fixed & ~shifted);
  } else {
    for (int k = 0; k < 4 * kBoxes; ++k) o[k] = mask[k] ? anchor_coord<T, true>(b[k], s, scale_x) : f[k];
  }
}

// One location-major cell (x): anchors [a0, a1) with shift s. Anchors go kGroup at a time (one
// vector of the running variant: four floats' boxes with AVX-512); with at least kGroup, a
// remainder is covered by a last group that overlaps the previous one (it rewrites the same
// values), so no scalar tail is left.
template <class T, int kGroup>
PYDET_HD void write_cell(const T* base, const T* fixed, const LaneInt<T>* mask, int64_t a0, int64_t a1, T s,
                         at::opmath_type<T> scale_x, T* o) {
  if (a1 - a0 < kGroup) {
    for (int64_t a = a0; a < a1; ++a) write_boxes<T, 1>(base + 4 * a, fixed + 4 * a, mask, s, scale_x, o + 4 * a);
    return;
  }
  int64_t a = a0;
  for (; a + kGroup <= a1; a += kGroup) {
    write_boxes<T, kGroup>(base + 4 * a, fixed + 4 * a, mask, s, scale_x, o + 4 * a);
  }
  if (a < a1) {
    const int64_t last = a1 - kGroup;
    write_boxes<T, kGroup>(base + 4 * last, fixed + 4 * last, mask, s, scale_x, o + 4 * last);
  }
}

// Location-major line of feature-map row y: rows j = x * A + a for j in [j0, j1), written to out.
// fixed[4a + c] holds anchor a's coordinates that do not depend on x (y coordinates, unshifted x2).
// Only a task's first and last cells can be partial; the cells between are whole.
template <int kGroup, class T>
PYDET_SIMD_INLINE void location_major_line(const T* __restrict base, const T* __restrict fixed,
                                           const LaneInt<T>* __restrict mask, int64_t A, const T* __restrict sx,
                                           at::opmath_type<T> scale_x, int64_t j0, int64_t j1, T* __restrict out) {
  int64_t x = j0 / A, j = j0;
  if (j > x * A) {  // partial first cell: anchors [j - x A, a1), written from row j on
    const int64_t a0 = j - x * A, a1 = std::min(A, j1 - x * A);
    write_cell<T, kGroup>(base, fixed, mask, a0, a1, sx[x], scale_x, out - 4 * a0);
    j = x * A + a1;
    ++x;
  }
  for (; j + A <= j1; j += A, ++x) write_cell<T, kGroup>(base, fixed, mask, 0, A, sx[x], scale_x, out + 4 * (j - j0));
  if (j < j1) write_cell<T, kGroup>(base, fixed, mask, 0, j1 - j, sx[x], scale_x, out + 4 * (j - j0));  // partial last
}

// Anchor-major line (anchor a, feature-map row y): rows j = x for j in [j0, j1).
template <class T>
PYDET_SIMD_INLINE void anchor_major_line(const T* __restrict b, const T* __restrict fixed,
                                         const LaneInt<T>* __restrict mask, const T* __restrict sx,
                                         at::opmath_type<T> scale_x, int64_t j0, int64_t j1, T* __restrict out) {
  for (int64_t x = j0; x < j1; ++x) write_boxes<T, 1>(b, fixed, mask, sx[x], scale_x, out + (x - j0) * 4);
}

// The x-independent coordinates of anchors [a0, a0 + n) on feature-map row y.
template <class T>
void fixed_coords(const T* base, int64_t n, T sy, at::opmath_type<T> scale_x, at::opmath_type<T> scale_y,
                  bool shift_corners, T* fixed) {
  for (int64_t a = 0; a < n; ++a) {
    const T* b = base + 4 * a;
    T* f = fixed + 4 * a;
    f[0] = T(0);  // always shifted along x
    f[1] = anchor_coord<T, true>(b[1], sy, scale_y);
    f[2] = shift_corners ? T(0) : anchor_coord<T, false>(b[2], T(0), scale_x);
    f[3] = shift_corners ? anchor_coord<T, true>(b[3], sy, scale_y) : anchor_coord<T, false>(b[3], T(0), scale_y);
  }
}

template <class T>
void write_rows(const Level& L, int64_t begin, int64_t end, bool anchor_major, bool corners, T* out) {
  using Acc = at::opmath_type<T>;
  const T* base = static_cast<const T*>(L.base);
  const T* sx = static_cast<const T*>(L.shifts_x);
  const T* sy = static_cast<const T*>(L.shifts_y);
  const Acc scale_x(L.scale_x), scale_y(L.scale_y);
  const int64_t A = L.anchors, H = L.height;
  const int64_t line_rows = anchor_major ? L.width : L.width * A;
  std::vector<T> fixed(anchor_major ? 4 : 4 * A);
  const LaneMask<LaneInt<T>> mask(corners);
  for (int64_t line = begin / line_rows; line * line_rows < end; ++line) {
    const int64_t j0 = std::max<int64_t>(begin - line * line_rows, 0);
    const int64_t j1 = std::min<int64_t>(end - line * line_rows, line_rows);
    T* o = out + (line * line_rows + j0) * 4;
    if (!anchor_major) {
      fixed_coords(base, A, sy[line], scale_x, scale_y, corners, fixed.data());
      simd::dispatch([&](auto isa) {
        location_major_line<kGroup<T, decltype(isa)::kVectorBytes>>(base, fixed.data(), mask.lanes, A, sx, scale_x, j0,
                                                                    j1, o);
      });
    } else {
      const T* b = base + 4 * (line / H);
      fixed_coords(b, 1, sy[line % H], scale_x, scale_y, corners, fixed.data());
      simd::dispatch([&] { anchor_major_line<T>(b, fixed.data(), mask.lanes, sx, scale_x, j0, j1, o); });
    }
  }
}

struct CpuKernels {
  static void grid(const std::vector<Level>& levels, bool anchor_major, bool shift_corners, at::Tensor& out) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "anchor_grid", [&] {
      scalar_t* op = out.data_ptr<scalar_t>();
      at::parallel_for(0, out.size(0), kGrainRows, [&](int64_t begin, int64_t end) {
        for (const Level& L : levels) {
          const int64_t rows = L.anchors * L.height * L.width;
          const int64_t lo = std::max(begin, L.row_start), hi = std::min(end, L.row_start + rows);
          if (lo >= hi) continue;
          write_rows<scalar_t>(L, lo - L.row_start, hi - L.row_start, anchor_major, shift_corners,
                               op + L.row_start * 4);
        }
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pydet, CPU, m) {
  Ops<CpuKernels>::register_all(m);
}

TORCH_LIBRARY_IMPL(pydet, Meta, m) {  // shapes and checks only: see `computes` in common/checks.h
  Ops<CpuKernels>::register_all(m);
}

}  // namespace pydet::anchors
