"""What every dense head shares: per-level maps ``[N, A * K, H, W]`` to one ``[N, sum(H W A), K]``."""

from __future__ import annotations

import torch
from torch import Tensor


def concat_levels(maps: list[Tensor], values_per_anchor: int) -> Tensor:
    """Location-major, then anchor (``(y, x, a)`` order), matching the anchor generators' layout."""
    out = []
    for m in maps:
        n, _, h, w = m.shape
        out.append(
            m.view(n, -1, values_per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, values_per_anchor)
        )
    return torch.cat(out, dim=1)
