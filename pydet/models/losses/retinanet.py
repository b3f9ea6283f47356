"""RetinaNet's losses (torchvision ``RetinaNetHead.compute_loss``): sigmoid focal loss over every anchor
that is not between the IoU thresholds, box loss on the foreground, each summed per image, divided by
that image's foreground count (at least 1) and averaged over the batch."""

from __future__ import annotations

import torch
from torch import Tensor

from pydet.ops import sigmoid_focal_loss

BETWEEN_THRESHOLDS = -2


def retinanet_classification_loss(
    cls_logits: Tensor, matched_idxs: Tensor, gt_labels: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """``cls_logits [B, N, C]``, ``matched_idxs [B, N]`` (-1 background, -2 ignored), ``gt_labels [B, M]``."""
    foreground = matched_idxs >= 0
    labels = gt_labels.gather(1, matched_idxs.clamp(min=0))
    targets = torch.zeros_like(cls_logits)
    targets.scatter_(2, labels.clamp(min=0)[..., None], foreground[..., None].to(cls_logits.dtype))
    valid = (matched_idxs != BETWEEN_THRESHOLDS)[..., None]
    per_image = (sigmoid_focal_loss(cls_logits, targets, alpha, gamma) * valid).sum((1, 2))
    return (per_image / foreground.sum(1).clamp(min=1)).mean()


def retinanet_regression_loss(per_anchor_loss: Tensor, matched_idxs: Tensor) -> Tensor:
    """``per_anchor_loss [B, N]`` (box loss of each anchor) summed over the foreground per image."""
    foreground = matched_idxs >= 0
    per_image = (per_anchor_loss * foreground).sum(1)
    return (per_image / foreground.sum(1).clamp(min=1)).mean()
