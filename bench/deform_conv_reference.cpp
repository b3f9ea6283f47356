// Baseline for the deform_conv2d benchmarks, written the way torchvision writes its CPU kernel
// (torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp), as plain C++ with a C interface (loaded by
// pydet/benchmarks/native.py through ctypes), float32, one thread. torchvision multiplies these
// columns by the weight with ATen's addmm; the Python side does the same with torch.mm.
//   deform_im2col:       columns [C KH KW, N OH OW], one value at a time (channel, tap, image,
//                        pixel), each recomputing its sample's coordinates and bilinear weights.
//   deform_col2im:       the input's gradient from the columns' gradient, one column value at a time,
//                        added to the (up to) four pixels within distance 1 of its sample.
//   deform_col2im_coord: the offsets' and mask's gradients, one offset value at a time, summing over
//                        the offset group's channels.
// So `pydet bench` can measure pydet against the algorithm torchvision runs, in the same process, on
// machines where torchvision is not installed.
#include <cmath>
#include <cstdint>

namespace {

struct Shape {
  int64_t n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, offset_groups;
  bool use_mask;
};

float bilinear(const float* in, int64_t height, int64_t width, float h, float w) {
  if (h <= -1 || height <= h || w <= -1 || width <= w) return 0;
  const int64_t h_low = static_cast<int64_t>(std::floor(h)), w_low = static_cast<int64_t>(std::floor(w));
  const int64_t h_high = h_low + 1, w_high = w_low + 1;
  const float lh = h - h_low, lw = w - w_low, hh = 1 - lh, hw = 1 - lw;
  const float v1 = (h_low >= 0 && w_low >= 0) ? in[h_low * width + w_low] : 0;
  const float v2 = (h_low >= 0 && w_high <= width - 1) ? in[h_low * width + w_high] : 0;
  const float v3 = (h_high <= height - 1 && w_low >= 0) ? in[h_high * width + w_low] : 0;
  const float v4 = (h_high <= height - 1 && w_high <= width - 1) ? in[h_high * width + w_high] : 0;
  return hh * hw * v1 + hh * lw * v2 + lh * hw * v3 + lh * lw * v4;
}

float coordinate_weight(const float* in, int64_t height, int64_t width, float y, float x, bool y_direction) {
  if (!(y > -2 && y < height + 1 && x > -2 && x < width + 1)) return 0;  // no corner inside
  const int64_t y_l = static_cast<int64_t>(std::floor(y)), x_l = static_cast<int64_t>(std::floor(x));
  const int64_t y_h = y_l + 1, x_h = x_l + 1;
  const bool vyl = 0 <= y_l && y_l < height, vyh = 0 <= y_h && y_h < height;
  const bool vxl = 0 <= x_l && x_l < width, vxh = 0 <= x_h && x_h < width;
  const float yx = vyl && vxl ? in[y_l * width + x_l] : 0, yX = vyl && vxh ? in[y_l * width + x_h] : 0;
  const float Yx = vyh && vxl ? in[y_h * width + x_l] : 0, YX = vyh && vxh ? in[y_h * width + x_h] : 0;
  if (y_direction) {
    const float dx = x - x_l;
    return dx * (YX - yX) + (1 - dx) * (Yx - yx);
  }
  const float dy = y - y_l;
  return dy * (YX - Yx) + (1 - dy) * (yX - yx);
}

// Tap (i, j) of output pixel (y, x) of image b in offset group g: its coordinates and mask.
struct Tap {
  float y, x, mask;
};
Tap tap(const Shape& s, const float* offset, const float* mask, int64_t b, int64_t g, int64_t i, int64_t j,
        int64_t y, int64_t x) {
  const int64_t plane = s.oh * s.ow, k = i * s.kw + j;
  const float* off = offset + (b * s.offset_groups + g) * 2 * s.kh * s.kw * plane;
  const float dy = off[2 * k * plane + y * s.ow + x], dx = off[(2 * k + 1) * plane + y * s.ow + x];
  const float m = s.use_mask ? mask[((b * s.offset_groups + g) * s.kh * s.kw + k) * plane + y * s.ow + x] : 1;
  return {static_cast<float>(y * s.sh - s.ph + i * s.dh) + dy, static_cast<float>(x * s.sw - s.pw + j * s.dw) + dx,
          m};
}

Shape shape_of(const int64_t* v, bool use_mask) {
  return Shape{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], use_mask};
}

}  // namespace

