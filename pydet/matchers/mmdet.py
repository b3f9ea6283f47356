"""mmdet's ``MaxIoUAssigner``, ``ATSSAssigner`` and ``AssignResult`` (``mmdet.core.bbox.assigners``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pydet.matchers._reduce import Reduced, from_boxes, from_matrix, last_index_scatter
from pydet.ops.boxes import bbox_overlaps
from pydet.ops.matching import box_overlap_max

_INF = 100000000


@dataclass
class AssignResult:
    """``gt_inds [N]``: 1-based assigned ground truth, 0 negative, -1 ignored; ``max_overlaps [N]``;
    ``labels [N]`` (-1 where not positive) or None."""

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor | None = None

    @property
    def num_preds(self) -> int:
        return len(self.gt_inds)


def _labels(gt_inds: Tensor, gt_labels: Tensor | None) -> Tensor | None:
    if gt_labels is None:
        return None
    positive = gt_inds > 0
    return torch.where(positive, gt_labels[(gt_inds - 1).clamp(min=0)] if gt_labels.numel() else -1, -1)


class MaxIoUAssigner:
    """Each box gets the ground truth of highest IoU: ``>= pos_iou_thr`` positive, in ``[0, neg_iou_thr)``
    (or ``[lo, hi)`` for a tuple) negative, otherwise ignored (-1). With ``match_low_quality`` every
    ground truth whose best IoU is ``>= min_pos_iou`` claims its best boxes (all tied boxes with
    ``gt_max_assign_all``, the first one otherwise); later ground truth wins. Boxes whose IoF with an
    ignore region exceeds ``ignore_iof_thr`` get IoU -1 with every ground truth.

    ``assign`` computes IoU on the fly (no ``M x N`` matrix); ``assign_wrt_overlaps`` takes the matrix.
    """

    def __init__(
        self,
        pos_iou_thr: float,
        neg_iou_thr: float | tuple[float, float],
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        ignore_iof_thr: float = -1,
        ignore_wrt_candidates: bool = True,
        match_low_quality: bool = True,
    ):
        if isinstance(neg_iou_thr, tuple):
            if len(neg_iou_thr) != 2 or not neg_iou_thr[0] <= neg_iou_thr[1]:
                raise ValueError(
                    f"MaxIoUAssigner: neg_iou_thr must be a float or (lo, hi) with lo <= hi, got {neg_iou_thr}"
                )
        elif not isinstance(neg_iou_thr, float | int):
            raise ValueError(f"MaxIoUAssigner: neg_iou_thr must be a float or (lo, hi), got {neg_iou_thr!r}")
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality

    def assign(
        self,
        bboxes: Tensor,
        gt_bboxes: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
        gt_labels: Tensor | None = None,
    ) -> AssignResult:
        """Assign ``bboxes [N, 4]`` to ``gt_bboxes [M, 4]`` (mmdet ``bbox_overlaps`` IoU, computed on the fly)."""
        bboxes = bboxes[:, :4]
        ignored = None
        if (
            self.ignore_iof_thr > 0
            and gt_bboxes_ignore is not None
            and gt_bboxes_ignore.numel() > 0
            and bboxes.numel() > 0
        ):
            # max IoF over the ignore regions, per box: the same fused reduction with the roles swapped
            iof = box_overlap_max(
                gt_bboxes_ignore, bboxes, None, "mm_iof", self.ignore_wrt_candidates
            ).anchor_max
            ignored = iof > self.ignore_iof_thr
        num_gts, num_bboxes = gt_bboxes.size(0), bboxes.size(0)
        if num_gts == 0 or num_bboxes == 0:
            return self._empty(num_gts, num_bboxes, bboxes, gt_labels)
        r = from_boxes(gt_bboxes, bboxes, None, "mm_iou", 1e-6, ignored)
        return self._assign(num_gts, r, gt_labels)

    def assign_wrt_overlaps(self, overlaps: Tensor, gt_labels: Tensor | None = None) -> AssignResult:
        """Assign from a ``[M, N]`` overlap matrix (drop-in)."""
        num_gts, num_bboxes = overlaps.size(0), overlaps.size(1)
        if num_gts == 0 or num_bboxes == 0:
            return self._empty(num_gts, num_bboxes, overlaps, gt_labels)
        return self._assign(num_gts, from_matrix(overlaps, "overlaps"), gt_labels)

    def _empty(self, num_gts: int, num_bboxes: int, like: Tensor, gt_labels: Tensor | None) -> AssignResult:
        gt_inds = torch.full((num_bboxes,), 0 if num_gts == 0 else -1, dtype=torch.long, device=like.device)
        labels = (
            None if gt_labels is None else torch.full((num_bboxes,), -1, dtype=torch.long, device=like.device)
        )
        return AssignResult(num_gts, gt_inds, like.new_zeros((num_bboxes,)), labels)

    def _assign(self, num_gts: int, r: Reduced, gt_labels: Tensor | None) -> AssignResult:
        max_overlaps = r.anchor_max
        gt_inds = torch.full_like(r.anchor_argmax, -1)
        if isinstance(self.neg_iou_thr, tuple):
            negative = (max_overlaps >= self.neg_iou_thr[0]) & (max_overlaps < self.neg_iou_thr[1])
        else:
            negative = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
        gt_inds = torch.where(negative, 0, gt_inds)
        gt_inds = torch.where(max_overlaps >= self.pos_iou_thr, r.anchor_argmax + 1, gt_inds)
        if self.match_low_quality:
            if self.gt_max_assign_all:
                claimed = r.ties(self.min_pos_iou)
            else:
                claimed = last_index_scatter(gt_inds.size(0), r.gt_argmax, r.gt_max >= self.min_pos_iou)
            gt_inds = torch.where(claimed >= 0, claimed + 1, gt_inds)
        return AssignResult(num_gts, gt_inds, max_overlaps, _labels(gt_inds, gt_labels))


class ATSSAssigner:
    """Adaptive Training Sample Selection: per level the ``topk`` boxes whose centres are closest to a
    ground truth's centre are candidates; those with IoU ``>= mean + std`` of the candidates' IoUs and
    centre inside the ground truth (by more than 0.01) are positive; a box positive for several ground
    truths takes the one of highest IoU. ``num_level_bboxes`` gives the boxes per level, in order.

    The centre distances are an ``[N, M]`` matrix, as in mmdet; IoUs are computed only for candidates.
    """

    def __init__(self, topk: int, ignore_iof_thr: float = -1):
        if topk < 1:
            raise ValueError(f"ATSSAssigner: topk must be >= 1, got {topk}")
        self.topk = topk
        self.ignore_iof_thr = ignore_iof_thr

    def assign(
        self,
        bboxes: Tensor,
        num_level_bboxes: list[int],
        gt_bboxes: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
        gt_labels: Tensor | None = None,
    ) -> AssignResult:
        bboxes = bboxes[:, :4]
        num_gt, num_bboxes = gt_bboxes.size(0), bboxes.size(0)
        if sum(num_level_bboxes) != num_bboxes:
            raise ValueError(
                f"ATSSAssigner: num_level_bboxes must sum to the number of boxes ({num_bboxes}), got {num_level_bboxes}"
            )
        gt_inds = bboxes.new_full((num_bboxes,), 0, dtype=torch.long)
        if num_gt == 0 or num_bboxes == 0:
            labels = None if gt_labels is None else bboxes.new_full((num_bboxes,), -1, dtype=torch.long)
            return AssignResult(num_gt, gt_inds, bboxes.new_zeros((num_bboxes,)), labels)
        gt_points = torch.stack(
            ((gt_bboxes[:, 0] + gt_bboxes[:, 2]) / 2.0, (gt_bboxes[:, 1] + gt_bboxes[:, 3]) / 2.0), 1
        )
        bboxes_cx = (bboxes[:, 0] + bboxes[:, 2]) / 2.0
        bboxes_cy = (bboxes[:, 1] + bboxes[:, 3]) / 2.0
        points = torch.stack((bboxes_cx, bboxes_cy), dim=1)
        distances = (points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()
        if self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0:
            iof = box_overlap_max(gt_bboxes_ignore, bboxes, None, "mm_iof", True).anchor_max
            ignore = iof > self.ignore_iof_thr
            distances[ignore, :] = _INF
            gt_inds[ignore] = -1
        candidates = []
        start = 0
        for count in num_level_bboxes:
            k = min(self.topk, count)
            _, idx = distances[start : start + count].topk(k, dim=0, largest=False)
            candidates.append(idx + start)
            start += count
        candidate_idxs = torch.cat(candidates, dim=0)  # [K, M]
        gt_expanded = gt_bboxes[None].expand(candidate_idxs.size(0), num_gt, 4)
        # IoU of each candidate with its ground truth: the same formula as the full matrix, pairwise
        candidate_overlaps = bbox_overlaps(bboxes[candidate_idxs], gt_expanded, "iou", is_aligned=True)
        threshold = candidate_overlaps.mean(0) + candidate_overlaps.std(0)
        is_pos = candidate_overlaps >= threshold[None, :]
        cx, cy = bboxes_cx[candidate_idxs], bboxes_cy[candidate_idxs]
        inside = (
            torch.stack(
                [cx - gt_bboxes[:, 0], cy - gt_bboxes[:, 1], gt_bboxes[:, 2] - cx, gt_bboxes[:, 3] - cy],
                dim=1,
            ).min(dim=1)[0]
            > 0.01
        )
        is_pos = is_pos & inside
        # Per box, the positive ground truth of highest IoU (the first among equals), -INF elsewhere.
        overlaps_inf = torch.full(
            (num_bboxes, num_gt), -_INF, dtype=candidate_overlaps.dtype, device=bboxes.device
        )
        gt_cols = torch.arange(num_gt, device=bboxes.device).expand_as(candidate_idxs)
        overlaps_inf[candidate_idxs[is_pos], gt_cols[is_pos]] = candidate_overlaps[is_pos]
        max_overlaps, argmax = overlaps_inf.max(dim=1)
        gt_inds = torch.where(max_overlaps != -_INF, argmax + 1, gt_inds)
        return AssignResult(num_gt, gt_inds, max_overlaps, _labels(gt_inds, gt_labels))
