// Every string argument's choices, in one table each, and the one parser that reads them: an unknown
// value raises ValueError("pydet.<op>: <arg> must be one of 'a', 'b', got 'x'"), listing the table.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cstddef>
#include <string>

#include "common/activation.h"
#include "common/box_math.h"
#include "common/coder_math.h"
#include "common/nms_math.h"

namespace pydet {

template <class E>
struct Choice {
  const char* name;
  E value;
};

template <class E, size_t N>
E parse_choice(c10::string_view value, const Choice<E> (&choices)[N], const char* op, const char* arg) {
  for (const Choice<E>& c : choices) {
    if (value == c.name) return c.value;
  }
  std::string names;
  for (size_t i = 0; i < N; ++i) names += c10::str(i ? ", '" : "'", choices[i].name, "'");
  C10_THROW_ERROR(ValueError,
                  c10::str("pydet.", op, ": ", arg, " must be one of ", names, ", got '", std::string(value), "'"));
}

enum class Reduction : int8_t { kNone, kMean, kSum };

// The axis-aligned formats (box_area, the kernels); box_convert and box_iou also take the rotated ones.
inline constexpr Choice<BoxFormat> kBoxFormats[] = {
    {"xyxy", BoxFormat::kXYXY}, {"xywh", BoxFormat::kXYWH}, {"cxcywh", BoxFormat::kCXCYWH}};
inline constexpr Choice<BoxFormat> kAllBoxFormats[] = {
    {"xyxy", BoxFormat::kXYXY},   {"xywh", BoxFormat::kXYWH},       {"cxcywh", BoxFormat::kCXCYWH},
    {"xywhr", BoxFormat::kXYWHR}, {"cxcywhr", BoxFormat::kCXCYWHR}, {"xyxyxyxy", BoxFormat::kXYXYXYXY}};
// multiclass_nms decodes no xywh boxes.
inline constexpr Choice<BoxFormat> kCornerOrCenterFormats[] = {{"xyxy", BoxFormat::kXYXY},
                                                               {"cxcywh", BoxFormat::kCXCYWH}};
inline constexpr Choice<Reduction> kReductions[] = {
    {"none", Reduction::kNone}, {"mean", Reduction::kMean}, {"sum", Reduction::kSum}};
// The internal backward ops' metric argument.
inline constexpr Choice<BoxMetric> kMetrics[] = {{"iou", BoxMetric::kIoU},
                                                 {"giou", BoxMetric::kGIoU},
                                                 {"diou", BoxMetric::kDIoU},
                                                 {"ciou", BoxMetric::kCIoU},
                                                 {"giou_loss", BoxMetric::kGIoULoss},
                                                 {"diou_loss", BoxMetric::kDIoULoss},
                                                 {"ciou_loss", BoxMetric::kCIoULoss},
                                                 {"mm_iou", BoxMetric::kMmIoU},
                                                 {"mm_iof", BoxMetric::kMmIoF},
                                                 {"mm_giou", BoxMetric::kMmGIoU}};
// mmdet bbox_overlaps' mode.
inline constexpr Choice<BoxMetric> kOverlapModes[] = {
    {"iou", BoxMetric::kMmIoU}, {"iof", BoxMetric::kMmIoF}, {"giou", BoxMetric::kMmGIoU}};
// The matching ops' quality measure: torchvision box_iou, or mmdet bbox_overlaps 'iou' / 'iof'.
inline constexpr Choice<BoxMetric> kQualityModes[] = {
    {"iou", BoxMetric::kIoU}, {"mm_iou", BoxMetric::kMmIoU}, {"mm_iof", BoxMetric::kMmIoF}};
inline constexpr Choice<Coding> kCodings[] = {
    {"torchvision", Coding::kTorchvision}, {"mmdet", Coding::kMmdet}, {"ssd", Coding::kSsd}};
inline constexpr Choice<Activation> kActivations[] = {
    {"none", Activation::kNone}, {"relu", Activation::kRelu},  {"relu6", Activation::kRelu6},
    {"silu", Activation::kSilu}, {"swish", Activation::kSilu}, {"hardswish", Activation::kHardswish}};
inline constexpr Choice<SoftNmsMethod> kSoftNmsMethods[] = {
    {"naive", SoftNmsMethod::kNaive}, {"linear", SoftNmsMethod::kLinear}, {"gaussian", SoftNmsMethod::kGaussian}};

}  // namespace pydet
