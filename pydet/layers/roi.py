"""RoI pooling modules over pydet.ops.roi: torchvision.ops' RoIAlign, RoIPool, PSRoIAlign, PSRoIPool and
MultiScaleRoIAlign, and detectron2's ROIAlign, ROIAlignRotated and ROIPooler."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pydet.ops.boxes import box_area
from pydet.ops.conv import Pair, _pair
from pydet.ops.roi import (
    boxes_to_rois,
    multi_scale_roi_align,
    ps_roi_align,
    ps_roi_pool,
    roi_align,
    roi_align_rotated,
    roi_pool,
)


class RoIAlign(nn.Module):
    """torchvision.ops.RoIAlign: ``forward(input, rois)`` with rois ``[K, 5]`` or a list of ``[L, 4]``."""

    def __init__(self, output_size: Pair, spatial_scale: float, sampling_ratio: int, aligned: bool = False):
        super().__init__()
        self.output_size = tuple(_pair(output_size))
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


class ROIAlign(RoIAlign):
    """detectron2.layers.ROIAlign: ``aligned=True`` by default and RoIs cast to the input's dtype (as
    detectron2 does before calling roi_align), same state (none) and ``forward(input, rois [K, 5])``."""

    def __init__(self, output_size: Pair, spatial_scale: float, sampling_ratio: int, aligned: bool = True):
        super().__init__(output_size, spatial_scale, sampling_ratio, aligned)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(f"pydet.ROIAlign: rois must have shape [K, 5], got {list(rois.shape)}")
        return super().forward(input, rois.to(dtype=input.dtype))


class ROIAlignRotated(nn.Module):
    """detectron2.layers.ROIAlignRotated: ``forward(input, rois [K, 6])`` (batch index, cx, cy, w, h,
    angle in degrees); float16 inputs are pooled in float32 and returned in float16, as detectron2 does."""

    def __init__(self, output_size: Pair, spatial_scale: float, sampling_ratio: int):
        super().__init__()
        self.output_size = tuple(_pair(output_size))
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        if rois.dim() != 2 or rois.shape[1] != 6:
            raise ValueError(f"pydet.ROIAlignRotated: rois must have shape [K, 6], got {list(rois.shape)}")
        dtype = input.dtype
        if dtype == torch.float16:
            input, rois = input.float(), rois.float()
        out = roi_align_rotated(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio)
        return out.to(dtype)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}"
        )


class RoIPool(nn.Module):
    """torchvision.ops.RoIPool: ``forward(input, rois)`` with rois ``[K, 5]`` or a list of ``[L, 4]``."""

    def __init__(self, output_size: Pair, spatial_scale: float):
        super().__init__()
        self.output_size = tuple(_pair(output_size))
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class PSRoIPool(RoIPool):
    """torchvision.ops.PSRoIPool: position-sensitive average pooling (:func:`pydet.ops.ps_roi_pool`)."""

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return ps_roi_pool(input, rois, self.output_size, self.spatial_scale)


class PSRoIAlign(nn.Module):
    """torchvision.ops.PSRoIAlign: position-sensitive RoIAlign (:func:`pydet.ops.ps_roi_align`)."""

    def __init__(self, output_size: Pair, spatial_scale: float, sampling_ratio: int):
        super().__init__()
        self.output_size = tuple(_pair(output_size))
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return ps_roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}"
        )


def _infer_scale(feature: Tensor, original_size: tuple[int, int]) -> float:
    """torchvision's: the power of two nearest the feature map's height over the image's."""
    approx = float(feature.shape[-2]) / float(original_size[0])
    return 2 ** float(torch.tensor(approx).log2().round())


def _clamped(target: Tensor, k_min: int, k_max: int) -> Tensor:
    return torch.clamp(target, min=k_min, max=k_max).to(torch.int64) - k_min


def fpn_levels(
    boxes: list[Tensor], k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4
):
    """The FPN paper's level of every box (torchvision's ``LevelMapper``, same operations):
    ``floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6)`` clamped to ``[k_min, k_max]``,
    minus ``k_min``, as int64 over the concatenated boxes."""
    s = torch.sqrt(torch.cat([box_area(b) for b in boxes]))
    target = torch.floor(
        canonical_level + torch.log2(s / canonical_scale) + torch.tensor(1e-6, dtype=s.dtype)
    )
    return _clamped(target, k_min, k_max)


def assign_boxes_to_levels(
    box_lists: list[Tensor], min_level: int, max_level: int, canonical_box_size: int, canonical_level: int
) -> Tensor:
    """detectron2's FPN level of every box (``detectron2.modeling.poolers``, same operations): ``floor(
    canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to ``[min_level,
    max_level]``, minus ``min_level``, as int64 over the concatenated boxes. Boxes are ``[L, 4]`` xyxy
    or ``[L, 5]`` rotated ``(cx, cy, w, h, angle)`` (area ``w h``), one tensor per image."""
    areas = [b[:, 2] * b[:, 3] if b.shape[-1] == 5 else box_area(b) for b in box_lists]
    sizes = torch.sqrt(torch.cat(areas))
    return _clamped(
        torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8)), min_level, max_level
    )


_POOLER_TYPES = ("ROIAlign", "ROIAlignV2", "ROIPool", "ROIAlignRotated")


