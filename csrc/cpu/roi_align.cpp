// CPU kernels of roi_align and its backward (front end: ops/roi_align.h; sampling:
// common/roi_align_math.h).
//
// Both walk the feature map plane by plane ((image, channel) pairs, in parallel) and pool every RoI of
// the plane's image from it while the plane is in cache. torchvision's kernel walks RoI by RoI and
// reads each RoI's region from all C planes, missing the cache on almost every sample of a large
// feature map. The RoIs' sampling (taps per bin and axis, from the math header) is tabulated once
// per call and shared by all planes.
//
// Results are torchvision's bit for bit and do not depend on the thread count: a forward bin is one
// sum in torchvision's sample order, and in the backward one thread owns a plane of the input's
// gradient and adds to it in torchvision's order (RoI, bin, sample, corner).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/roi_align_math.h"
#include "ops/roi_align.h"

namespace pydet::roi {
namespace {

// Samples one thread should pool at least before a call goes parallel (a few tens of microseconds).
constexpr int64_t kGrainSamples = 1 << 14;

// Every RoI's sampling, in the order of the rois tensor, and the RoIs of each image.
template <class T>
struct Sampling {
  std::vector<T> count;
  std::vector<uint8_t> finite;
  // The taps of RoI k's bin p are y_taps[y_first[k * PH + p] .. y_first[k * PH + p + 1]) (x likewise).
  std::vector<int64_t> y_first, x_first;
  std::vector<Tap<T>> y_taps, x_taps;
  // RoIs of image b: by_image[image_first[b] .. image_first[b + 1]), in increasing order.
  std::vector<int64_t> by_image, image_first;
  int64_t samples = 0;  // in-image samples of all RoIs (a pooling pass over one channel)

  Sampling(const T* rois, const Geometry& g, const char* op)
      : count(g.rois),
        finite(g.rois),
        y_first(g.rois * g.pooled_h + 1),
        x_first(g.rois * g.pooled_w + 1),
        by_image(g.rois),
        image_first(g.batch + 2, 0) {
    std::vector<int64_t> image(g.rois);
    for (int64_t k = 0; k < g.rois; ++k) {
      const T* roi = rois + 5 * k;
      const auto b = static_cast<compare_t<T>>(roi[0]);
      if (!(b >= 0 && b < static_cast<compare_t<T>>(g.batch) && b == std::floor(b))) {
        fail_batch_index(op, k, static_cast<double>(b), g.batch);
      }
      image[k] = static_cast<int64_t>(b);
      ++image_first[image[k] + 2];
      const RoiGrid<T> r =
          roi_grid(roi, static_cast<T>(g.spatial_scale), g.aligned, g.pooled_h, g.pooled_w, g.sampling_ratio);
      count[k] = r.count;
      finite[k] = r.finite;
      const int64_t ny = tabulate(r.y, g.pooled_h, g.height, r.finite, &y_first[k * g.pooled_h], y_taps);
      const int64_t nx = tabulate(r.x, g.pooled_w, g.width, r.finite, &x_first[k * g.pooled_w], x_taps);
      samples += ny * nx;
    }
    y_first.back() = static_cast<int64_t>(y_taps.size());
    x_first.back() = static_cast<int64_t>(x_taps.size());
    for (int64_t b = 0; b < g.batch; ++b) image_first[b + 2] += image_first[b + 1];
    for (int64_t k = 0; k < g.rois; ++k) by_image[image_first[image[k] + 1]++] = k;
  }

  // Appends one axis's taps, bin by bin, recording where each bin's start; returns the largest bin's
  // count (a bound for the work estimate).
  static int64_t tabulate(const AxisGrid<T>& a, int64_t pooled, int64_t extent, bool finite, int64_t* first,
                          std::vector<Tap<T>>& taps) {
    int64_t most = 0;
    for (int64_t p = 0; p < pooled; ++p) {
      first[p] = static_cast<int64_t>(taps.size());
      if (!finite) continue;
      const SampleRange s = samples_inside(a, p, extent);
      for (int64_t i = s.begin; i < s.end; ++i) taps.push_back(tap_at(sample_at(a, p, i), extent));
      most = std::max(most, s.end - s.begin);
    }
    return most * pooled;
  }

