"""The anchor grid kernel every generator in :mod:`pydet.anchors` is built on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def anchor_grid(
    base_anchors: Sequence[Tensor],
    shifts_x: Sequence[Tensor],
    shifts_y: Sequence[Tensor],
    scales: Sequence[float] = (),
    anchor_major: bool = False,
    shift_corners: bool = True,
) -> Tensor:
    """All levels' anchors in one pass, ``[sum_l(H_l * W_l * A_l), 4]``.

    Level ``l`` has base anchors ``base_anchors[l] [A, 4]`` and per-axis shifts ``shifts_x[l] [W]``,
    ``shifts_y[l] [H]``; its rows are::

        row (y, x, a) = (base[a] + (sx[x], sy[y], sx[x], sy[y])) * (s_x, s_y, s_x, s_y)

    with ``(s_x, s_y) = (scales[2l], scales[2l + 1])`` (1 when ``scales`` is empty). Each step is
    rounded to the dtype as PyTorch's broadcast add and multiply by a Python scalar round it (half
    and bfloat16 compute in float), so the grid is bit-identical to the meshgrid + broadcast formula
    in every dtype. With ``shift_corners=False`` only the first two coordinates are shifted
    (centre-size boxes, points). Rows are location-major (y, x, then anchor: mmdet, torchvision,
    detectron2) or, with ``anchor_major``, anchor-major (a, then y, x: NVIDIA / super-gradients SSD).

    All tensors share one floating dtype and device, which the output takes. Levels follow each
    other in the output; ``torch.split`` by ``H * W * A`` gives per-level views.
    """
    if len(base_anchors) == 0:  # no tensor to dispatch on: the operator itself could not say why
        raise ValueError("pydet.anchor_grid: base_anchors must hold at least one level")
    return torch.ops.pydet.anchor_grid(
        list(base_anchors), list(shifts_x), list(shifts_y), list(scales), anchor_major, shift_corners
    )
