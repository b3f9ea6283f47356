// IoU family (box_iou, generalized/distance/complete_box_iou, their aligned forms, bbox_overlaps and
// the IoU losses): the device-agnostic half of each operator. It validates, promotes dtypes,
// flattens batch dimensions and allocates; the device half (`Kernels`, see cpu/box_iou.cpp and
// cuda/box_iou.cu) only computes. Both devices register these same front ends.
#pragma once

#include <ATen/ExpandUtils.h>  // at::sum_to
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "ops/boxes.h"
#include "ops/eager_boxes.h"
#include "ops/rotated_formats.h"

namespace pydet::box_iou {

using boxes::kAnyRank;

// Calls f(std::integral_constant<BoxMetric, m>{}) so kernels can be instantiated per metric.
template <class F>
void dispatch_metric(BoxMetric m, F&& f) {
  switch (m) {
#define PYDET_METRIC_CASE(name)                              \
  case BoxMetric::name:                                      \
    f(std::integral_constant<BoxMetric, BoxMetric::name>{}); \
    break;
    PYDET_METRIC_CASE(kIoU)
    PYDET_METRIC_CASE(kGIoU)
    PYDET_METRIC_CASE(kDIoU)
    PYDET_METRIC_CASE(kCIoU)
    PYDET_METRIC_CASE(kGIoULoss)
    PYDET_METRIC_CASE(kDIoULoss)
    PYDET_METRIC_CASE(kCIoULoss)
    PYDET_METRIC_CASE(kMmIoU)
    PYDET_METRIC_CASE(kMmIoF)
    PYDET_METRIC_CASE(kMmGIoU)
#undef PYDET_METRIC_CASE
  }
}

// The losses exist only in aligned form; pairwise kernels are not instantiated for them.
constexpr bool metric_is_pairwise(BoxMetric m) {
  return m != BoxMetric::kGIoULoss && m != BoxMetric::kDIoULoss && m != BoxMetric::kCIoULoss;
}

// Kernels must provide (boxes float/double, any strides; outputs and grads contiguous):
//   static void pairwise(const Tensor& b1 /*[B,M,4]*/, const Tensor& b2 /*[B,N,4]*/, Tensor& out /*[B,M,N]*/,
//                        BoxMetric, double eps, double offset, BoxFormat fmt);
//   static void pairwise_backward(const Tensor& grad /*[B,M,N]*/, const Tensor& b1, const Tensor& b2,
//                                 Tensor& g1 /*[B,M,4]*/, Tensor& g2 /*[B,N,4]*/, BoxMetric, double eps,
//                                 double offset, BoxFormat fmt);
// (fmt, the boxes' format, is box_iou's; every other metric reads xyxy boxes.)
//   static void aligned(const Tensor& b1 /*[K,4]*/, const Tensor& b2 /*[K,4]*/, Tensor& out /*[K]*/,
//                       BoxMetric, double eps, double offset);
//   static void aligned_backward(const Tensor& grad /*[K] or [1] broadcast*/, double grad_scale,
//                                const Tensor& b1, const Tensor& b2, Tensor& g1, Tensor& g2,
//                                BoxMetric, double eps, double offset);
//   static at::Tensor sum(const Tensor& values /*[K]*/);  // 0-dim, deterministic for a given input
template <class Kernels>
struct Ops {
  struct Promoted {
    at::Tensor b1, b2;
    at::ScalarType out_dtype;
  };

  // torchvision's IoU functions and losses return float32 for float16/bfloat16 boxes (its _upcast and
  // _upcast_non_float); mmdet's bbox_overlaps returns the boxes' dtype.
  static Promoted promote(const at::Tensor& boxes1, const at::Tensor& boxes2, BoxMetric metric) {
    const at::ScalarType promoted = c10::promoteTypes(boxes1.scalar_type(), boxes2.scalar_type());
    // integer boxes reach the kernels only in the losses, which torchvision computes in float32
    const at::ScalarType comp = at::isIntegralType(promoted, false) ? at::kFloat : compute_dtype(promoted);
    return {boxes1.to(comp), boxes2.to(comp), metric_is_mm(metric) ? promoted : comp};
  }

  // ---- pairwise: [..., M, 4] x [..., N, 4] -> [..., M, N] -------------------------------------------
  // torchvision's IoU functions and losses take integer boxes; mmdet's bbox_overlaps does not.
  static BoxDtypes box_dtypes(BoxMetric metric) {
    return metric_is_mm(metric) ? BoxDtypes::kFloating : BoxDtypes::kFloatingOrInteger;
  }

