"""What every IoU matcher needs from the quality matrix, computed from the matrix or from the boxes.

A matcher's logic is written once over a :class:`Reduced`; :func:`from_matrix` builds it with torch
reductions of a given ``[M, N]`` matrix (the drop-in path) and :func:`from_boxes` with the fused
kernels (no matrix). Both give identical tensors, so both paths give identical matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pydet.ops.matching import box_overlap_max, box_overlap_ties


@dataclass
class Reduced:
    """Reductions of ``Q [M, N]`` (batched: leading ``[B]``). See :class:`pydet.ops.OverlapMax`.

    ``ties(min_best)`` gives, per anchor, the last ground truth ``m`` with ``gt_max[m] >= min_best``
    whose best quality the anchor attains (-1 if none): low-quality matching.
    """

    anchor_max: Tensor
    anchor_argmax: Tensor
    gt_max: Tensor
    gt_argmax: Tensor
    _ties: object

    def ties(self, min_best: float = -float("inf")) -> Tensor:
        return self._ties(min_best)


def from_matrix(quality: Tensor, name: str = "match_quality_matrix") -> Reduced:
    """Reductions of a given ``[M, N]`` quality matrix (``M, N > 0``); ``name`` is the argument's name in
    the error raised for a matrix of another rank or a complex dtype."""
    if quality.dim() != 2:
        raise ValueError(f"{name} must have shape [M, N], got {list(quality.shape)}")
    if quality.is_complex():
        raise TypeError(f"{name} must be a real tensor, got {quality.dtype}")
    anchor_max, anchor_argmax = quality.max(dim=0)
    gt_max, gt_argmax = quality.max(dim=1)

    def ties(min_best: float) -> Tensor:
        attains = (quality == gt_max[:, None]) & (gt_max >= min_best)[:, None]
        rows = torch.arange(quality.size(0), device=quality.device)[:, None]
        return torch.where(attains, rows, -1).amax(dim=0)

    return Reduced(anchor_max, anchor_argmax, gt_max, gt_argmax, ties)


def from_boxes(
    gt: Tensor,
    anchors: Tensor,
    num_gt: Tensor | None = None,
    mode: str = "iou",
    eps: float = 1e-6,
    ignored: Tensor | None = None,
) -> Reduced:
    """Reductions of ``quality(gt [B?, M, 4], anchors [N, 4])`` without the matrix (fused kernels)."""
    r = box_overlap_max(gt, anchors, num_gt, mode, False, eps, ignored)

    def ties(min_best: float) -> Tensor:
        return box_overlap_ties(gt, anchors, r.gt_max, min_best, num_gt, mode, eps, ignored)

    return Reduced(r.anchor_max, r.anchor_argmax, r.gt_max, r.gt_argmax, ties)


def last_index_scatter(n: int, index: Tensor, valid: Tensor) -> Tensor:
    """``out[index[m]] = m`` for valid ``m`` in increasing order (the last write wins), -1 elsewhere:
    the sequential ``tensor[index] = arange`` of the reference code, made deterministic. Batched:
    ``index, valid [B, M]`` -> ``[B, n]``."""
    batched = index.dim() == 2
    index2 = index if batched else index[None]
    valid2 = valid if batched else valid[None]
    b, m = index2.shape
    out = torch.full((b, n), -1, dtype=torch.int64, device=index.device)
    if n == 0:  # no anchors: nothing to write, and the placeholder index 0 would be out of bounds
        return out if batched else out[0]
    rows = torch.arange(m, device=index.device).expand(b, m)
    src = torch.where(valid2, rows, -1)
    out.scatter_reduce_(1, torch.where(valid2, index2, 0).clamp(min=0), src, reduce="amax")
    return out if batched else out[0]
