"""detectron2's ``Matcher`` (``detectron2.modeling.matcher``)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from pydet.matchers._reduce import Reduced, from_boxes, from_matrix


class Matcher:
    """Matches each prediction (column) to its best ground truth (row) and labels it by intervals of
    its best quality: ``thresholds = [t1, ..., tk]`` split ``(-inf, inf)`` into ``k + 1`` intervals
    ``[lo, hi)`` labelled ``labels`` (each -1 ignore, 0 negative, 1 positive). With
    ``allow_low_quality_matches`` every prediction attaining some ground truth's best quality (ties
    included) is labelled 1 and keeps its own best match. Without ground truth every prediction is
    matched to 0 with label ``labels[0]``. Qualities must be >= 0 (NaN is rejected).
    """

    def __init__(self, thresholds: list[float], labels: list[int], allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        if not thresholds or not thresholds[0] > 0:
            raise ValueError(
                f"Matcher: thresholds must be non-empty with thresholds[0] > 0, got {thresholds}"
            )
        thresholds = [-math.inf, *thresholds, math.inf]
        if not all(lo <= hi for lo, hi in itertools.pairwise(thresholds)):
            raise ValueError(f"Matcher: thresholds must be non-decreasing, got {thresholds[1:-1]}")
        if not all(label in (-1, 0, 1) for label in labels):
            raise ValueError(f"Matcher: labels must each be -1, 0 or 1, got {labels}")
        if len(labels) != len(thresholds) - 1:
            raise ValueError(
                f"Matcher: labels must have len(thresholds) + 1 = {len(thresholds) - 1} entries, got {len(labels)}"
            )
        self.thresholds = thresholds
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> tuple[Tensor, Tensor]:
        """``(matches [N] int64, match_labels [N] int8)`` from a ``[M, N]`` quality matrix (drop-in)."""
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                f"Matcher: match_quality_matrix must be 2-D, got {list(match_quality_matrix.shape)}"
            )
        if match_quality_matrix.numel() == 0:
            n = match_quality_matrix.size(1)
            return (
                match_quality_matrix.new_full((n,), 0, dtype=torch.int64),
                match_quality_matrix.new_full((n,), self.labels[0], dtype=torch.int8),
            )
        if not bool(torch.all(match_quality_matrix >= 0)):
            raise ValueError("Matcher: match qualities must be >= 0 (and not NaN)")
        return self._label(from_matrix(match_quality_matrix))

    def match_boxes(self, gt: Tensor, anchors: Tensor, num_gt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``__call__`` on ``box_iou(gt, anchors)`` without the matrix; ``gt [M, 4]`` -> ``[N]`` or a padded
        batch ``gt [B, Mmax, 4]`` with ``num_gt [B]`` -> ``[B, N]``."""
        r = from_boxes(gt, anchors, num_gt)
        if bool(torch.isnan(r.anchor_max).any()):
            raise ValueError("Matcher: match qualities must be >= 0 (and not NaN)")
        # Without ground truth the best quality is -inf (label labels[0]) and the argmax -1 (match 0).
        matches, labels = self._label(r)
        return matches.clamp(min=0), labels

    def _label(self, r: Reduced) -> tuple[Tensor, Tensor]:
        match_labels = torch.ones_like(r.anchor_argmax, dtype=torch.int8)
        for label, lo, hi in zip(self.labels, self.thresholds[:-1], self.thresholds[1:], strict=True):
            in_range = (r.anchor_max >= lo) & (r.anchor_max < hi)
            match_labels = torch.where(
                in_range, torch.tensor(label, dtype=torch.int8, device=in_range.device), match_labels
            )
        if self.allow_low_quality_matches:
            match_labels = torch.where(r.ties() >= 0, torch.ones_like(match_labels), match_labels)
        return r.anchor_argmax, match_labels
