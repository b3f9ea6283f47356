"""SSD (Liu et al. 2016) with torchvision's ``SSD`` interface, parameter names and algorithms.

Training: every anchor (default box) is matched to the ground truth of highest IoU if >= ``iou_thresh``,
and every ground truth claims its best anchor (``SSDMatcher``, fused, no IoU matrix); the loss is the
MultiBox loss (smooth-L1 + cross-entropy with ``neg_to_pos_ratio`` hard negatives).
Inference: decode with weights (10, 10, 5, 5), clip to the image, softmax, then per class (background
0 excluded) the ``topk_candidates`` best scores above ``score_thresh`` enter NMS (IoU > ``nms_thresh``),
and the ``detections_per_img`` best survivors are returned: one ``multiclass_nms`` call per batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pydet.anchors.torchvision import DefaultBoxGenerator
from pydet.coders import BoxCoder
from pydet.matchers.torchvision import SSDMatcher
from pydet.models.detectors.base import DenseDetector, clip_to_images
from pydet.models.detectors.transform import DetectionTransform
from pydet.models.heads import SSDHead
from pydet.models.losses import multibox_loss
from pydet.ops import MulticlassNmsOutput, box_encode, multiclass_nms

SSD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _infer_out_channels(backbone: nn.Module, size: tuple[int, int]) -> list[int]:
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, size[1], size[0]))
    backbone.train(was_training)
    values = features.values() if isinstance(features, dict) else features
    return [f.shape[1] for f in values]


class SSD(DenseDetector):
    """``SSD(backbone, anchor_generator, size, num_classes, ...)``: ``size`` is (width, height) as in
    torchvision; ``num_classes`` includes the background. ``head`` defaults to :class:`SSDHead` with the
    backbone's channels (found by running it once on a dummy input)."""

    def __init__(
        self,
        backbone: nn.Module,
        anchor_generator: DefaultBoxGenerator,
        size: tuple[int, int],
        num_classes: int,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        head: nn.Module | None = None,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        detections_per_img: int = 200,
        iou_thresh: float = 0.5,
        topk_candidates: int = 400,
        positive_fraction: float = 0.25,
    ):
        super().__init__()
        if not 0.0 < positive_fraction <= 1.0:
            raise ValueError(f"SSD: positive_fraction must be in (0, 1], got {positive_fraction}")
        self.backbone = backbone
        self.anchor_generator = anchor_generator
        if head is None:
            channels = _infer_out_channels(backbone, size)
            num_anchors = anchor_generator.num_anchors_per_location()
            if len(channels) != len(num_anchors):
                raise ValueError(
                    f"SSD: the backbone gives {len(channels)} feature maps but the anchor generator has "
                    f"{len(num_anchors)} levels"
                )
            head = SSDHead(channels, num_anchors, num_classes)
        self.head = head
        self.proposal_matcher = SSDMatcher(iou_thresh)
        self.box_coder = BoxCoder(SSD_BOX_WEIGHTS)
        self.transform = DetectionTransform(
            min(size),
            max(size),
            image_mean or [0.485, 0.456, 0.406],
            image_std or [0.229, 0.224, 0.225],
            size_divisible=1,
            fixed_size=size,
        )
        self.num_classes = num_classes
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.neg_to_pos_ratio = (1.0 - positive_fraction) / positive_fraction

    def compute_loss(self, head_outputs, anchors, gt_boxes, gt_labels, num_gt) -> dict[str, Tensor]:
        matched = self.proposal_matcher.match_boxes(gt_boxes, anchors, num_gt)
        target_deltas = box_encode(anchors, gt_boxes, "torchvision", SSD_BOX_WEIGHTS, target_index=matched)
        return multibox_loss(
            head_outputs["cls_logits"],
            head_outputs["bbox_regression"],
            matched,
            gt_labels,
            target_deltas,
            self.neg_to_pos_ratio,
        )

    def predict(self, head_outputs, anchors: Tensor, image_sizes, level_counts) -> MulticlassNmsOutput:
        deltas = head_outputs["bbox_regression"]
        boxes = self.box_coder.decode_single(deltas, anchors)
        boxes = clip_to_images(boxes, image_sizes)
        scores = head_outputs["cls_logits"].softmax(-1)
        return multiclass_nms(
            boxes,
            scores,
            self.score_thresh,
            self.nms_thresh,
            self.topk_candidates,
            self.detections_per_img,
            background_class=0,
        )
