// Channel blocks: kLanes<T> planes of a feature map transposed into one [pixels][kLanes] block, so
// that a per-pixel computation runs as one vector operation across kLanes channels whatever the
// plane's geometry (the depthwise convolution's and roi_align's channel-blocked paths).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/simd.h"

namespace pydet::cpu {

template <class T>
constexpr int64_t kLanes = 64 / sizeof(T);

// The transposes between planes and channel blocks move kLanes x kLanes tiles (kLanes pixels of
// kLanes planes) through simd::transpose_tile, so both sides are read and written in full vectors.

// `used` planes of rows x width (plane stride rows * width) -> buf[((r + top) pitch + col + left) L + l]
// of a [rows + 2 top][pitch][L] block, lanes l >= used zero. Only the interior is written: the
// caller's buffer starts zeroed and keeps its geometry, so the padding stays zero.
template <int kNative, class T>
PYDET_SIMD_INLINE void load_block(const T* __restrict planes, int64_t used, int64_t rows, int64_t width, int64_t top,
                                  int64_t left, int64_t pitch, T* __restrict buf) {
  constexpr int64_t L = kLanes<T>;
  using V = simd::V64<T>;
  const int64_t plane = rows * width;
  V tile[L];
  int64_t r = 0, col = 0;  // of pixel i0 + k, advanced without divisions
  for (int64_t i0 = 0; i0 < plane; i0 += L) {
    const int64_t count = std::min(L, plane - i0);
    for (int64_t l = 0; l < L; ++l) {
      if (l < used && count == L) {
        tile[l] = simd::load64(planes + l * plane + i0);
      } else {
        tile[l] = V{};
        if (l < used) std::memcpy(&tile[l], planes + l * plane + i0, count * sizeof(T));
      }
    }
    simd::transpose_tile<T, kNative>(tile);  // tile[k] = pixel i0 + k, one lane per plane
    for (int64_t k = 0; k < count; ++k) {
      simd::store64(buf + ((r + top) * pitch + col + left) * L, tile[k]);
      if (++col == width) {
        col = 0;
        ++r;
      }
    }
  }
}

// plane(l)[r, col] = src[(r src_pitch + col) L + l] for l < used: a transposed block back to
// `used` planes of rows x width, dst_plane apart.
template <int kNative, class T>
PYDET_SIMD_INLINE void store_block(const T* __restrict src, int64_t src_pitch, int64_t rows, int64_t width,
                                   int64_t used, T* __restrict dst, int64_t dst_plane) {
  constexpr int64_t L = kLanes<T>;
  using V = simd::V64<T>;
  const int64_t plane = rows * width;
  V tile[L];
  int64_t r = 0, col = 0;  // of pixel i0 + k, advanced without divisions
  for (int64_t i0 = 0; i0 < plane; i0 += L) {
    const int64_t count = std::min(L, plane - i0);
    for (int64_t k = 0; k < L; ++k) {
      tile[k] = k < count ? simd::load64(src + (r * src_pitch + col) * L) : V{};
      if (k < count && ++col == width) {
        col = 0;
        ++r;
      }
    }
    simd::transpose_tile<T, kNative>(tile);  // tile[l] = plane l's pixels i0 .. i0 + kLanes - 1
    for (int64_t l = 0; l < used; ++l) {
      if (count == L) {
        simd::store64(dst + l * dst_plane + i0, tile[l]);
      } else {
        std::memcpy(dst + l * dst_plane + i0, &tile[l], count * sizeof(T));
      }
    }
  }
}

}  // namespace pydet::cpu
