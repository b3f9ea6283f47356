"""``SyntheticShapes``: a procedurally drawn detection dataset with exact boxes, for demos and tests.

Every image is drawn from its own random stream (seeded by ``(seed, split, index)``), so an item is
the same whichever worker, process or order asks for it, and the train and val splits never share
an image. Objects are circles, squares, triangles and crosses (labels 1..4; 0 is the background)
in random colours, sizes ``min_size``..``max_size`` px (log-uniform), drawn over a noisy,
textured background; later objects occlude earlier ones. A box is the exact pixel extent of the
object's visible pixels, ``(x1, y1, x2, y2)`` with ``x2 = last column + 1``; objects less than
``min_visible`` visible are dropped.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

CLASSES = ("circle", "square", "triangle", "cross")
SPLITS = {"train": 0, "val": 1, "test": 2}


def _shape_mask(kind: str, xs: Tensor, ys: Tensor, cx: float, cy: float, r: float) -> Tensor:
    dx, dy = (xs - cx).abs(), (ys - cy).abs()
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        return (dx <= r) & (dy <= r)
    if kind == "triangle":  # apex up, base 2r wide
        return (ys >= cy - r) & (ys <= cy + r) & (dx <= (ys - (cy - r)) / 2)
    arm = r / 3  # cross
    return ((dx <= r) & (dy <= arm)) | ((dx <= arm) & (dy <= r))


class SyntheticShapes(Dataset):
    """``dataset[i]`` -> ``(image [3, H, W] float32 in [0, 1], {"boxes": [N, 4] float32, "labels": [N] int64,
    "image_id": int})``, torchvision's detection target format. ``image_size`` is an int or (h, w)."""

    classes = CLASSES

    def __init__(
        self,
        num_images: int = 1000,
        image_size: int | tuple[int, int] = 320,
        split: str = "train",
        seed: int = 0,
        min_size: float = 8.0,
        max_size: float = 160.0,
        max_objects: int = 6,
        min_visible: float = 0.3,
    ):
        if split not in SPLITS:
            raise ValueError(f"SyntheticShapes: split must be one of {', '.join(SPLITS)}, got '{split}'")
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if num_images < 0 or h < 1 or w < 1 or not 0 < min_size <= max_size or max_objects < 1:
            raise ValueError(
                "SyntheticShapes: need num_images >= 0, a positive image_size, 0 < min_size <= max_size and "
                f"max_objects >= 1; got {num_images}, {(h, w)}, {min_size}, {max_size}, {max_objects}"
            )
        self.num_images, self.size, self.split, self.seed = num_images, (h, w), split, seed
        self.min_size, self.max_size = min_size, min(max_size, max(h, w))
        self.max_objects, self.min_visible = max_objects, min_visible

    def __len__(self) -> int:
        return self.num_images

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 3 + SPLITS[self.split]) * 1_000_003 + index)

    def _background(self, g: torch.Generator) -> Tensor:
        h, w = self.size
        ys = torch.linspace(0, 1, h)[:, None]
        xs = torch.linspace(0, 1, w)[None, :]
        c0, c1 = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
        t = torch.rand(2, generator=g)
        ramp = (xs * t[0] + ys * (1 - t[0])).expand(h, w)
        image = c0 + (c1 - c0) * ramp
        period = 4 + 28 * float(t[1])  # stripes as texture
        angle = float(torch.rand((), generator=g)) * math.pi
        stripes = torch.sin((xs * w * math.cos(angle) + ys * h * math.sin(angle)) * 2 * math.pi / period)
        image = image + 0.08 * stripes + 0.06 * torch.randn(3, h, w, generator=g)
        return image

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"SyntheticShapes: index {index} out of range [0, {self.num_images})")
        g = self._generator(index)
        h, w = self.size
        image = self._background(g)
        owner = torch.full((h, w), -1, dtype=torch.int64)  # which object each pixel shows
        labels, areas, windows = [], [], []
        n = int(torch.randint(1, self.max_objects + 1, (), generator=g))
        for k in range(n):
            kind = int(torch.randint(0, len(CLASSES), (), generator=g))
            lo, hi = math.log(self.min_size), math.log(self.max_size)
            side = math.exp(lo + (hi - lo) * float(torch.rand((), generator=g)))
            r = side / 2
            cx = r + float(torch.rand((), generator=g)) * max(w - side, 0.0)
            cy = r + float(torch.rand((), generator=g)) * max(h - side, 0.0)
            # draw inside the shape's bounding window only
            y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
            x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
            ys = torch.arange(y0, y1, dtype=torch.float32)[:, None]
            xs = torch.arange(x0, x1, dtype=torch.float32)[None, :]
            mask = _shape_mask(CLASSES[kind], xs, ys, cx, cy, r)
            colour = torch.rand(3, 1, 1, generator=g) + 0.04 * torch.randn(3, 1, 1, generator=g)
            window = image[:, y0:y1, x0:x1]
            window.copy_(torch.where(mask, colour, window))
            owner[y0:y1, x0:x1][mask] = k
            labels.append(kind + 1)
            areas.append(int(mask.sum()))
            windows.append((y0, y1, x0, x1))
        boxes, kept = [], []
        for k, (y0, y1, x0, x1) in enumerate(windows):
            visible = owner[y0:y1, x0:x1] == k
            count = int(visible.sum())
            if count == 0 or count < self.min_visible * areas[k]:
                continue
            rows, cols = visible.any(1).nonzero()[:, 0], visible.any(0).nonzero()[:, 0]
            boxes.append(
                [float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1]) + 1, float(y0 + rows[-1]) + 1]
            )
            kept.append(labels[k])
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(kept, dtype=torch.int64),
            "image_id": index,
        }
        return image.clamp(0, 1).float(), target


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """For ``DataLoader(collate_fn=collate)``: images and targets as lists (detectors take lists)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
