// CPU kernels of the rotated-box ops (nms_rotated, batched_nms_rotated, box_iou_rotated). Front end:
// ops/nms_rotated.h; geometry: common/rotated.h.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common/rotated.h"
#include "cpu/score_order.h"
#include "ops/nms_rotated.h"

namespace pydet::nms_rotated {
namespace {

using nms::class_score_order;
using nms::score_order;
using nms::sorted_by_score;

struct RotatedBox {
  double cx, cy, w, h, angle, reach;  // reach: half the diagonal (bounding-circle radius)
};

template <class T>
std::vector<RotatedBox> gather_rotated(const at::Tensor& boxes, const int64_t* order, size_t n) {
  const T* p = boxes.const_data_ptr<T>();
  const int64_t s0 = boxes.stride(0), s1 = boxes.stride(1);
  std::vector<RotatedBox> r(n);
  for (size_t k = 0; k < n; ++k) {
    const T* q = order == nullptr ? p + int64_t(k) * s0 : p + order[k] * s0;
    const double w = q[2 * s1], h = q[3 * s1];
    r[k] = {double(q[0]), double(q[s1]), w, h, double(q[4 * s1]), 0.5 * std::sqrt(w * w + h * h)};
  }
  return r;
}

double rotated_pair_iou(const RotatedBox& a, const RotatedBox& b) {
  const double dx = a.cx - b.cx, dy = a.cy - b.cy, r = a.reach + b.reach;
  if (dx * dx + dy * dy > r * r * (1 + 1e-9)) return 0.0;  // bounding circles apart: no overlap
  return rotated_iou(a.cx, a.cy, a.w, a.h, a.angle, b.cx, b.cy, b.w, b.h, b.angle);
}

struct CpuKernels {
  // Greedy rotated NMS, per class when idxs is defined (detectron2 semantics: IoU > threshold).
  static at::Tensor nms_rotated(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs, double thr) {
    const at::Tensor s = scores.contiguous();
    const double* sp = s.const_data_ptr<double>();
    const at::Tensor c = idxs.defined() ? idxs.contiguous() : at::Tensor();
    const int64_t* cp = idxs.defined() ? c.const_data_ptr<int64_t>() : nullptr;
    std::vector<size_t> seg{0};
    const std::vector<int64_t> order =
        cp != nullptr ? class_score_order(sp, cp, s.size(0), seg) : score_order(sp, s.size(0));
    if (cp == nullptr) seg.push_back(order.size());
    std::vector<uint8_t> keep(order.size(), 0);
    AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_rotated", [&] {
      const auto rb = gather_rotated<scalar_t>(boxes, order.data(), order.size());
      at::parallel_for(0, int64_t(seg.size()) - 1, 1, [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) {
          std::vector<size_t> kept;
          for (size_t i = seg[g]; i < seg[g + 1]; ++i) {
            bool suppressed = false;
            for (size_t k : kept) {
              if (rotated_pair_iou(rb[k], rb[i]) > thr) {
                suppressed = true;
                break;
              }
            }
            if (!suppressed) {
              keep[i] = 1;
              kept.push_back(i);
            }
          }
        }
      });
    });
    std::vector<int64_t> kept;
    for (size_t k = 0; k < order.size(); ++k) {
      if (keep[k]) kept.push_back(order[k]);
    }
    return sorted_by_score(kept, sp, boxes.options());
  }

  static void box_iou_rotated(const at::Tensor& b1, const at::Tensor& b2, at::Tensor& out) {
    AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "box_iou_rotated", [&] {
      const auto r1 = gather_rotated<scalar_t>(b1, nullptr, size_t(b1.size(0)));
      const auto r2 = gather_rotated<scalar_t>(b2, nullptr, size_t(b2.size(0)));
      scalar_t* o = out.data_ptr<scalar_t>();
      const int64_t M = b2.size(0);
      at::parallel_for(0, b1.size(0) * M, 256, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          o[k] = scalar_t(rotated_pair_iou(r1[k / M], r2[k % M]));
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
  Ops<CpuKernels>::register_shaped(m);
}

}  // namespace pydet::nms_rotated