extern "C" {

// sizes: n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, offset_groups
void deform_im2col(const float* input, const float* offset, const float* mask, const int64_t* sizes, bool use_mask,
                   float* columns) {
  const Shape s = shape_of(sizes, use_mask);
  const int64_t plane = s.oh * s.ow, per_group = s.c / s.offset_groups;
  for (int64_t c = 0; c < s.c; ++c) {
    for (int64_t b = 0; b < s.n; ++b) {
      for (int64_t y = 0; y < s.oh; ++y) {
        for (int64_t x = 0; x < s.ow; ++x) {
          const float* in = input + (b * s.c + c) * s.h * s.w;
          for (int64_t i = 0; i < s.kh; ++i) {
            for (int64_t j = 0; j < s.kw; ++j) {
              const Tap t = tap(s, offset, mask, b, c / per_group, i, j, y, x);
              const int64_t row = (c * s.kh + i) * s.kw + j;
              columns[(row * s.n + b) * plane + y * s.ow + x] = t.mask * bilinear(in, s.h, s.w, t.y, t.x);
            }
          }
        }
      }
    }
  }
}

void deform_col2im(const float* grad_columns, const float* offset, const float* mask, const int64_t* sizes,
                   bool use_mask, float* grad_input) {
  const Shape s = shape_of(sizes, use_mask);
  const int64_t plane = s.oh * s.ow, per_group = s.c / s.offset_groups;
  for (int64_t c = 0; c < s.c; ++c) {
    for (int64_t i = 0; i < s.kh; ++i) {
      for (int64_t j = 0; j < s.kw; ++j) {
        for (int64_t b = 0; b < s.n; ++b) {
          for (int64_t y = 0; y < s.oh; ++y) {
            for (int64_t x = 0; x < s.ow; ++x) {
              const Tap t = tap(s, offset, mask, b, c / per_group, i, j, y, x);
              if (!(t.y > -1 && t.y < s.h && t.x > -1 && t.x < s.w)) continue;
              const float g = grad_columns[(((c * s.kh + i) * s.kw + j) * s.n + b) * plane + y * s.ow + x];
              const int64_t y0 = static_cast<int64_t>(t.y), x0 = static_cast<int64_t>(t.x);
              for (int64_t dy = -1; dy <= 1; ++dy) {
                for (int64_t dx = -1; dx <= 1; ++dx) {
                  const int64_t yp = y0 + dy, xp = x0 + dx;
                  if (0 <= yp && yp < s.h && 0 <= xp && xp < s.w && std::abs(t.y - yp) < 1 && std::abs(t.x - xp) < 1) {
                    const float weight = (1 - std::abs(t.y - yp)) * (1 - std::abs(t.x - xp));
                    grad_input[((b * s.c + c) * s.h + yp) * s.w + xp] += t.mask * weight * g;
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

void deform_col2im_coord(const float* grad_columns, const float* input, const float* offset, const float* mask,
                         const int64_t* sizes, bool use_mask, float* grad_offset, float* grad_mask) {
  const Shape s = shape_of(sizes, use_mask);
  const int64_t plane = s.oh * s.ow, per_group = s.c / s.offset_groups;
  for (int64_t b = 0; b < s.n; ++b) {
    for (int64_t g = 0; g < s.offset_groups; ++g) {
      for (int64_t k2 = 0; k2 < 2 * s.kh * s.kw; ++k2) {
        const int64_t k = k2 / 2, i = k / s.kw, j = k % s.kw;
        const bool y_direction = k2 % 2 == 0;
        for (int64_t y = 0; y < s.oh; ++y) {
          for (int64_t x = 0; x < s.ow; ++x) {
            const Tap t = tap(s, offset, mask, b, g, i, j, y, x);
            float grad = 0, grad_m = 0;
            for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
              const float* in = input + (b * s.c + c) * s.h * s.w;
              const float col = grad_columns[(((c * s.kh + i) * s.kw + j) * s.n + b) * plane + y * s.ow + x];
              grad += t.mask * coordinate_weight(in, s.h, s.w, t.y, t.x, y_direction) * col;
              if (use_mask && y_direction) grad_m += col * bilinear(in, s.h, s.w, t.y, t.x);
            }
            grad_offset[((b * s.offset_groups + g) * 2 * s.kh * s.kw + k2) * plane + y * s.ow + x] = grad;
            if (use_mask && y_direction) {
              grad_mask[((b * s.offset_groups + g) * s.kh * s.kw + k) * plane + y * s.ow + x] = grad_m;
            }
          }
        }
      }
    }
  }
}

}  // extern "C"
