"""IoU matching reductions without the IoU matrix (the kernels under :mod:`pydet.matchers`).

Every IoU matcher (torchvision ``Matcher``/``SSDMatcher``, detectron2 ``Matcher``, mmdet
``MaxIoUAssigner``) only needs reductions of the quality matrix ``Q [M, N]`` between ground truth
and anchors. These kernels compute ``Q`` on the fly, with the same formula as :func:`box_iou`
(``mode="iou"``) or mmdet's ``bbox_overlaps`` (``"mm_iou"``, ``"mm_iof"``, union clamped by
``eps``), so every value equals the matrix entry bit for bit, and use O(M + N) memory.

Ground truth may be batched, ``gt [B, M, 4]`` with ``num_gt [B]`` real boxes per image (rows past
the count are padding), against anchors ``[N, 4]`` shared by every image. ``ignored [N]`` /
``[B, N]`` forces an anchor's quality to -1 for every ground truth (mmdet's ignore regions).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

QUALITY_MODES = ("iou", "mm_iou", "mm_iof")


class OverlapMax(NamedTuple):
    """``torch.max`` of the quality matrix along both axes (NaN wins, ties go to the lower index).

    ``anchor_max, anchor_argmax [B?, N]``: best quality of each anchor and the first ground truth
    attaining it (``-inf`` and ``-1`` for an image without ground truth).
    ``gt_max, gt_argmax [B?, M]``: best quality of each ground truth and the first anchor attaining
    it (``-inf`` and ``-1`` for padding rows and when there are no anchors).
    """

    anchor_max: Tensor
    anchor_argmax: Tensor
    gt_max: Tensor
    gt_argmax: Tensor


def box_overlap_max(
    gt: Tensor,
    anchors: Tensor,
    num_gt: Tensor | None = None,
    mode: str = "iou",
    anchors_first: bool = False,
    eps: float = 1e-6,
    ignored: Tensor | None = None,
) -> OverlapMax:
    """Reductions of ``Q = quality(gt [B?, M, 4], anchors [N, 4])`` along both axes; see :class:`OverlapMax`.

    ``anchors_first`` takes ``mm_iof`` relative to the anchor instead of the ground-truth box.
    """
    return OverlapMax(
        *torch.ops.pydet.box_overlap_max(gt, anchors, num_gt, mode, anchors_first, eps, ignored)
    )


def box_overlap_ties(
    gt: Tensor,
    anchors: Tensor,
    gt_best: Tensor,
    min_best: float = -float("inf"),
    num_gt: Tensor | None = None,
    mode: str = "iou",
    eps: float = 1e-6,
    ignored: Tensor | None = None,
) -> Tensor:
    """Low-quality matching: for each anchor ``[B?, N]`` the last ground truth ``m`` with
    ``gt_best[m] >= min_best`` and ``Q[m, n] == gt_best[m]``, or -1 (int64).

    ``gt_best`` is :func:`box_overlap_max`'s ``gt_max`` (computed with the same ``mode``).
    """
    return torch.ops.pydet.box_overlap_ties(gt, anchors, gt_best, float(min_best), num_gt, mode, eps, ignored)
