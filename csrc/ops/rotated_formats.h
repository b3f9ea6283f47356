// torchvision 0.29's rotated box formats, K coordinates per box:
//   xywhr    (K = 5): top-left corner, width, height, angle r in degrees counter-clockwise;
//   cxcywhr  (K = 5): centre, width, height, r (pydet's box_iou_rotated / detectron2's layout);
//   xyxyxyxy (K = 8): the four corners, top-left, top-right, bottom-right, bottom-left.
// box_convert between them is an ATen composition that follows torchvision's _box_convert.py
// operation by operation -- the same scalars, the same order, ATen's cos/sin/atan2 -- so results,
// integer rounding and half precision included, are torchvision's. Its backward is the analytic
// vector-Jacobian product of the same formulas (torchvision's are differentiable through autograd).
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/atan2.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/MathConstants.h>

#include <vector>

#include "common/box_math.h"

namespace pydet::rotated_formats {

constexpr double kPi = c10::pi<double>;

inline std::vector<at::Tensor> fields(const at::Tensor& boxes) {
  return boxes.unbind(-1);
}

// torchvision's `need_cast` epilogue: integer boxes are computed in floating point, rounded, cast back.
inline at::Tensor finish(const std::vector<at::Tensor>& out, const at::Tensor& boxes) {
  at::Tensor r = at::stack(out, -1);
  if (boxes.is_floating_point()) return r;
  return r.round_().to(boxes.scalar_type());
}

inline at::Tensor radians(const at::Tensor& degrees) {
  return degrees * kPi / 180.0;
}

inline at::Tensor cxcywhr_to_xywhr(const at::Tensor& boxes) {
  const auto f = fields(boxes);  // cx, cy, w, h, r
  const at::Tensor rad = radians(f[4]), cos = at::cos(rad), sin = at::sin(rad);
  const at::Tensor x1 = f[0] - f[2] / 2 * cos - f[3] / 2 * sin;
  const at::Tensor y1 = f[1] - f[3] / 2 * cos + f[2] / 2 * sin;
  return finish({x1, y1, f[2], f[3], f[4]}, boxes);
}

inline at::Tensor xywhr_to_cxcywhr(const at::Tensor& boxes) {
  const auto f = fields(boxes);  // x1, y1, w, h, r
  const at::Tensor rad = radians(f[4]), cos = at::cos(rad), sin = at::sin(rad);
  const at::Tensor cx = f[0] + f[2] / 2 * cos + f[3] / 2 * sin;
  const at::Tensor cy = f[1] - f[2] / 2 * sin + f[3] / 2 * cos;
  return finish({cx, cy, f[2], f[3], f[4]}, boxes);
}

inline at::Tensor xywhr_to_xyxyxyxy(const at::Tensor& boxes) {
  const auto f = fields(boxes);  // x1, y1, w, h, r
  const at::Tensor rad = radians(f[4]), cos = at::cos(rad), sin = at::sin(rad);
  const at::Tensor x2 = f[0] + f[2] * cos, y2 = f[1] - f[2] * sin;
  const at::Tensor x3 = x2 + f[3] * sin, y3 = y2 + f[3] * cos;
  const at::Tensor x4 = f[0] + f[3] * sin, y4 = f[1] + f[3] * cos;
  return finish({f[0], f[1], x2, y2, x3, y3, x4, y4}, boxes);
}

inline at::Tensor xyxyxyxy_to_xywhr(const at::Tensor& boxes) {
  const auto f = fields(boxes);  // x1, y1, ..., x4, y4
  const at::Tensor r = at::atan2(f[1] - f[3], f[2] - f[0]) * 180 / kPi;
  const at::Tensor w = (at::pow(f[2] - f[0], 2) + at::pow(f[1] - f[3], 2)).sqrt();
  const at::Tensor h = (at::pow(f[4] - f[2], 2) + at::pow(f[5] - f[3], 2)).sqrt();
  return finish({f[0], f[1], w, h, r}, boxes);
}

// One step of a conversion: its forward and the product of its Jacobian's transpose with a gradient.
enum class Step : int8_t { kCenterToCorner, kCornerToCenter, kToPolygon, kFromPolygon };

inline at::Tensor forward(Step s, const at::Tensor& boxes) {
  switch (s) {
    case Step::kCenterToCorner:
      return cxcywhr_to_xywhr(boxes);
    case Step::kCornerToCenter:
      return xywhr_to_cxcywhr(boxes);
    case Step::kToPolygon:
      return xywhr_to_xyxyxyxy(boxes);
    default:
      return xyxyxyxy_to_xywhr(boxes);
  }
}

// d/dboxes of <grad, forward(s, boxes)> (floating boxes).
inline at::Tensor pull_back(Step s, const at::Tensor& boxes, const at::Tensor& grad) {
  const auto f = fields(boxes);
  const auto g = fields(grad);
  const double k = kPi / 180.0;  // d(radians)/d(degrees)
  if (s == Step::kFromPolygon) {
    const at::Tensor X = f[2] - f[0], Y = f[1] - f[3];    // the top edge; r = atan2(Y, X) / k
    const at::Tensor EX = f[4] - f[2], EY = f[5] - f[3];  // the right edge
    const at::Tensor w = (X * X + Y * Y).sqrt(), h = (EX * EX + EY * EY).sqrt();
    const at::Tensor dr = g[4] / (k * (X * X + Y * Y));  // times (dY * X - dX * Y)
    const at::Tensor gw = g[2] / w, gh = g[3] / h;
    const at::Tensor zero = at::zeros_like(f[0]);
    return at::stack({g[0] - gw * X + dr * Y, g[1] + gw * Y + dr * X, gw * X - gh * EX - dr * Y,
                      -gw * Y - gh * EY - dr * X, gh * EX, gh * EY, zero, zero},
                     -1);
  }
  const at::Tensor rad = radians(f[4]), cos = at::cos(rad), sin = at::sin(rad);
  const at::Tensor& w = f[2];
  const at::Tensor& h = f[3];
  switch (s) {
    case Step::kCenterToCorner: {  // x1 = cx - w/2 cos - h/2 sin, y1 = cy - h/2 cos + w/2 sin
      const at::Tensor gw = g[2] - g[0] * cos / 2 + g[1] * sin / 2;
      const at::Tensor gh = g[3] - g[0] * sin / 2 - g[1] * cos / 2;
      const at::Tensor gr = g[4] + k * (g[0] * (w * sin - h * cos) + g[1] * (h * sin + w * cos)) / 2;
      return at::stack({g[0], g[1], gw, gh, gr}, -1);
    }
    case Step::kCornerToCenter: {  // cx = x1 + w/2 cos + h/2 sin, cy = y1 - w/2 sin + h/2 cos
      const at::Tensor gw = g[2] + g[0] * cos / 2 - g[1] * sin / 2;
      const at::Tensor gh = g[3] + g[0] * sin / 2 + g[1] * cos / 2;
      const at::Tensor gr = g[4] + k * (g[0] * (h * cos - w * sin) - g[1] * (w * cos + h * sin)) / 2;
      return at::stack({g[0], g[1], gw, gh, gr}, -1);
    }
    default: {  // corners 2 = 1 + w (cos, -sin), 3 = 2 + h (sin, cos), 4 = 1 + h (sin, cos)
      const at::Tensor gx_w = g[2] + g[4], gy_w = g[3] + g[5];  // the corners that move with w
      const at::Tensor gx_h = g[4] + g[6], gy_h = g[5] + g[7];  // ... and with h
      const at::Tensor gw = gx_w * cos - gy_w * sin;
      const at::Tensor gh = gx_h * sin + gy_h * cos;
      const at::Tensor gr = k * (h * (gx_h * cos - gy_h * sin) - w * (gx_w * sin + gy_w * cos));
      return at::stack({g[0] + g[2] + g[4] + g[6], g[1] + g[3] + g[5] + g[7], gw, gh, gr}, -1);
    }
  }
}

// torchvision's path from one rotated format to another (a direct step, or two through xywhr).
inline std::vector<Step> steps(BoxFormat in, BoxFormat out) {
  const bool center = in == BoxFormat::kCXCYWHR || out == BoxFormat::kCXCYWHR;
  const bool polygon = in == BoxFormat::kXYXYXYXY || out == BoxFormat::kXYXYXYXY;
  std::vector<Step> path;
  if (in == BoxFormat::kCXCYWHR) path.push_back(Step::kCenterToCorner);
  if (in == BoxFormat::kXYXYXYXY) path.push_back(Step::kFromPolygon);
  if (polygon && out == BoxFormat::kXYXYXYXY) path.push_back(Step::kToPolygon);
  if (center && out == BoxFormat::kCXCYWHR) path.push_back(Step::kCornerToCenter);
  return path;
}

// boxes [..., K_in] -> [..., K_out]; in != out, both rotated.
inline at::Tensor convert(const at::Tensor& boxes, BoxFormat in, BoxFormat out) {
  at::Tensor r = boxes;
  for (Step s : steps(in, out)) r = forward(s, r).to(boxes.scalar_type());  // torchvision's .to(boxes.dtype)
  return r;
}

inline at::Tensor convert_backward(const at::Tensor& grad, const at::Tensor& boxes, BoxFormat in, BoxFormat out) {
  const std::vector<Step> path = steps(in, out);
  std::vector<at::Tensor> inputs{boxes};
  for (size_t i = 0; i + 1 < path.size(); ++i) inputs.push_back(forward(path[i], inputs.back()));
  at::Tensor g = grad;
  for (size_t i = path.size(); i-- > 0;) g = pull_back(path[i], inputs[i], g);
  return g;
}

}  // namespace pydet::rotated_formats
