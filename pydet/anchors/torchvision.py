"""torchvision's ``AnchorGenerator`` and ``DefaultBoxGenerator`` (``torchvision.models.detection.anchor_utils``),
numerically identical, on pydet's one-pass grid kernel and cache. No torchvision import."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pydet.anchors._grid import GridCache
from pydet.ops.anchors import anchor_grid


class ImageList:
    """torchvision's ``ImageList``: a padded batch ``tensors [B, C, H, W]`` and the original sizes
    ``image_sizes`` (list of (h, w)). Generators also accept torchvision's own ``ImageList``."""

    def __init__(self, tensors: Tensor, image_sizes: list[tuple[int, int]]):
        self.tensors = tensors
        self.image_sizes = image_sizes

    def to(self, device) -> ImageList:
        return ImageList(self.tensors.to(device), self.image_sizes)


def _image_list(images) -> tuple[Tensor, list]:
    if isinstance(images, Tensor):  # a batch already resized to one size
        return images, [tuple(images.shape[-2:])] * images.shape[0]
    return images.tensors, list(images.image_sizes)


class AnchorGenerator(nn.Module):
    """torchvision's anchor generator (Faster R-CNN / RetinaNet).

    ``sizes[l]`` and ``aspect_ratios[l]`` give level ``l``'s cell anchors, zero-centred and rounded
    (``torch.round``, half to even), ratio-major (sizes vary fastest). The stride of a level is
    ``image_size // grid_size`` (integer division, per axis). ``forward(image_list, feature_maps)``
    returns one ``[sum(H * W * A), 4]`` tensor per image, location-major, in the feature maps' dtype
    and device. The grid is cached per (grid sizes, image size, dtype, device); every image of the
    batch gets that same tensor (treat it as read-only; see :class:`pydet.anchors.GridCache`).
    """

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)):
        super().__init__()
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"AnchorGenerator: sizes and aspect_ratios must have one entry per level, got {len(sizes)} and "
                f"{len(aspect_ratios)}"
            )
        if any(v <= 0 for s in sizes for v in s) or any(v <= 0 for a in aspect_ratios for v in a):
            raise ValueError(
                f"AnchorGenerator: sizes and aspect_ratios must be positive, got {sizes}, {aspect_ratios}"
            )
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self.cell_anchors = [self.generate_anchors(s, a) for s, a in zip(sizes, aspect_ratios, strict=True)]
        self._cache = GridCache()

    def generate_anchors(self, scales, aspect_ratios, dtype=torch.float32, device="cpu") -> Tensor:
        scales = torch.as_tensor(scales, dtype=dtype, device=device)
        aspect_ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(aspect_ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios, strict=True)]

    def grid_anchors(self, grid_sizes, strides, dtype=torch.float32, device="cpu") -> list[Tensor]:
        """Per level, ``[H * W * A, 4]``: cell anchors shifted by ``(x * stride_w, y * stride_h)``."""
        if not len(grid_sizes) == len(strides) == len(self.cell_anchors):
            raise ValueError(
                "AnchorGenerator: the number of feature maps, strides and anchor levels must match, got "
                f"{len(grid_sizes)}, {len(strides)} and {len(self.cell_anchors)}; check that sizes and "
                "aspect_ratios have one entry per feature map"
            )
        base, sx, sy = [], [], []
        for (h, w), (stride_h, stride_w), cell in zip(grid_sizes, strides, self.cell_anchors, strict=True):
            base.append(cell.to(dtype=dtype, device=device))
            sx.append((torch.arange(0, int(w), dtype=torch.int32, device=device) * int(stride_w)).to(dtype))
            sy.append((torch.arange(0, int(h), dtype=torch.int32, device=device) * int(stride_h)).to(dtype))
        anchors = anchor_grid(base, sx, sy)
        counts = [int(h) * int(w) * len(c) for (h, w), c in zip(grid_sizes, self.cell_anchors, strict=True)]
        return list(torch.split(anchors, counts))

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        tensors, image_sizes = _image_list(image_list)
        grid_sizes = [tuple(int(v) for v in f.shape[-2:]) for f in feature_maps]
        image_size = tuple(int(v) for v in tensors.shape[-2:])
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        # image // grid, per axis; an empty feature map (no anchors) has no stride to speak of
        strides = [(image_size[0] // max(g[0], 1), image_size[1] // max(g[1], 1)) for g in grid_sizes]

        def create():
            anchors = torch.cat(self.grid_anchors(grid_sizes, strides, dtype, device))
            return anchors, anchors

        anchors = self._cache.get((tuple(grid_sizes), image_size, dtype, device), create)
        return [anchors for _ in image_sizes]


class DefaultBoxGenerator(nn.Module):
    """torchvision's SSD default boxes (page 6 of the SSD paper).

    Per level ``k``: ``(w, h)`` pairs ``(s_k, s_k)``, ``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k s_{k+1})``
    and ``(s_k sqrt(a), s_k / sqrt(a))``, ``(s_k / sqrt(a), s_k sqrt(a))`` per aspect ratio ``a``
    (clipped to [0, 1] when ``clip``); centres ``((x + 0.5) / f_x, (y + 0.5) / f_y)`` with
    ``f = image_size / step`` (or the grid size without ``steps``). ``forward`` returns, per image,
    ``[sum(H * W * A), 4]`` xyxy boxes in pixels. SSD300's configuration gives 8,732 boxes::

        DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                            scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=[8, 16, 32, 64, 100, 300])
    """

    def __init__(self, aspect_ratios, min_ratio=0.15, max_ratio=0.9, scales=None, steps=None, clip=True):
        super().__init__()
        if steps is not None and len(aspect_ratios) != len(steps):
            raise ValueError(
                f"DefaultBoxGenerator: aspect_ratios and steps must have the same length, got {len(aspect_ratios)} and "
                f"{len(steps)}"
            )
        num_outputs = len(aspect_ratios)
        if scales is None:
            if num_outputs > 1:
                range_ratio = max_ratio - min_ratio
                scales = [min_ratio + range_ratio * k / (num_outputs - 1.0) for k in range(num_outputs)]
                scales.append(1.0)
            else:
                scales = [min_ratio, max_ratio]
        if len(scales) != num_outputs + 1:
            raise ValueError(
                f"DefaultBoxGenerator: scales must have one entry per feature map plus one ({num_outputs + 1}), got "
                f"{len(scales)}"
            )
        self.aspect_ratios = aspect_ratios
        self.steps = steps
        self.clip = clip
        self.scales = scales
        self._wh_pairs = self._generate_wh_pairs(num_outputs)
        self._cache = GridCache()

    def _generate_wh_pairs(self, num_outputs: int, dtype=torch.float32, device="cpu") -> list[Tensor]:
        pairs = []
        for k in range(num_outputs):
            s_k = self.scales[k]
            s_prime_k = math.sqrt(self.scales[k] * self.scales[k + 1])
            wh = [[s_k, s_k], [s_prime_k, s_prime_k]]
            for ar in self.aspect_ratios[k]:
                sq_ar = math.sqrt(ar)
                w = self.scales[k] * sq_ar
                h = self.scales[k] / sq_ar
                wh.extend([[w, h], [h, w]])
            pairs.append(torch.as_tensor(wh, dtype=dtype, device=device))
        return pairs

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def _default_boxes(self, grid_sizes, image_size, dtype, device) -> Tensor:
        base, sx, sy, scales = [], [], [], []
        for k, (f_h, f_w) in enumerate(grid_sizes):
            if self.steps is not None:
                x_f_k, y_f_k = image_size[1] / self.steps[k], image_size[0] / self.steps[k]
            else:
                y_f_k, x_f_k = f_h, f_w
            sx.append(((torch.arange(0, f_w) + 0.5) / x_f_k).to(dtype=dtype).to(device))
            sy.append(((torch.arange(0, f_h) + 0.5) / y_f_k).to(dtype=dtype).to(device))
            wh = self._wh_pairs[k].clamp(min=0, max=1) if self.clip else self._wh_pairs[k]
            half = (0.5 * wh.to(torch.promote_types(dtype, wh.dtype))).to(device)
            # (cx - w/2, cy - h/2, cx + w/2, cy + h/2) * (image w, image h): centre + (-w/2, -h/2, w/2, h/2)
            base.append(torch.cat([-half, half], dim=1))
            scales += [float(image_size[1]), float(image_size[0])]
        out_dtype = base[0].dtype
        return anchor_grid(base, [s.to(out_dtype) for s in sx], [s.to(out_dtype) for s in sy], scales)

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        tensors, image_sizes = _image_list(image_list)
        grid_sizes = [tuple(int(v) for v in f.shape[-2:]) for f in feature_maps]
        image_size = tuple(int(v) for v in tensors.shape[-2:])
        dtype, device = feature_maps[0].dtype, feature_maps[0].device

        def create():
            boxes = self._default_boxes(grid_sizes, image_size, dtype, device)
            return boxes, boxes

        boxes = self._cache.get((tuple(grid_sizes), image_size, dtype, device), create)
        return [boxes for _ in image_sizes]

    def __repr__(self) -> str:
        return (
            f"DefaultBoxGenerator(aspect_ratios={self.aspect_ratios}, clip={self.clip}, scales={self.scales}, "
            f"steps={self.steps})"
        )


__all__ = ["AnchorGenerator", "DefaultBoxGenerator", "ImageList"]