  // The batch dimensions of a pairwise call: torchvision 0.29's IoU functions broadcast them
  // ([..., N, 4] x [..., M, 4] -> [..., N, M]); mmdet's bbox_overlaps wants them equal.
  enum class Batch : int8_t { kBroadcast, kEqual };

  // Checks a pairwise call; returns its batch shape.
  static std::vector<c10::SymInt> check_pairwise(const char* op, const at::Tensor& boxes1, const char* n1,
                                                 const at::Tensor& boxes2, const char* n2, Batch batch,
                                                 BoxDtypes dtypes) {
    const bool mmdet = batch == Batch::kEqual;
    check_boxes(boxes1, op, n1, mmdet ? "[..., M, 4]" : "[..., N, 4]", 2, kAnyRank, dtypes);
    check_boxes(boxes2, op, n2, mmdet ? "[..., N, 4]" : "[..., M, 4]", 2, kAnyRank, dtypes);
    check_same_device(boxes1, n1, boxes2, n2, op);
    const c10::SymIntArrayRef lead1 = boxes1.sym_sizes().slice(0, boxes1.dim() - 2);
    const c10::SymIntArrayRef lead2 = boxes2.sym_sizes().slice(0, boxes2.dim() - 2);
    if (mmdet) {
      TORCH_CHECK_VALUE(lead1 == lead2, "pydet.", op, ": the batch dimensions of ", n1, " ",
                        shape_str(boxes1.sym_sizes()), " and ", n2, " ", shape_str(boxes2.sym_sizes()), " must match");
      return lead1.vec();
    }
    auto shape = broadcast_shapes(lead1, lead2);
    TORCH_CHECK_VALUE(shape.has_value(), "pydet.", op, ": the batch dimensions of ", n1, " ",
                      shape_str(boxes1.sym_sizes()), " and ", n2, " ", shape_str(boxes2.sym_sizes()),
                      " must be equal or broadcastable");
    return *shape;
  }

  // boxes [..., rows, 4] broadcast to the batch and flattened to [B, rows, 4] (a view when possible).
  static at::Tensor flat_batch(const at::Tensor& boxes, const std::vector<c10::SymInt>& batch) {
    std::vector<c10::SymInt> full = batch;
    full.push_back(boxes.sym_size(-2));
    full.push_back(4);
    c10::SymInt flat = 1;
    for (const c10::SymInt& d : batch) flat *= d;
    return boxes.expand_symint(full).reshape_symint({flat, boxes.sym_size(-2), 4});
  }

  static std::vector<c10::SymInt> with_rows(std::vector<c10::SymInt> batch, const c10::SymInt& rows,
                                            const c10::SymInt& cols) {
    batch.push_back(rows);
    batch.push_back(cols);
    return batch;
  }

  static at::Tensor pairwise(const char* op, const at::Tensor& boxes1, const char* n1, const at::Tensor& boxes2,
                             const char* n2, Batch batching, BoxMetric metric, double eps, double offset,
                             BoxFormat fmt = BoxFormat::kXYXY) {
    const std::vector<c10::SymInt> batch = check_pairwise(op, boxes1, n1, boxes2, n2, batching, box_dtypes(metric));
    if (eager_boxes::computes(metric, boxes1, boxes2)) {
      return eager_boxes::metric(metric, boxes1.unsqueeze(-2), boxes2.unsqueeze(-3), eps, fmt);
    }
    const Promoted p = promote(boxes1, boxes2, metric);
    const at::Tensor b1 = flat_batch(p.b1, batch);
    const at::Tensor b2 = flat_batch(p.b2, batch);
    const c10::SymInt M = b1.sym_size(1), N = b2.sym_size(1);
    at::Tensor out = at::empty_symint({b1.sym_size(0), M, N}, b1.options());
    if (computes(out)) Kernels::pairwise(b1, b2, out, metric, eps, offset, fmt);
    return out.to(p.out_dtype).view_symint(with_rows(batch, M, N));
  }

