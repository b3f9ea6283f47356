"""Anchor and prior generators of mmdet, torchvision, super-gradients and detectron2, numerically
identical to each library, all on one grid kernel (``torch.ops.pydet.anchor_grid``).

Each generator computes its library's base anchors and per-axis shifts with that library's exact
arithmetic (a few hundred values) and lets the kernel write the ``H * W * A`` grid of every level
in one pass, in the requested dtype and device. Grids are cached per (feature sizes, dtype,
device) in a bounded, thread-safe :class:`GridCache`.
"""

from pydet.anchors import detectron2, mmdet, supergradients, torchvision
from pydet.anchors._grid import GridCache
from pydet.ops.anchors import anchor_grid

__all__ = ["GridCache", "anchor_grid", "detectron2", "mmdet", "supergradients", "torchvision"]
