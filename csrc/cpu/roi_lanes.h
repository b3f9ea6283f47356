// Lane-vector helpers of the CPU RoI sampling kernels (roi_align, multi_scale_roi_align,
// roi_align_rotated): an image's channel block of kLanes channels transposed to [pixels][kLanes]
// (cpu/channel_blocks.h), so each bilinear sample is one vector operation across the block, computing
// in every lane exactly what common/roi_align_math.h computes for one channel.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "common/roi_align_math.h"
#include "common/simd.h"
#include "cpu/channel_blocks.h"

namespace pydet::roi {

using cpu::kLanes;

// Channels [c0, c0 + used) of image b -> block[pixel * L + lane], lanes >= used 0: from planes (NCHW),
// or from pixels of C channels (channels_last, read in place).
template <int kNative, class T>
PYDET_SIMD_INLINE void to_block(const T* input, bool channels_last, int64_t b, int64_t c0, int64_t used,
                                int64_t channels, int64_t height, int64_t width, T* block) {
  const int64_t plane = height * width;
  if (channels_last) {
    constexpr int64_t L = kLanes<T>;
    const T* pixels = input + b * plane * channels + c0;
    for (int64_t p = 0; p < plane; ++p) {
      if constexpr (std::is_floating_point_v<T>) {
        if (used == L) {  // one 64-byte line a pixel
          simd::store64(block + p * L, simd::load64(pixels + p * channels));
          continue;
        }
      }
      std::copy(pixels + p * channels, pixels + p * channels + used, block + p * L);
      std::fill(block + p * L + used, block + (p + 1) * L, T(0));
    }
    return;
  }
  const T* planes = input + (b * channels + c0) * plane;
  if constexpr (std::is_floating_point_v<T>) {
    cpu::load_block<kNative>(planes, used, height, width, 0, 0, width, block);
  } else {
    constexpr int64_t L = kLanes<T>;
    for (int64_t p = 0; p < plane; ++p) {
      for (int64_t l = 0; l < L; ++l) block[p * L + l] = l < used ? planes[l * plane + p] : T(0);
    }
  }
}

template <int kNative, class T>
PYDET_SIMD_INLINE void from_block(const T* block, int64_t used, int64_t height, int64_t width, T* planes) {
  if constexpr (std::is_floating_point_v<T>) {
    cpu::store_block<kNative>(block, width, height, width, used, planes, height * width);
  } else {
    constexpr int64_t L = kLanes<T>;
    const int64_t plane = height * width;
    for (int64_t l = 0; l < used; ++l) {
      for (int64_t p = 0; p < plane; ++p) planes[l * plane + p] = block[p * L + l];
    }
  }
}

// kLanes<T> channels of one pixel or bin, as a value: for float and double, 64 bytes as native vectors
// of kNative bytes (kept in registers across a bin's samples: the compiler neither vectorises lane
// loops over arrays here, as it cannot rule out aliasing, nor keeps a 64-byte vector in registers on a
// narrower ISA); for c10::Half, an array.
template <int kNative, class T, bool = std::is_floating_point_v<T>>
struct LanesOf {
  using type = std::array<T, kLanes<T>>;
};
template <int kNative, class T>
struct LanesOf<kNative, T, true> {
  using type = std::array<simd::Vec<T, kNative>, 64 / kNative>;
};
template <int kNative, class T>
using Lanes = typename LanesOf<kNative, T>::type;

// sum + the sample of pixels v1 .. v4 (kLanes channels each), lane by lane.
template <int kNative, class T>
PYDET_SIMD_INLINE Lanes<kNative, T> add_sample(Lanes<kNative, T> sum, const Weights<T>& w, const T* v1, const T* v2,
                                               const T* v3, const T* v4) {
  if constexpr (std::is_floating_point_v<T>) {
    using V = simd::Vec<T, kNative>;
    constexpr int64_t W = kNative / sizeof(T);
    for (size_t c = 0; c < sum.size(); ++c) {
      const int64_t at = int64_t(c) * W;
      sum[c] = sum[c] + interpolate(w, simd::load_vec<V>(v1 + at), simd::load_vec<V>(v2 + at),
                                    simd::load_vec<V>(v3 + at), simd::load_vec<V>(v4 + at));
    }
  } else {
    for (int64_t l = 0; l < kLanes<T>; ++l) sum[l] = sum[l] + interpolate(w, v1[l], v2[l], v3[l], v4[l]);
  }
  return sum;
}

// out[lane] = sum[lane] / count.
template <int kNative, class T>
PYDET_SIMD_INLINE void store_mean(T* out, const Lanes<kNative, T>& sum, T count) {
  if constexpr (std::is_floating_point_v<T>) {
    constexpr int64_t W = kNative / sizeof(T);
    for (size_t c = 0; c < sum.size(); ++c) simd::store_vec(out + int64_t(c) * W, sum[c] / count);
  } else {
    for (int64_t l = 0; l < kLanes<T>; ++l) out[l] = sum[l] / count;
  }
}

// pixel[lane] += the share of weight w of grad[lane], lane by lane.
template <class T>
PYDET_SIMD_INLINE void add_share(T* pixel, const T* grad, T w, T count) {
  if constexpr (std::is_floating_point_v<T>) {
    simd::store64(pixel, simd::load64(pixel) + share(simd::load64(grad), w, count));
  } else {
    for (int64_t l = 0; l < kLanes<T>; ++l) pixel[l] = pixel[l] + share(grad[l], w, count);
  }
}

// A RoI's bins for `used` channels between the [bin][L] tile and the output's (or its gradient's)
// [channel][bin] rows, which start at `rows` (the RoI's first channel of the block).
template <class T>
PYDET_SIMD_INLINE void tile_to_rows(const T* tile, int64_t used, int64_t bins, T* rows) {
  for (int64_t l = 0; l < used; ++l) {
    for (int64_t bin = 0; bin < bins; ++bin) rows[l * bins + bin] = tile[bin * kLanes<T> + l];
  }
}
template <class T>
PYDET_SIMD_INLINE void rows_to_tile(const T* rows, int64_t used, int64_t bins, T* tile) {
  for (int64_t l = 0; l < used; ++l) {
    for (int64_t bin = 0; bin < bins; ++bin) tile[bin * kLanes<T> + l] = rows[l * bins + bin];
  }
}

}  // namespace pydet::roi