  static std::tuple<at::Tensor, at::Tensor> pairwise_backward(const at::Tensor& grad, const at::Tensor& boxes1,
                                                              const at::Tensor& boxes2, c10::string_view metric,
                                                              double eps, double offset, c10::string_view fmt) {
    const BoxMetric m = parse_choice(metric, kMetrics, "_pairwise_box_metric_backward", "metric");
    const BoxFormat f = parse_choice(fmt, kAllBoxFormats, "_pairwise_box_metric_backward", "fmt");
    TORCH_CHECK(!is_rotated(f), "pydet.box_iou: the IoU of rotated boxes (fmt='", std::string(fmt),
                "') has no gradient, as torchvision's box_iou_rotated has none");
    TORCH_CHECK_VALUE(metric_is_pairwise(m), "pydet._pairwise_box_metric_backward: metric '", std::string(metric),
                      "' exists only in aligned form");
    const Promoted p = promote(boxes1, boxes2, m);
    const std::vector<c10::SymInt> batch =
        *broadcast_shapes(boxes1.sym_sizes().slice(0, boxes1.dim() - 2), boxes2.sym_sizes().slice(0, boxes2.dim() - 2));
    const at::Tensor b1 = flat_batch(p.b1, batch);
    const at::Tensor b2 = flat_batch(p.b2, batch);
    const c10::SymInt M = b1.sym_size(1), N = b2.sym_size(1);
    const at::Tensor g = grad.to(b1.scalar_type()).reshape_symint({b1.sym_size(0), M, N}).contiguous();
    at::Tensor g1 = at::empty_symint(b1.sym_sizes(), b1.options());
    at::Tensor g2 = at::empty_symint(b2.sym_sizes(), b2.options());
    if (computes(g)) {
      Kernels::pairwise_backward(g, b1, b2, g1, g2, m, eps, offset, f);
    } else {
      g1.zero_();
      g2.zero_();
    }
    // Undo the batch broadcast: sum each gradient over the dimensions its boxes were expanded along.
    return {at::sum_to(g1.view_symint(with_rows(batch, M, 4)), boxes1.sym_sizes()).to(boxes1.scalar_type()),
            at::sum_to(g2.view_symint(with_rows(batch, N, 4)), boxes2.sym_sizes()).to(boxes2.scalar_type())};
  }

  // ---- aligned: [..., 4] x [..., 4] (broadcast) -> [...] ----------------------------------------------
  struct Aligned {
    at::Tensor b1, b2;               // [K, 4] each, compute dtype
    std::vector<c10::SymInt> shape;  // broadcast leading shape
    at::ScalarType out_dtype;
  };

  static Aligned aligned_inputs(const char* op, const at::Tensor& boxes1, const char* n1, const at::Tensor& boxes2,
                                const char* n2, BoxMetric metric) {
    check_boxes(boxes1, op, n1, "[..., 4]", 1, kAnyRank, box_dtypes(metric));
    check_boxes(boxes2, op, n2, "[..., 4]", 1, kAnyRank, box_dtypes(metric));
    check_same_device(boxes1, n1, boxes2, n2, op);
    const auto shape_opt =
        broadcast_shapes(boxes1.sym_sizes().slice(0, boxes1.dim() - 1), boxes2.sym_sizes().slice(0, boxes2.dim() - 1));
    TORCH_CHECK_VALUE(shape_opt.has_value(), "pydet.", op, ": the leading dimensions of ", n1, " ",
                      shape_str(boxes1.sym_sizes()), " and ", n2, " ", shape_str(boxes2.sym_sizes()),
                      " must be equal or broadcastable");
    std::vector<c10::SymInt> shape = *shape_opt;
    std::vector<c10::SymInt> full = shape;
    full.push_back(4);
    const Promoted p = promote(boxes1, boxes2, metric);
    return {p.b1.expand_symint(full).reshape_symint({-1, 4}), p.b2.expand_symint(full).reshape_symint({-1, 4}),
            std::move(shape), p.out_dtype};
  }

  static at::Tensor aligned(const char* op, const at::Tensor& boxes1, const char* n1, const at::Tensor& boxes2,
                            const char* n2, BoxMetric metric, double eps, double offset) {
    Aligned a = aligned_inputs(op, boxes1, n1, boxes2, n2, metric);
    if (eager_boxes::computes(metric, boxes1, boxes2)) {
      return eager_boxes::metric(metric, boxes1, boxes2, eps);  // the diagonal of the pairwise form
    }
    at::Tensor out = at::empty_symint({a.b1.sym_size(0)}, a.b1.options());
    if (computes(out)) Kernels::aligned(a.b1, a.b2, out, metric, eps, offset);
    return out.to(a.out_dtype).view_symint(a.shape);
  }

