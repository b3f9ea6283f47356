"""Typed wrappers of the ``torch.ops.pydet`` operators, with shapes and conventions documented.

``import pydet.ops as ops; ops.box_iou(a, b)`` and ``torch.ops.pydet.box_iou(a, b)`` are the same
kernel; importing this package also registers the fake kernels, autograd and autocast rules.
"""

from pydet.ops import _autograd  # noqa: F401  (registrations)
from pydet.ops.anchors import anchor_grid
from pydet.ops.boxes import (
    bbox_overlaps,
    box_area,
    box_convert,
    box_iou,
    box_iou_aligned,
    clip_boxes_to_image,
    complete_box_iou,
    complete_box_iou_aligned,
    complete_box_iou_loss,
    distance_box_iou,
    distance_box_iou_aligned,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_aligned,
    generalized_box_iou_loss,
    remove_small_boxes,
)
from pydet.ops.coders import box_decode, box_encode
from pydet.ops.conv import depthwise_conv2d
from pydet.ops.deform_conv import deform_conv2d
from pydet.ops.losses import sigmoid_focal_loss
from pydet.ops.masks import masks_to_boxes, paste_masks_in_image
from pydet.ops.matching import OverlapMax, box_overlap_max, box_overlap_ties
from pydet.ops.nms import (
    MulticlassNmsOutput,
    batched_nms,
    batched_nms_rotated,
    box_iou_rotated,
    multiclass_nms,
    multiclass_nms_to_list,
    nms,
    nms_rotated,
    soft_nms,
    topk_per_level,
)
from pydet.ops.roi import (
    multi_scale_roi_align,
    ps_roi_align,
    ps_roi_pool,
    roi_align,
    roi_align_rotated,
    roi_pool,
)

__all__ = [
    "MulticlassNmsOutput",
    "OverlapMax",
    "anchor_grid",
    "batched_nms",
    "batched_nms_rotated",
    "bbox_overlaps",
    "box_area",
    "box_convert",
    "box_decode",
    "box_encode",
    "box_iou",
    "box_iou_aligned",
    "box_iou_rotated",
    "box_overlap_max",
    "box_overlap_ties",
    "clip_boxes_to_image",
    "complete_box_iou",
    "complete_box_iou_aligned",
    "complete_box_iou_loss",
    "deform_conv2d",
    "depthwise_conv2d",
    "distance_box_iou",
    "distance_box_iou_aligned",
    "distance_box_iou_loss",
    "generalized_box_iou",
    "generalized_box_iou_aligned",
    "generalized_box_iou_loss",
    "masks_to_boxes",
    "multi_scale_roi_align",
    "multiclass_nms",
    "multiclass_nms_to_list",
    "nms",
    "nms_rotated",
    "paste_masks_in_image",
    "ps_roi_align",
    "ps_roi_pool",
    "remove_small_boxes",
    "roi_align",
    "roi_align_rotated",
    "roi_pool",
    "sigmoid_focal_loss",
    "soft_nms",
    "topk_per_level",
]
