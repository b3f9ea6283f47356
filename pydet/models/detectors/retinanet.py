"""RetinaNet (Lin et al. 2017) with torchvision's ``RetinaNet`` interface, parameter names and algorithms.

Training: anchors matched with ``Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)``
(fused, no IoU matrix); sigmoid focal loss (fused kernel) over every anchor not between the thresholds,
L1 (or smooth-L1 / GIoU) box loss on the foreground, each normalised by the image's foreground count.
Inference, per image and FPN level: the ``topk_candidates`` best (anchor, class) scores above
``score_thresh`` are decoded and clipped; the candidates of all levels go through class-wise NMS
(IoU > ``nms_thresh``) and the ``detections_per_img`` best are kept (torchvision's algorithm; the
NMS is one fused ``multiclass_nms`` call for the batch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pydet.anchors.torchvision import AnchorGenerator
from pydet.coders import BoxCoder
from pydet.matchers.torchvision import Matcher
from pydet.models.detectors.base import DenseDetector, clip_to_images, shared_size
from pydet.models.detectors.transform import DetectionTransform
from pydet.models.heads import RetinaNetHead
from pydet.models.losses import BOX_LOSSES, box_loss, retinanet_classification_loss, retinanet_regression_loss
from pydet.ops import MulticlassNmsOutput, box_encode, multiclass_nms, topk_per_level


def default_anchor_generator() -> AnchorGenerator:
    """torchvision's RetinaNet anchors: sizes 32..512 (x 2^0, 2^(1/3), 2^(2/3)), ratios 0.5, 1, 2."""
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512])
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def sigmoid_prefilter(score_thresh: float, dtype: torch.dtype) -> float | None:
    """A bound such that a logit of ``dtype`` that is not above it (compared in ``dtype``, as
    ``topk_per_level`` does) cannot have ``sigmoid(x) > score_thresh``: the threshold's logit lowered
    by more than the rounding of the score (``sigmoid`` and the threshold in ``dtype``, a few ulp of
    the score, i.e. ``eps / (1 - t)`` each in x: 8 such) and of the bound itself (half an ulp of it,
    under ``eps |logit|``). None when every logit may pass (``score_thresh < 0``)."""
    if score_thresh < 0:
        return None
    if score_thresh >= 1:
        return math.inf
    if score_thresh == 0:
        return -math.inf
    logit, eps = math.log(score_thresh / (1 - score_thresh)), torch.finfo(dtype).eps
    return logit - 1e-6 - eps * (8 / (1 - score_thresh) + abs(logit) + 1)


class RetinaNet(DenseDetector):
    """``RetinaNet(backbone, num_classes, ...)``: ``backbone`` returns the FPN levels and has an
    ``out_channels`` attribute; ``num_classes`` has no background class."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        anchor_generator: AnchorGenerator | None = None,
        head: nn.Module | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 300,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.4,
        topk_candidates: int = 1000,
        box_loss_type: str = "l1",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if not hasattr(backbone, "out_channels"):
            raise ValueError("RetinaNet: backbone must have an out_channels attribute (the FPN's channels)")
        if box_loss_type not in BOX_LOSSES:
            raise ValueError(
                f"RetinaNet: box_loss_type must be one of {', '.join(BOX_LOSSES)}, got '{box_loss_type}'"
            )
        self.backbone = backbone
        self.anchor_generator = anchor_generator or default_anchor_generator()
        self.head = head or RetinaNetHead(
            backbone.out_channels, self.anchor_generator.num_anchors_per_location()[0], num_classes
        )
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.transform = DetectionTransform(
            min_size, max_size, image_mean or [0.485, 0.456, 0.406], image_std or [0.229, 0.224, 0.225]
        )
        self.num_classes = num_classes
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.box_loss_type = box_loss_type
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def compute_loss(self, head_outputs, anchors, gt_boxes, gt_labels, num_gt) -> dict[str, Tensor]:
        matched = self.proposal_matcher.match_boxes(gt_boxes, anchors, num_gt)
        deltas = head_outputs["bbox_regression"]
        target_deltas = box_encode(anchors, gt_boxes, "torchvision", target_index=matched)
        target_boxes = gt_boxes.gather(1, matched.clamp(min=0)[..., None].expand(-1, -1, 4))
        per_anchor = box_loss(
            self.box_loss_type,
            deltas,
            target_deltas,
            lambda d: self.box_coder.decode_single(d, anchors),
            target_boxes,
        )
        return {
            "classification": retinanet_classification_loss(
                head_outputs["cls_logits"], matched, gt_labels, self.focal_alpha, self.focal_gamma
            ),
            "bbox_regression": retinanet_regression_loss(per_anchor, matched),
        }

    def predict(self, head_outputs, anchors: Tensor, image_sizes, level_counts) -> MulticlassNmsOutput:
        logits, deltas = head_outputs["cls_logits"], head_outputs["bbox_regression"]
        num_classes = logits.shape[-1]
        # Per image and level, the topk_candidates best (anchor, class) logits in one pass. sigmoid is
        # monotonic, so these are the best scores; the pass compares logits with a bound just below the
        # threshold's logit, and the exact `sigmoid(x) > score_thresh` test runs on the k survivors only.
        top_logits, idx = topk_per_level(
            logits, self.topk_candidates, sigmoid_prefilter(self.score_thresh, logits.dtype), level_counts
        )
        scores, idx = top_logits.flatten(1).sigmoid(), idx.flatten(1)  # [B, L k]; padding: score 0, index -1
        if self.score_thresh < 0:  # padding would pass the threshold
            scores = torch.where(idx >= 0, scores, -math.inf)
        anchor_idx = idx.div(num_classes, rounding_mode="floor")  # padding stays -1 (decoded as zeros)
        # gather the candidates' anchors and deltas, decode (and clip) in one pass
        if (size := shared_size(image_sizes)) is not None:
            boxes = self.box_coder.decode_single(deltas, anchors, size, anchor_idx)
        else:
            boxes = clip_to_images(
                self.box_coder.decode_single(deltas, anchors, index=anchor_idx), image_sizes
            )
        # class-wise NMS over the candidates, each with its class (multiclass_nms applies `score > score_thresh`)
        return multiclass_nms(
            boxes,
            scores,
            self.score_thresh,
            self.nms_thresh,
            -1,
            self.detections_per_img,
            labels=idx.remainder(num_classes),
            num_classes=num_classes,
        )
