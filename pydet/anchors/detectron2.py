"""detectron2's ``DefaultAnchorGenerator`` (``detectron2.modeling.anchor_generator``), numerically
identical, on pydet's one-pass grid kernel and cache. No detectron2 import."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pydet.anchors._grid import GridCache, split_levels
from pydet.ops.anchors import anchor_grid


def _broadcast_params(params, num_features: int, name: str) -> list:
    """detectron2's rule: a flat list applies to every level; a list of one list is repeated; else one list per level."""
    if not isinstance(params, Sequence) or isinstance(params, str):
        raise ValueError(f"DefaultAnchorGenerator: {name} has to be a list, got {params!r}")
    if len(params) == 0:
        raise ValueError(f"DefaultAnchorGenerator: {name} cannot be empty")
    if not isinstance(params[0], Sequence):
        return [params] * num_features
    if len(params) == 1:
        return list(params) * num_features
    if len(params) != num_features:
        raise ValueError(
            f"DefaultAnchorGenerator: {name} has {len(params)} levels but there are {num_features} feature maps "
            "(strides); give one list, or one list per level"
        )
    return list(params)


class DefaultAnchorGenerator(nn.Module):
    """detectron2's anchor generator (RetinaNet, Faster R-CNN).

    Level ``l``'s cell anchors are size-major (aspect ratios vary fastest): for each size ``s`` and
    ratio ``r`` (height / width), ``w = sqrt(s^2 / r)``, ``h = r w``, box ``(-w/2, -h/2, w/2, h/2)``,
    computed in float64 and stored as float32. The anchors at feature-map cell ``(y, x)`` are the cell
    anchors shifted by ``((x + offset) * stride, (y + offset) * stride)``, the shifts made with
    ``torch.arange(offset * stride, W * stride, step=stride)`` in float32 as detectron2 does.

    ``forward(features)`` returns one ``[H * W * A, 4]`` float32 tensor per level, location-major,
    on the module's device (detectron2 wraps each in ``Boxes``; here they are the plain tensors,
    ``Boxes(x).tensor``). The grid is cached per (feature sizes, device); the returned per-level
    tensors are views of the cached grid (treat them as read-only; see :class:`pydet.anchors.GridCache`).

    Example (detectron2's RetinaNet: 3 sizes per octave, 3 ratios, P3-P7)::

        DefaultAnchorGenerator(
            sizes=[[x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in [32, 64, 128, 256, 512]],
            aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128], offset=0.0)
    """

    box_dim: int = 4

    def __init__(self, *, sizes, aspect_ratios, strides, offset: float = 0.5):
        super().__init__()
        self.strides = list(strides)
        self.num_features = len(self.strides)
        if self.num_features == 0:
            raise ValueError("DefaultAnchorGenerator: strides must list at least one level")
        if any(s <= 0 for s in self.strides):
            raise ValueError(f"DefaultAnchorGenerator: strides must be positive, got {self.strides}")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"DefaultAnchorGenerator: offset must be in [0, 1), got {offset}")
        sizes = _broadcast_params(sizes, self.num_features, "sizes")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        for name, params in (("sizes", sizes), ("aspect_ratios", aspect_ratios)):
            if any(len(p) == 0 or any(v <= 0 for v in p) for p in params):
                raise ValueError(
                    f"DefaultAnchorGenerator: {name} must be non-empty lists of positive numbers, got {params}"
                )
        self.offset = offset
        for i, (s, a) in enumerate(zip(sizes, aspect_ratios, strict=True)):
            self.register_buffer(
                f"cell_anchors_{i}", self.generate_cell_anchors(s, a).float(), persistent=False
            )
        self._cache = GridCache()

    @property
    def cell_anchors(self) -> list[Tensor]:
        return [getattr(self, f"cell_anchors_{i}") for i in range(self.num_features)]

    @property
    def num_cell_anchors(self) -> list[int]:
        return self.num_anchors

    @property
    def num_anchors(self) -> list[int]:
        """Anchors per spatial location, per level."""
        return [len(c) for c in self.cell_anchors]

    def generate_cell_anchors(self, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)) -> Tensor:
        anchors = []
        for size in sizes:
            area = size**2.0
            for aspect_ratio in aspect_ratios:
                w = math.sqrt(area / aspect_ratio)
                h = aspect_ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors, dtype=torch.float64)

    def _grid_anchors(self, grid_sizes: list[tuple[int, int]]) -> list[Tensor]:
        cells = self.cell_anchors
        device, dtype = cells[0].device, cells[0].dtype

        def offsets(n: int, stride) -> Tensor:
            # detectron2's arange (its float32 arithmetic); a zero-size map has no cells (detectron2 raises)
            if n == 0:
                return torch.empty(0, dtype=dtype, device=device)
            start = self.offset * stride
            return torch.arange(start, n * stride, step=stride, dtype=torch.float32, device=device).to(dtype)

        def create():
            sx = [offsets(w, stride) for (_, w), stride in zip(grid_sizes, self.strides, strict=True)]
            sy = [offsets(h, stride) for (h, _), stride in zip(grid_sizes, self.strides, strict=True)]
            anchors = anchor_grid(cells, sx, sy)
            counts = [len(x) * len(y) * len(c) for x, y, c in zip(sx, sy, cells, strict=True)]
            return split_levels(anchors, counts), anchors

        return list(self._cache.get((tuple(grid_sizes), device, dtype), create))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        if len(features) != self.num_features:
            raise ValueError(
                f"DefaultAnchorGenerator: got {len(features)} feature maps for {self.num_features} levels (strides)"
            )
        grid_sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        return self._grid_anchors(grid_sizes)

    def extra_repr(self) -> str:
        return f"strides={self.strides}, offset={self.offset}, num_anchors={self.num_anchors}"


__all__ = ["DefaultAnchorGenerator"]
