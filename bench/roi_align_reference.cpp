// Baseline for the roi_align benchmarks, written the way torchvision writes its CPU kernel
// (torchvision/csrc/ops/cpu/roi_align_kernel.cpp), as plain C++ with a C interface (loaded by
// pydet/benchmarks/native.py through ctypes), float32, one thread:
//   roi_align_forward:  RoI by RoI: a table of every sample's four pixel offsets and weights, then
//                       channel by channel, bin by bin, the weighted sum of the samples.
//   roi_align_backward: one output element at a time, the samples recomputed and their shares added
//                       to the input's gradient.
// So `pydet bench` can measure pydet against the algorithm torchvision runs, in the same process, on
// machines where torchvision is not installed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

struct Sample {
  int64_t pos1, pos2, pos3, pos4;
  float w1, w2, w3, w4;
};

struct Roi {
  int64_t batch;
  float start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;
  float count;
};

Roi roi_of(const float* r, float scale, int64_t pooled_h, int64_t pooled_w, int64_t ratio, bool aligned) {
  Roi o;
  o.batch = static_cast<int64_t>(r[0]);
  const float offset = aligned ? 0.5f : 0.0f;
  o.start_w = r[1] * scale - offset;
  o.start_h = r[2] * scale - offset;
  float width = r[3] * scale - offset - o.start_w;
  float height = r[4] * scale - offset - o.start_h;
  if (!aligned) {
    width = std::max(width, 1.0f);
    height = std::max(height, 1.0f);
  }
  o.bin_h = height / static_cast<float>(pooled_h);
  o.bin_w = width / static_cast<float>(pooled_w);
  o.grid_h = ratio > 0 ? static_cast<int>(ratio) : static_cast<int>(std::ceil(height / pooled_h));
  o.grid_w = ratio > 0 ? static_cast<int>(ratio) : static_cast<int>(std::ceil(width / pooled_w));
  o.count = static_cast<float>(std::max(o.grid_h * o.grid_w, 1));
  return o;
}

// Bilinear weights of (y, x); false outside [-1, size] (torchvision then uses weight 0).
bool bilinear(int64_t height, int64_t width, float y, float x, int64_t& yl, int64_t& yh, int64_t& xl, int64_t& xh,
              float& w1, float& w2, float& w3, float& w4) {
  if (y < -1.0 || y > height || x < -1.0 || x > width) return false;
  y = std::max(y, 0.0f);
  x = std::max(x, 0.0f);
  yl = static_cast<int64_t>(y);
  xl = static_cast<int64_t>(x);
  if (yl >= height - 1) {
    yh = yl = height - 1;
    y = static_cast<float>(yl);
  } else {
    yh = yl + 1;
  }
  if (xl >= width - 1) {
    xh = xl = width - 1;
    x = static_cast<float>(xl);
  } else {
    xh = xl + 1;
  }
  const float ly = y - yl, lx = x - xl, hy = 1.0f - ly, hx = 1.0f - lx;
  w1 = hy * hx;
  w2 = hy * lx;
  w3 = ly * hx;
  w4 = ly * lx;
  return true;
}

}  // namespace

extern "C" {

// input: [n, c, height, width], rois: [k, 5], out: [k, c, pooled_h, pooled_w], all contiguous.
void roi_align_forward(const float* input, const float* rois, int64_t k, int64_t c, int64_t height, int64_t width,
                       int64_t pooled_h, int64_t pooled_w, float scale, int64_t ratio, bool aligned, float* out) {
  for (int64_t n = 0; n < k; ++n) {
    const Roi r = roi_of(rois + 5 * n, scale, pooled_h, pooled_w, ratio, aligned);
    std::vector<Sample> table;
    table.reserve(static_cast<size_t>(pooled_h * pooled_w * std::max(r.grid_h * r.grid_w, 0)));
    for (int64_t ph = 0; ph < pooled_h; ++ph) {
      for (int64_t pw = 0; pw < pooled_w; ++pw) {
        for (int iy = 0; iy < r.grid_h; ++iy) {
          const float y = r.start_h + ph * r.bin_h + (iy + .5f) * r.bin_h / r.grid_h;
          for (int ix = 0; ix < r.grid_w; ++ix) {
            const float x = r.start_w + pw * r.bin_w + (ix + .5f) * r.bin_w / r.grid_w;
            int64_t yl, yh, xl, xh;
            Sample s{0, 0, 0, 0, 0.f, 0.f, 0.f, 0.f};
            if (bilinear(height, width, y, x, yl, yh, xl, xh, s.w1, s.w2, s.w3, s.w4)) {
              s.pos1 = yl * width + xl;
              s.pos2 = yl * width + xh;
              s.pos3 = yh * width + xl;
              s.pos4 = yh * width + xh;
            }
            table.push_back(s);
          }
        }
      }
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* plane = input + (r.batch * c + ch) * height * width;
      float* o = out + (n * c + ch) * pooled_h * pooled_w;
      size_t t = 0;
      for (int64_t bin = 0; bin < pooled_h * pooled_w; ++bin) {
        float sum = 0.f;
        for (int i = 0; i < r.grid_h * r.grid_w; ++i, ++t) {
          const Sample& s = table[t];
          sum += s.w1 * plane[s.pos1] + s.w2 * plane[s.pos2] + s.w3 * plane[s.pos3] + s.w4 * plane[s.pos4];
        }
        o[bin] = sum / r.count;
      }
    }
  }
}

// grad: [k, c, pooled_h, pooled_w]; grad_input: [n, c, height, width], zeroed by the caller.
void roi_align_backward(const float* grad, const float* rois, int64_t k, int64_t c, int64_t height, int64_t width,
                        int64_t pooled_h, int64_t pooled_w, float scale, int64_t ratio, bool aligned,
                        float* grad_input) {
  const int64_t total = k * c * pooled_h * pooled_w;
  for (int64_t index = 0; index < total; ++index) {
    const int64_t pw = index % pooled_w, ph = index / pooled_w % pooled_h;
    const int64_t ch = index / pooled_w / pooled_h % c, n = index / pooled_w / pooled_h / c;
    const Roi r = roi_of(rois + 5 * n, scale, pooled_h, pooled_w, ratio, aligned);
    float* plane = grad_input + (r.batch * c + ch) * height * width;
    const float g = grad[index];
    for (int iy = 0; iy < r.grid_h; ++iy) {
      const float y = r.start_h + ph * r.bin_h + (iy + .5f) * r.bin_h / r.grid_h;
      for (int ix = 0; ix < r.grid_w; ++ix) {
        const float x = r.start_w + pw * r.bin_w + (ix + .5f) * r.bin_w / r.grid_w;
        int64_t yl, yh, xl, xh;
        float w1, w2, w3, w4;
        if (!bilinear(height, width, y, x, yl, yh, xl, xh, w1, w2, w3, w4)) continue;
        plane[yl * width + xl] += g * w1 / r.count;
        plane[yl * width + xh] += g * w2 / r.count;
        plane[yh * width + xl] += g * w3 / r.count;
        plane[yh * width + xh] += g * w4 / r.count;
      }
    }
  }
}

}  // extern "C"