  // grad: same shape as the aligned output, or a scalar (reduced losses) multiplied by grad_scale.
  static std::tuple<at::Tensor, at::Tensor> aligned_backward(const at::Tensor& grad, const at::Tensor& boxes1,
                                                             const at::Tensor& boxes2, c10::string_view metric,
                                                             double eps, double offset, double grad_scale) {
    const BoxMetric m = parse_choice(metric, kMetrics, "_aligned_box_metric_backward", "metric");
    Aligned a = aligned_inputs("_aligned_box_metric_backward", boxes1, "boxes1", boxes2, "boxes2", m);
    const c10::SymInt K = a.b1.sym_size(0);
    const at::Tensor g = grad.dim() == 0
                             ? grad.to(a.b1.scalar_type()).reshape({1})
                             : grad.to(a.b1.scalar_type()).expand_symint(a.shape).reshape_symint({K}).contiguous();
    at::Tensor g1 = at::empty_symint({K, 4}, a.b1.options());
    at::Tensor g2 = at::empty_symint({K, 4}, a.b1.options());
    if (computes(g1)) Kernels::aligned_backward(g, grad_scale, a.b1, a.b2, g1, g2, m, eps, offset);
    std::vector<c10::SymInt> full = a.shape;
    full.push_back(4);
    // Undo the broadcast: sum the gradient over the dimensions each input was expanded along.
    return {at::sum_to(g1.view_symint(full), boxes1.sym_sizes()).to(boxes1.scalar_type()),
            at::sum_to(g2.view_symint(full), boxes2.sym_sizes()).to(boxes2.scalar_type())};
  }

  // ---- losses ----------------------------------------------------------------------------------
  static at::Tensor loss(const char* op, const at::Tensor& boxes1, const at::Tensor& boxes2, c10::string_view reduction,
                         double eps, BoxMetric metric) {
    const Reduction red = parse_choice(reduction, kReductions, op, "reduction");
    Aligned a = aligned_inputs(op, boxes1, "boxes1", boxes2, "boxes2", metric);
    at::Tensor per_pair = at::empty_symint({a.b1.sym_size(0)}, a.b1.options());
    if (computes(per_pair)) Kernels::aligned(a.b1, a.b2, per_pair, metric, eps, 0.0);
    if (red == Reduction::kNone) return per_pair.to(a.out_dtype).view_symint(a.shape);
    if (!computes(per_pair)) return at::zeros({}, per_pair.options().dtype(a.out_dtype));
    at::Tensor total = Kernels::sum(per_pair);
    if (red == Reduction::kMean) total.div_(double(per_pair.numel()));
    return total.to(a.out_dtype);
  }

  // torchvision 0.29's box_iou of rotated boxes [N, K] x [M, K]: converted to cxcywhr and handed to
  // box_iou_rotated, as torchvision hands them to its own, whose result is float32 for every dtype.
  static at::Tensor rotated_iou(const at::Tensor& boxes1, const at::Tensor& boxes2, BoxFormat fmt) {
    const bool polygon = fmt == BoxFormat::kXYXYXYXY;
    check_boxes(boxes1, "box_iou", "boxes1", polygon ? "[N, 8]" : "[N, 5]", 2, 2, BoxDtypes::kFloating,
                coordinates_of(fmt));
    check_boxes(boxes2, "box_iou", "boxes2", polygon ? "[M, 8]" : "[M, 5]", 2, 2, BoxDtypes::kFloating,
                coordinates_of(fmt));
    check_same_device(boxes1, "boxes1", boxes2, "boxes2", "box_iou");
    const auto centered = [fmt](const at::Tensor& b) {
      return fmt == BoxFormat::kCXCYWHR ? b : rotated_formats::convert(b, fmt, BoxFormat::kCXCYWHR);
    };
    static const auto box_iou_rotated = c10::Dispatcher::singleton()
                                            .findSchemaOrThrow("pydet::box_iou_rotated", "")
                                            .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
    return box_iou_rotated.call(centered(boxes1), centered(boxes2)).to(at::kFloat);
  }

