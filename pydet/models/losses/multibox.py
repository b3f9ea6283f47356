"""SSD's MultiBox loss: smooth-L1 on the matched anchors plus cross-entropy with 3:1 hard-negative
mining, torchvision's ``SSD.compute_loss`` formula, computed for the whole batch at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pydet.models.losses.box import box_loss


def multibox_loss(
    cls_logits: Tensor,
    bbox_regression: Tensor,
    matched_idxs: Tensor,
    gt_labels: Tensor,
    target_deltas: Tensor,
    neg_to_pos_ratio: int = 3,
) -> dict[str, Tensor]:
    """Args:
        cls_logits: ``[B, N, C]`` (class 0 is the background).
        bbox_regression: ``[B, N, 4]`` predicted deltas.
        matched_idxs: ``[B, N]`` ground-truth index per anchor, negative for background.
        gt_labels: ``[B, M]`` labels (>= 1) of the padded ground truth.
        target_deltas: ``[B, N, 4]`` encoded matched ground truth (ignored where unmatched).

    Returns ``{"bbox_regression", "classification"}``, each summed and divided by the number of
    foreground anchors in the batch (at least 1). Hard negatives: per image, the ``3 x #foreground``
    background anchors with the highest cross-entropy (ties broken by a stable descending sort).
    """
    foreground = matched_idxs >= 0
    bbox_loss = (box_loss("smooth_l1", bbox_regression, target_deltas) * foreground).sum()
    cls_targets = torch.where(foreground, gt_labels.gather(1, matched_idxs.clamp(min=0)), 0)
    num_classes = cls_logits.size(-1)
    cls_loss = F.cross_entropy(cls_logits.reshape(-1, num_classes), cls_targets.reshape(-1), reduction="none")
    cls_loss = cls_loss.view(cls_targets.shape)
    positive = cls_targets > 0
    num_negative = neg_to_pos_ratio * positive.sum(1, keepdim=True)
    negative_loss = cls_loss.masked_fill(positive, -float("inf"))
    _, order = negative_loss.sort(1, descending=True)
    background = order.sort(1)[1] < num_negative
    n = foreground.sum().clamp(min=1)
    return {
        "bbox_regression": bbox_loss / n,
        "classification": ((cls_loss * positive).sum() + (cls_loss * background).sum()) / n,
    }
