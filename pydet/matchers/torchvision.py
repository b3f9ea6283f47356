"""torchvision's ``Matcher`` and ``SSDMatcher`` (``torchvision.models.detection._utils``)."""

from __future__ import annotations

import torch
from torch import Tensor

from pydet.matchers._reduce import Reduced, from_boxes, from_matrix, last_index_scatter


class Matcher:
    """Assigns each anchor (column) the ground truth (row) of highest quality.

    ``matches[n]`` is the ground-truth index, ``BELOW_LOW_THRESHOLD`` (-1) when the best quality is
    ``< low_threshold`` and ``BETWEEN_THRESHOLDS`` (-2) when in ``[low, high)``. With
    ``allow_low_quality_matches`` every anchor attaining some ground truth's best quality (ties
    included) gets its own best match back, as in torchvision. A NaN best quality is neither below
    nor between the thresholds, so the anchor stays matched (torchvision's behaviour).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if not low_threshold <= high_threshold:
            raise ValueError(
                f"Matcher: low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """``[N]`` int64 matches from a ``[M, N]`` quality matrix (drop-in)."""
        if match_quality_matrix.numel() == 0:
            if match_quality_matrix.shape[0] == 0:
                raise ValueError("No ground-truth boxes available for one of the images during training")
            raise ValueError("No proposal boxes available for one of the images during training")
        return self._matches(from_matrix(match_quality_matrix))

    def match_boxes(self, gt: Tensor, anchors: Tensor, num_gt: Tensor | None = None) -> Tensor:
        """Matches of ``anchors [N, 4]`` to ``gt [M, 4]`` (-> ``[N]``) or to a padded batch
        ``gt [B, Mmax, 4]`` with ``num_gt [B]`` (-> ``[B, N]``), IoU computed on the fly.

        A single image without ground truth raises like ``__call__``; in a batch, an image without
        ground truth gets ``BELOW_LOW_THRESHOLD`` everywhere (what torchvision's detectors do).
        """
        if gt.dim() == 2 and (gt.size(0) == 0 or anchors.size(0) == 0):
            self(gt.new_empty((gt.size(0), anchors.size(0))))  # raises the reference's error
        # An image without ground truth has best quality -inf: below the low threshold everywhere.
        return self._matches(from_boxes(gt, anchors, num_gt))

    def _matches(self, r: Reduced) -> Tensor:
        matches = r.anchor_argmax
        below = r.anchor_max < self.low_threshold
        between = (r.anchor_max >= self.low_threshold) & (r.anchor_max < self.high_threshold)
        matches = torch.where(below, self.BELOW_LOW_THRESHOLD, matches)
        matches = torch.where(between, self.BETWEEN_THRESHOLDS, matches)
        if self.allow_low_quality_matches:
            matches = torch.where(r.ties() >= 0, r.anchor_argmax, matches)
        return matches


class SSDMatcher(Matcher):
    """torchvision's SSD matcher: ``Matcher(threshold, threshold)``, then every ground truth claims its
    best anchor (the last ground truth wins an anchor claimed twice, as in torchvision on the CPU)."""

    def __init__(self, threshold: float):
        super().__init__(threshold, threshold, allow_low_quality_matches=False)

    def _matches(self, r: Reduced) -> Tensor:
        matches = super()._matches(r)
        claimed = last_index_scatter(matches.size(-1), r.gt_argmax, r.gt_argmax >= 0)
        return torch.where(claimed >= 0, claimed, matches)