  static void register_all(torch::Library& m) {
    m.impl("box_iou", [](const at::Tensor& b1, const at::Tensor& b2, c10::string_view fmt) {
      const BoxFormat f = parse_choice(fmt, kAllBoxFormats, "box_iou", "fmt");
      if (is_rotated(f)) return rotated_iou(b1, b2, f);
      return pairwise("box_iou", b1, "boxes1", b2, "boxes2", Batch::kBroadcast, BoxMetric::kIoU, 0.0, 0.0, f);
    });
    m.impl("generalized_box_iou", [](const at::Tensor& b1, const at::Tensor& b2) {
      return pairwise("generalized_box_iou", b1, "boxes1", b2, "boxes2", Batch::kBroadcast, BoxMetric::kGIoU, 0.0, 0.0);
    });
    m.impl("distance_box_iou", [](const at::Tensor& b1, const at::Tensor& b2, double eps) {
      return pairwise("distance_box_iou", b1, "boxes1", b2, "boxes2", Batch::kBroadcast, BoxMetric::kDIoU, eps, 0.0);
    });
    m.impl("complete_box_iou", [](const at::Tensor& b1, const at::Tensor& b2, double eps) {
      return pairwise("complete_box_iou", b1, "boxes1", b2, "boxes2", Batch::kBroadcast, BoxMetric::kCIoU, eps, 0.0);
    });
    m.impl("box_iou_aligned", [](const at::Tensor& b1, const at::Tensor& b2) {
      return aligned("box_iou_aligned", b1, "boxes1", b2, "boxes2", BoxMetric::kIoU, 0.0, 0.0);
    });
    m.impl("generalized_box_iou_aligned", [](const at::Tensor& b1, const at::Tensor& b2) {
      return aligned("generalized_box_iou_aligned", b1, "boxes1", b2, "boxes2", BoxMetric::kGIoU, 0.0, 0.0);
    });
    m.impl("distance_box_iou_aligned", [](const at::Tensor& b1, const at::Tensor& b2, double eps) {
      return aligned("distance_box_iou_aligned", b1, "boxes1", b2, "boxes2", BoxMetric::kDIoU, eps, 0.0);
    });
    m.impl("complete_box_iou_aligned", [](const at::Tensor& b1, const at::Tensor& b2, double eps) {
      return aligned("complete_box_iou_aligned", b1, "boxes1", b2, "boxes2", BoxMetric::kCIoU, eps, 0.0);
    });
    m.impl("bbox_overlaps", [](const at::Tensor& b1, const at::Tensor& b2, c10::string_view mode, bool is_aligned,
                               double eps, int64_t offset) {
      const BoxMetric metric = parse_choice(mode, kOverlapModes, "bbox_overlaps", "mode");
      TORCH_CHECK_VALUE(offset == 0 || offset == 1, "pydet.bbox_overlaps: offset must be 0 or 1, got ", offset);
      if (!is_aligned)
        return pairwise("bbox_overlaps", b1, "bboxes1", b2, "bboxes2", Batch::kEqual, metric, eps, offset);
      // mmdet's aligned mode wants identical shapes (no broadcasting).
      check_boxes(b1, "bbox_overlaps", "bboxes1", "[..., M, 4]", 2, kAnyRank);
      check_boxes(b2, "bbox_overlaps", "bboxes2", "[..., M, 4]", 2, kAnyRank);
      TORCH_CHECK_VALUE(b1.sym_sizes() == b2.sym_sizes(), "pydet.bbox_overlaps: with is_aligned=True, bboxes1 ",
                        shape_str(b1.sym_sizes()), " and bboxes2 ", shape_str(b2.sym_sizes()),
                        " must have the same shape");
      return aligned("bbox_overlaps", b1, "bboxes1", b2, "bboxes2", metric, eps, offset);
    });
    m.impl("generalized_box_iou_loss", [](const at::Tensor& b1, const at::Tensor& b2, c10::string_view r, double eps) {
      return loss("generalized_box_iou_loss", b1, b2, r, eps, BoxMetric::kGIoULoss);
    });
    m.impl("distance_box_iou_loss", [](const at::Tensor& b1, const at::Tensor& b2, c10::string_view r, double eps) {
      return loss("distance_box_iou_loss", b1, b2, r, eps, BoxMetric::kDIoULoss);
    });
    m.impl("complete_box_iou_loss", [](const at::Tensor& b1, const at::Tensor& b2, c10::string_view r, double eps) {
      return loss("complete_box_iou_loss", b1, b2, r, eps, BoxMetric::kCIoULoss);
    });
    m.impl("_pairwise_box_metric_backward", &pairwise_backward);
    m.impl("_aligned_box_metric_backward", &aligned_backward);
  }
};

}  // namespace pydet::box_iou