  // Planes per parallel chunk: enough that a chunk pools kGrainSamples samples.
  int64_t plane_grain(const Geometry& g) const {
    const int64_t per_plane = std::max<int64_t>(1, samples / std::max<int64_t>(g.batch, 1));
    return std::max<int64_t>(1, kGrainSamples / per_plane);
  }
};

struct CpuKernels {
  static at::ScalarType compute_dtype(at::ScalarType st) {
    return st == at::kBFloat16 ? at::kFloat : st;  // float16 in float16 arithmetic, as torchvision's CPU kernel
  }

  static void forward(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out, const Geometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(input.scalar_type(), "roi_align", [&] {
      using T = scalar_t;
      const Sampling<T> s(rois.const_data_ptr<T>(), g, "roi_align");
      const T* in = input.const_data_ptr<T>();
      T* o = out.data_ptr<T>();
      const int64_t plane_size = g.height * g.width, bins = g.pooled_h * g.pooled_w;
      at::parallel_for(0, g.batch * g.channels, s.plane_grain(g), [&](int64_t begin, int64_t end) {
        for (int64_t plane = begin; plane < end; ++plane) {
          const int64_t b = plane / g.channels, c = plane % g.channels;
          const T* src = in + plane * plane_size;
          for (int64_t r = s.image_first[b]; r < s.image_first[b + 1]; ++r) {
            const int64_t k = s.by_image[r];
            T* dst = o + (k * g.channels + c) * bins;
            if (!s.finite[k]) {
              std::fill(dst, dst + bins, std::numeric_limits<T>::quiet_NaN());
              continue;
            }
            for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
              const int64_t* yf = &s.y_first[k * g.pooled_h + ph];
              for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
                const int64_t* xf = &s.x_first[k * g.pooled_w + pw];
                T sum = T(0);
                for (int64_t ty = yf[0]; ty < yf[1]; ++ty) {
                  for (int64_t tx = xf[0]; tx < xf[1]; ++tx) {
                    sum = sum + bilinear(src, g.width, s.y_taps[ty], s.x_taps[tx]);
                  }
                }
                dst[ph * g.pooled_w + pw] = sum / s.count[k];
              }
            }
          }
        }
      });
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input, const Geometry& g) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad.scalar_type(), "_roi_align_backward", [&] {
      using T = scalar_t;
      const Sampling<T> s(rois.const_data_ptr<T>(), g, "_roi_align_backward");
      const T* go = grad.const_data_ptr<T>();
      T* gi = grad_input.data_ptr<T>();
      const int64_t plane_size = g.height * g.width, bins = g.pooled_h * g.pooled_w;
      at::parallel_for(0, g.batch * g.channels, s.plane_grain(g), [&](int64_t begin, int64_t end) {
        for (int64_t plane = begin; plane < end; ++plane) {
          const int64_t b = plane / g.channels, c = plane % g.channels;
          T* dst = gi + plane * plane_size;
          for (int64_t r = s.image_first[b]; r < s.image_first[b + 1]; ++r) {
            const int64_t k = s.by_image[r];
            const T* src = go + (k * g.channels + c) * bins;
            for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
              const int64_t* yf = &s.y_first[k * g.pooled_h + ph];
              for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
                const int64_t* xf = &s.x_first[k * g.pooled_w + pw];
                const T bin_grad = src[ph * g.pooled_w + pw];
                for (int64_t ty = yf[0]; ty < yf[1]; ++ty) {
                  const Tap<T>& y = s.y_taps[ty];
                  T* lo = dst + y.low * g.width;
                  T* hi = dst + y.high * g.width;
                  for (int64_t tx = xf[0]; tx < xf[1]; ++tx) {
                    const Tap<T>& x = s.x_taps[tx];
                    const Shares<T> sh = shares(bin_grad, s.count[k], y, x);
                    lo[x.low] = lo[x.low] + sh.g1;
                    lo[x.high] = lo[x.high] + sh.g2;
                    hi[x.low] = hi[x.low] + sh.g3;
                    hi[x.high] = hi[x.high] + sh.g4;
                  }
                }
              }
            }
          }
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

}  // namespace pydet::roi