class ROIPooler(nn.Module):
    """detectron2.modeling.poolers.ROIPooler: each box pooled from the FPN level detectron2 assigns it
    (:func:`assign_boxes_to_levels`), ``forward(x: list[Tensor], box_lists: list[Tensor]) -> [M, C,
    PH, PW]`` in the boxes' concatenated order. ``pooler_type``: ``"ROIAlign"`` (``aligned=False``),
    ``"ROIAlignV2"`` (``aligned=True``), both every level in one :func:`pydet.ops.multi_scale_roi_align`
    call; ``"ROIPool"`` and ``"ROIAlignRotated"`` (boxes ``[L, 5]``) level by level, as detectron2."""

    def __init__(
        self,
        output_size: Pair,
        scales: list[float],
        sampling_ratio: int,
        pooler_type: str,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        if pooler_type not in _POOLER_TYPES:
            raise ValueError(
                f"pydet.ROIPooler: pooler_type must be one of {_POOLER_TYPES}, got {pooler_type!r}"
            )
        levels = [-math.log2(s) for s in scales]
        if not scales or any(not math.isclose(v, round(v)) for v in levels):
            raise ValueError(
                f"pydet.ROIPooler: scales must be powers of 2 (feature-map strides), got {scales}"
            )
        self.min_level, self.max_level = round(levels[0]), round(levels[-1])
        if len(scales) != self.max_level - self.min_level + 1:
            raise ValueError(f"pydet.ROIPooler: scales must form a pyramid (one per level), got {scales}")
        if canonical_box_size <= 0:
            raise ValueError(f"pydet.ROIPooler: canonical_box_size must be > 0, got {canonical_box_size}")
        self.output_size = tuple(_pair(output_size))
        self.scales, self.sampling_ratio, self.pooler_type = list(scales), sampling_ratio, pooler_type
        self.canonical_box_size, self.canonical_level = canonical_box_size, canonical_level

    def _pool_level(self, level: int, feature: Tensor, rois: Tensor) -> Tensor:
        scale = self.scales[level]
        if self.pooler_type == "ROIPool":
            return roi_pool(feature, rois, self.output_size, scale)
        return ROIAlignRotated(self.output_size, scale, self.sampling_ratio)(feature, rois)

    def forward(self, x: list[Tensor], box_lists: list[Tensor]) -> Tensor:
        if len(x) != len(self.scales):
            raise ValueError(f"pydet.ROIPooler: x must have {len(self.scales)} feature maps, got {len(x)}")
        if len(box_lists) != x[0].shape[0]:
            raise ValueError(
                f"pydet.ROIPooler: box_lists must have one tensor per image ({x[0].shape[0]}), got {len(box_lists)}"
            )
        rotated = self.pooler_type == "ROIAlignRotated"
        rois = (
            boxes_to_rois([b.to(x[0].dtype) for b in box_lists], x[0], "ROIPooler", rotated)
            if box_lists
            else x[0].new_zeros(0, 6 if rotated else 5)
        )
        levels = (
            assign_boxes_to_levels(
                box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
            )
            if box_lists
            else torch.zeros(0, dtype=torch.int64, device=rois.device)
        )
        if self.pooler_type in ("ROIAlign", "ROIAlignV2"):
            aligned = self.pooler_type == "ROIAlignV2"
            return multi_scale_roi_align(
                x, rois, levels, self.scales, self.output_size, self.sampling_ratio, aligned
            )
        out = x[0].new_zeros(len(rois), x[0].shape[1], *self.output_size)
        for level, feature in enumerate(x):
            pick = torch.nonzero(levels == level).squeeze(1)
            out[pick] = self._pool_level(level, feature, rois[pick])
        return out

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, scales={self.scales}, sampling_ratio={self.sampling_ratio}, "
            f"pooler_type={self.pooler_type!r}"
        )


class MultiScaleRoIAlign(nn.Module):
    """torchvision.ops.MultiScaleRoIAlign: each box pooled from the FPN level the FPN paper assigns it
    (scales inferred from the feature maps' sizes, as torchvision does), every level in one
    :func:`pydet.ops.multi_scale_roi_align` call instead of a Python loop over levels.

    ``forward(x: dict[str, Tensor], boxes: list[Tensor[L, 4]], image_shapes: list[(H, W)])``: the maps
    of ``x`` named in ``featmap_names``, in ``x``'s order (torchvision's), all of one dtype."""

    def __init__(
        self,
        featmap_names: list[str],
        output_size: Pair,
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        self.featmap_names = featmap_names
        self.sampling_ratio = sampling_ratio
        self.output_size = tuple(_pair(output_size))
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features = [v for k, v in x.items() if k in self.featmap_names]
        if not image_shapes:
            raise ValueError("pydet.MultiScaleRoIAlign: image_shapes must not be empty")
        original = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
        scales = [_infer_scale(f, original) for f in features]
        rois = boxes_to_rois(boxes, features[0], "multi_scale_roi_align")
        if len(features) == 1:
            levels = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
        else:
            k_min = int(-torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item())
            k_max = int(-torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item())
            levels = fpn_levels(boxes, k_min, k_max, self.canonical_scale, self.canonical_level)
        return multi_scale_roi_align(features, rois, levels, scales, self.output_size, self.sampling_ratio)

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}"
        )
