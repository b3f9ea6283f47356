"""mmdet's ``mmdet.core.anchor`` generators, numerically identical to mmdet v2.

Base anchors are computed with mmdet's float32 formulas; the grids come from pydet's one-pass kernel
(``anchor_grid``): rows location-major (feature-map row, column, then base anchor), each anchor the
base anchor plus ``(x * stride_w, y * stride_h)`` in the requested dtype. Grids are cached per
(feature-map sizes, dtype, device) -- see :class:`pydet.anchors.GridCache`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from pydet.anchors._grid import GridCache, check_featmap_sizes, pair, split_levels
from pydet.ops.anchors import anchor_grid


class AnchorGenerator:
    """mmdet's standard anchor generator (V2.0 conventions).

    Args:
        strides: per level, an int or ``(stride_w, stride_h)``.
        ratios: height/width ratios of the base anchors.
        scales: anchor scales (relative to ``base_sizes``); or give ``octave_base_scale`` and
            ``scales_per_octave`` (``scales = octave_base_scale * 2**(i / scales_per_octave)``), not both.
        base_sizes: per level (default: the shorter stride).
        scale_major: base anchors ordered scale-fastest within each ratio (True) or ratio-fastest.
        centers: per level ``(x, y)`` centre of the base anchors in a cell (default: the cell origin
            shifted by ``center_offset`` times the base size).
        center_offset: in [0, 1]; cannot be combined with ``centers``.

    Example (mmdet's docstring)::

        >>> gen = AnchorGenerator([16], [1.0], [1.0], [9])
        >>> gen.grid_priors([(2, 2)], device="cpu")
        [tensor([[-4.5000, -4.5000,  4.5000,  4.5000],
                [11.5000, -4.5000, 20.5000,  4.5000],
                [-4.5000, 11.5000,  4.5000, 20.5000],
                [11.5000, 11.5000, 20.5000, 20.5000]])]
    """

    def __init__(
        self,
        strides,
        ratios,
        scales=None,
        base_sizes=None,
        scale_major=True,
        octave_base_scale=None,
        scales_per_octave=None,
        centers=None,
        center_offset=0.0,
    ):
        name = type(self).__name__
        if center_offset != 0 and centers is not None:
            raise ValueError(f"{name}: centers cannot be set when center_offset != 0 (got {center_offset})")
        if not 0 <= center_offset <= 1:
            raise ValueError(f"{name}: center_offset must be in [0, 1], got {center_offset}")
        self.strides = [pair(s, f"{name}: strides") for s in strides]
        if any(v <= 0 for s in self.strides for v in s):
            raise ValueError(f"{name}: strides must be positive, got {strides}")
        if centers is not None and len(centers) != len(self.strides):
            raise ValueError(
                f"{name}: centers must have one entry per level ({len(self.strides)}), got {len(centers)}"
            )
        self.base_sizes = [min(s) for s in self.strides] if base_sizes is None else list(base_sizes)
        if len(self.base_sizes) != len(self.strides):
            raise ValueError(
                f"{name}: base_sizes must have one entry per level ({len(self.strides)}), got {len(self.base_sizes)}"
            )
        if any(b <= 0 for b in self.base_sizes):
            raise ValueError(f"{name}: base_sizes must be positive, got {self.base_sizes}")
        octave = octave_base_scale is not None and scales_per_octave is not None
        if octave == (scales is not None):
            raise ValueError(
                f"{name}: give either scales or (octave_base_scale and scales_per_octave), not both and not neither"
            )
        if scales is not None:
            self.scales = torch.Tensor(scales)
        else:
            octave_scales = np.array([2 ** (i / scales_per_octave) for i in range(scales_per_octave)])
            self.scales = torch.Tensor(octave_scales * octave_base_scale)
        if len(ratios) == 0 or self.scales.numel() == 0:
            raise ValueError(f"{name}: ratios and scales must not be empty")
        if (torch.Tensor(ratios) <= 0).any() or (self.scales <= 0).any():
            raise ValueError(
                f"{name}: ratios and scales must be positive, got {ratios} and {self.scales.tolist()}"
            )
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.ratios = torch.Tensor(ratios)
        self.scale_major = scale_major
        self.centers = centers
        self.center_offset = center_offset
        self.base_anchors = self.gen_base_anchors()
        self._cache = GridCache()

    # ---- properties ------------------------------------------------------------------------------
    @property
    def num_base_anchors(self) -> list[int]:
        """Base anchors per cell, per level."""
        return self.num_base_priors

    @property
    def num_base_priors(self) -> list[int]:
        """Priors (anchors) per cell, per level."""
        return [b.size(0) for b in self.base_anchors]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    # ---- base anchors ----------------------------------------------------------------------------
    def gen_base_anchors(self) -> list[Tensor]:
        return [
            self.gen_single_level_base_anchors(
                base_size,
                scales=self.scales,
                ratios=self.ratios,
                center=None if self.centers is None else self.centers[i],
            )
            for i, base_size in enumerate(self.base_sizes)
        ]

    def _sizes(self, w, h, scales, ratios):
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        if self.scale_major:
            ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)
            hs = (h * h_ratios[:, None] * scales[None, :]).view(-1)
        else:
            ws = (w * scales[:, None] * w_ratios[None, :]).view(-1)
            hs = (h * scales[:, None] * h_ratios[None, :]).view(-1)
        return ws, hs

    def gen_single_level_base_anchors(self, base_size, scales, ratios, center=None) -> Tensor:
        w = h = base_size
        x_center, y_center = (self.center_offset * w, self.center_offset * h) if center is None else center
        ws, hs = self._sizes(w, h, scales, ratios)
        return torch.stack(
            [x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs], dim=-1
        )

    # ---- grids -----------------------------------------------------------------------------------
    def _shifts(self, featmap_size, level_idx, dtype, device):
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level_idx]
        shift_x = torch.arange(0, feat_w, device=device).to(dtype) * stride_w
        shift_y = torch.arange(0, feat_h, device=device).to(dtype) * stride_h
        return shift_x, shift_y

    def _grid(self, sizes, levels, dtype, device) -> list[Tensor]:
        def create():
            shifts = [self._shifts(sizes[k], level, dtype, device) for k, level in enumerate(levels)]
            base = [self.base_anchors[level].to(device).to(dtype) for level in levels]
            anchors = anchor_grid(base, [s[0] for s in shifts], [s[1] for s in shifts])
            counts = [
                h * w * self.num_base_priors[level] for (h, w), level in zip(sizes, levels, strict=True)
            ]
            return split_levels(anchors, counts), anchors

        key = (tuple(sizes), tuple(levels), dtype, torch.device(device))
        return list(self._cache.get(key, create))

    def grid_priors(self, featmap_sizes, dtype=torch.float32, device="cuda") -> list[Tensor]:
        """Anchors of every level, ``[H * W * A, 4]`` each (one kernel pass for all levels)."""
        sizes = check_featmap_sizes(featmap_sizes, self.num_levels, type(self).__name__)
        return self._grid(sizes, list(range(self.num_levels)), dtype, device)

    def single_level_grid_priors(self, featmap_size, level_idx, dtype=torch.float32, device="cuda") -> Tensor:
        """Anchors of one level, ``[H * W * A, 4]``."""
        self._check_level(level_idx)
        return self._grid([tuple(int(v) for v in featmap_size)], [level_idx], dtype, device)[0]

    def grid_anchors(self, featmap_sizes, device="cuda") -> list[Tensor]:
        """Deprecated in mmdet in favour of :meth:`grid_priors`; the same anchors in the base anchors' dtype."""
        warnings.warn("``grid_anchors`` would be deprecated soon. Please use ``grid_priors`` ", stacklevel=2)
        return self.grid_priors(featmap_sizes, dtype=self.base_anchors[0].dtype, device=device)

    def single_level_grid_anchors(self, base_anchors, featmap_size, stride=(16, 16), device="cuda") -> Tensor:
        """Deprecated in mmdet; grid of the given base anchors at the given stride."""
        warnings.warn(
            "``single_level_grid_anchors`` would be deprecated soon. Please use ``single_level_grid_priors`` ",
            stacklevel=2,
        )
        feat_h, feat_w = featmap_size
        base = base_anchors.to(device)
        shift_x = (torch.arange(0, feat_w, device=device) * stride[0]).type_as(base)
        shift_y = (torch.arange(0, feat_h, device=device) * stride[1]).type_as(base)
        return anchor_grid([base], [shift_x], [shift_y])

    def sparse_priors(
        self, prior_idxs, featmap_size, level_idx, dtype=torch.float32, device="cuda"
    ) -> Tensor:
        """The anchors at the given flat indices of one level's grid, ``[len(prior_idxs), 4]``."""
        self._check_level(level_idx)
        height, width = featmap_size
        num_base_anchors = self.num_base_anchors[level_idx]
        base_anchor_id = prior_idxs % num_base_anchors
        x = (prior_idxs // num_base_anchors) % width * self.strides[level_idx][0]
        y = (prior_idxs // width // num_base_anchors) % height * self.strides[level_idx][1]
        base = self.base_anchors[level_idx][base_anchor_id, :].to(device)
        return torch.stack([x, y, x, y], 1).to(dtype).to(device) + base

    # ---- valid flags -----------------------------------------------------------------------------
    def valid_flags(self, featmap_sizes, pad_shape, device="cuda") -> list[Tensor]:
        """Per level, whether each anchor's cell lies inside the padded image ``pad_shape`` (h, w)."""
        sizes = check_featmap_sizes(featmap_sizes, self.num_levels, type(self).__name__)
        return [
            self.single_level_valid_flags(
                size, _valid_size(size, pad_shape, self.strides[i]), self.num_base_anchors[i], device=device
            )
            for i, size in enumerate(sizes)
        ]

    def single_level_valid_flags(self, featmap_size, valid_size, num_base_anchors, device="cuda") -> Tensor:
        valid = _cell_valid_flags(featmap_size, valid_size, type(self).__name__, device)
        return valid[:, None].expand(valid.size(0), num_base_anchors).contiguous().view(-1)

    def _check_level(self, level_idx: int) -> None:
        if not 0 <= level_idx < self.num_levels:
            raise ValueError(
                f"{type(self).__name__}: level_idx must be in [0, {self.num_levels}), got {level_idx}"
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(strides={self.strides}, ratios={self.ratios.tolist()}, "
            f"scales={self.scales.tolist()}, base_sizes={self.base_sizes}, scale_major={self.scale_major}, "
            f"centers={self.centers}, center_offset={self.center_offset})"
        )


class LegacyAnchorGenerator(AnchorGenerator):
    """mmdet V1.x conventions: centre offset 0.5 (pass ``center_offset=0.5``), widths and heights
    minus 1 when computing centres and corners, corners rounded (half to even, as ``torch.round``).

    Example (mmdet's docstring)::

        >>> gen = LegacyAnchorGenerator([16], [1.0], [1.0], [9], center_offset=0.5)
        >>> gen.grid_anchors(((2, 2),), device="cpu")
        [tensor([[ 0.,  0.,  8.,  8.],
                [16.,  0., 24.,  8.],
                [ 0., 16.,  8., 24.],
                [16., 16., 24., 24.]])]
    """

    def gen_single_level_base_anchors(self, base_size, scales, ratios, center=None) -> Tensor:
        w = h = base_size
        x_center, y_center = (
            (self.center_offset * (w - 1), self.center_offset * (h - 1)) if center is None else center
        )
        ws, hs = self._sizes(w, h, scales, ratios)
        base = [
            x_center - 0.5 * (ws - 1),
            y_center - 0.5 * (hs - 1),
            x_center + 0.5 * (ws - 1),
            y_center + 0.5 * (hs - 1),
        ]
        return torch.stack(base, dim=-1).round()


class SSDAnchorGenerator(AnchorGenerator):
    """mmdet's SSD anchors: per level, base size ``min_size``, scales ``(1, sqrt(max_size / min_size))``,
    ratios ``1`` plus ``(1/r, r)`` for each ``r`` in ``ratios[level]``, centres at half a stride.

    Without ``min_sizes``/``max_sizes`` they follow mmdet's hard-coded SSD300 (``basesize_ratio_range``
    starting at 0.15 for COCO, 0.2 for VOC) and SSD512 (0.1 COCO, 0.15 VOC) tables. mmdet's SSD
    configs use ``scale_major=False``, which gives the classic order (small 1:1, large 1:1, then
    ratio pairs).
    """

    def __init__(
        self,
        strides,
        ratios,
        min_sizes=None,
        max_sizes=None,
        basesize_ratio_range=(0.15, 0.9),
        input_size=300,
        scale_major=True,
    ):
        name = type(self).__name__
        if len(strides) != len(ratios):
            raise ValueError(
                f"{name}: strides and ratios must have the same length, got {len(strides)} and {len(ratios)}"
            )
        if (min_sizes is None) != (max_sizes is None):
            raise ValueError(f"{name}: give both min_sizes and max_sizes, or neither")
        self.strides = [pair(s, f"{name}: strides") for s in strides]
        if any(v <= 0 for s in self.strides for v in s):
            raise ValueError(f"{name}: strides must be positive, got {strides}")
        self.centers = [(s[0] / 2.0, s[1] / 2.0) for s in self.strides]
        if min_sizes is None:
            min_sizes, max_sizes = self._default_sizes(basesize_ratio_range, input_size)
        if not len(min_sizes) == len(max_sizes) == len(strides):
            raise ValueError(
                f"{name}: min_sizes and max_sizes must have one entry per level ({len(strides)}), got "
                f"{len(min_sizes)} and {len(max_sizes)}"
            )
        self.input_size = input_size
        self.basesize_ratio_range = basesize_ratio_range
        self.base_sizes = list(min_sizes)
        self.scales = [torch.Tensor([1.0, np.sqrt(max_sizes[k] / min_sizes[k])]) for k in range(len(strides))]
        self.ratios = []
        for r in ratios:
            anchor_ratio = [1.0]
            for v in r:
                anchor_ratio += [1 / v, v]
            self.ratios.append(torch.Tensor(anchor_ratio))
        self.scale_major = scale_major
        self.center_offset = 0
        self.octave_base_scale = self.scales_per_octave = None
        self.base_anchors = self.gen_base_anchors()
        self._cache = GridCache()

    def _default_sizes(self, basesize_ratio_range, input_size):
        name = type(self).__name__
        min_ratio, max_ratio = (int(r * 100) for r in basesize_ratio_range)
        step = int(np.floor(max_ratio - min_ratio) / (self.num_levels - 2))
        min_sizes, max_sizes = [], []
        for ratio in range(int(min_ratio), int(max_ratio) + 1, step):
            min_sizes.append(int(input_size * ratio / 100))
            max_sizes.append(int(input_size * (ratio + step) / 100))
        first = {(300, 0.15): (7, 15), (300, 0.2): (10, 20), (512, 0.1): (4, 10), (512, 0.15): (7, 15)}
        key = (input_size, basesize_ratio_range[0])
        if key not in first:
            raise ValueError(
                f"{name}: without min_sizes/max_sizes, input_size must be 300 (basesize_ratio_range starting at "
                f"0.15 or 0.2) or 512 (0.1 or 0.15), got {input_size} and {basesize_ratio_range[0]}"
            )
        lo, hi = first[key]
        min_sizes.insert(0, int(input_size * lo / 100))
        max_sizes.insert(0, int(input_size * hi / 100))
        return min_sizes, max_sizes

    def gen_base_anchors(self) -> list[Tensor]:
        anchors = []
        for i, base_size in enumerate(self.base_sizes):
            base = self.gen_single_level_base_anchors(
                base_size, scales=self.scales[i], ratios=self.ratios[i], center=self.centers[i]
            )
            indices = list(range(len(self.ratios[i])))
            indices.insert(1, len(indices))
            anchors.append(torch.index_select(base, 0, torch.LongTensor(indices)))
        return anchors

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strides={self.strides}, base_sizes={self.base_sizes}, scale_major={self.scale_major})"


class YOLOAnchorGenerator(AnchorGenerator):
    """mmdet's YOLO anchors: per level, explicit ``(w, h)`` base sizes centred at half a stride."""

    def __init__(self, strides, base_sizes):
        name = type(self).__name__
        self.strides = [pair(s, f"{name}: strides") for s in strides]
        if any(v <= 0 for s in self.strides for v in s):
            raise ValueError(f"{name}: strides must be positive, got {strides}")
        if len(base_sizes) != len(self.strides):
            raise ValueError(
                f"{name}: base_sizes must have one list per level ({len(self.strides)}), got {len(base_sizes)}"
            )
        self.centers = [(s[0] / 2.0, s[1] / 2.0) for s in self.strides]
        self.base_sizes = []
        per_level = len(base_sizes[0])
        for sizes in base_sizes:
            if len(sizes) != per_level:
                raise ValueError(
                    f"{name}: every level must have the same number of base sizes, got {base_sizes}"
                )
            self.base_sizes.append([pair(s, f"{name}: base_sizes") for s in sizes])
        self.base_anchors = self.gen_base_anchors()
        self._cache = GridCache()

    @property
    def num_levels(self) -> int:
        return len(self.base_sizes)

    def gen_base_anchors(self) -> list[Tensor]:
        return [
            self.gen_single_level_base_anchors(sizes, self.centers[i])
            for i, sizes in enumerate(self.base_sizes)
        ]

    def gen_single_level_base_anchors(self, base_sizes_per_level, center=None) -> Tensor:
        x_center, y_center = center
        anchors = [
            torch.Tensor([x_center - 0.5 * w, y_center - 0.5 * h, x_center + 0.5 * w, y_center + 0.5 * h])
            for w, h in base_sizes_per_level
        ]
        return torch.stack(anchors, dim=0)

    def responsible_flags(self, featmap_sizes, gt_bboxes, device="cuda") -> list[Tensor]:
        """Per level, 1 for the anchors of the cells that contain a ground-truth box's centre."""
        sizes = check_featmap_sizes(featmap_sizes, self.num_levels, type(self).__name__)
        return [
            self.single_level_responsible_flags(
                sizes[i], gt_bboxes, self.strides[i], self.num_base_anchors[i], device=device
            )
            for i in range(self.num_levels)
        ]

    def single_level_responsible_flags(
        self, featmap_size, gt_bboxes, stride, num_base_anchors, device="cuda"
    ) -> Tensor:
        feat_h, feat_w = featmap_size
        cx = ((gt_bboxes[:, 0] + gt_bboxes[:, 2]) * 0.5).to(device)
        cy = ((gt_bboxes[:, 1] + gt_bboxes[:, 3]) * 0.5).to(device)
        grid_x = torch.floor(cx / stride[0]).long()
        grid_y = torch.floor(cy / stride[1]).long()
        cells = torch.zeros(feat_h * feat_w, dtype=torch.uint8, device=device)
        cells[grid_y * feat_w + grid_x] = 1
        return cells[:, None].expand(cells.size(0), num_base_anchors).contiguous().view(-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strides={self.strides}, base_sizes={self.base_sizes})"


class MlvlPointGenerator:
    """mmdet's point generator (anchor-free heads): per level, the points ``((x + offset) * stride_w,
    (y + offset) * stride_h)``, optionally with the strides appended."""

    def __init__(self, strides, offset=0.5):
        self.strides = [pair(s, "MlvlPointGenerator: strides") for s in strides]
        if any(v <= 0 for s in self.strides for v in s):
            raise ValueError(f"MlvlPointGenerator: strides must be positive, got {strides}")
        self.offset = offset
        self._cache = GridCache()

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        return [1] * self.num_levels

    def grid_priors(
        self, featmap_sizes, dtype=torch.float32, device="cuda", with_stride=False
    ) -> list[Tensor]:
        sizes = check_featmap_sizes(featmap_sizes, self.num_levels, "MlvlPointGenerator")
        return self._grid(sizes, list(range(self.num_levels)), dtype, device, with_stride)

    def single_level_grid_priors(
        self, featmap_size, level_idx, dtype=torch.float32, device="cuda", with_stride=False
    ) -> Tensor:
        if not 0 <= level_idx < self.num_levels:
            raise ValueError(
                f"MlvlPointGenerator: level_idx must be in [0, {self.num_levels}), got {level_idx}"
            )
        return self._grid([tuple(int(v) for v in featmap_size)], [level_idx], dtype, device, with_stride)[0]

    def _grid(self, sizes, levels, dtype, device, with_stride) -> list[Tensor]:
        def create():
            base, sx, sy = [], [], []
            for (feat_h, feat_w), level in zip(sizes, levels, strict=True):
                stride_w, stride_h = self.strides[level]
                sx.append(((torch.arange(0, feat_w, device=device) + self.offset) * stride_w).to(dtype))
                sy.append(((torch.arange(0, feat_h, device=device) + self.offset) * stride_h).to(dtype))
                tail = [stride_w, stride_h] if with_stride else [0, 0]
                base.append(torch.tensor([[0, 0, *tail]], dtype=dtype, device=device))
            points = anchor_grid(base, sx, sy, shift_corners=False)  # rows (x, y, stride_w, stride_h)
            if not with_stride:
                points = points[:, :2].contiguous()
            return split_levels(points, [h * w for h, w in sizes]), points

        key = (tuple(sizes), tuple(levels), dtype, torch.device(device), with_stride)
        return list(self._cache.get(key, create))

    def valid_flags(self, featmap_sizes, pad_shape, device="cuda") -> list[Tensor]:
        sizes = check_featmap_sizes(featmap_sizes, self.num_levels, "MlvlPointGenerator")
        return [
            self.single_level_valid_flags(size, _valid_size(size, pad_shape, self.strides[i]), device=device)
            for i, size in enumerate(sizes)
        ]

    def single_level_valid_flags(self, featmap_size, valid_size, device="cuda") -> Tensor:
        return _cell_valid_flags(featmap_size, valid_size, "MlvlPointGenerator", device)

    def sparse_priors(
        self, prior_idxs, featmap_size, level_idx, dtype=torch.float32, device="cuda"
    ) -> Tensor:
        height, width = featmap_size
        x = (prior_idxs % width + self.offset) * self.strides[level_idx][0]
        y = ((prior_idxs // width) % height + self.offset) * self.strides[level_idx][1]
        return torch.stack([x, y], 1).to(dtype).to(device)

    def __repr__(self) -> str:
        return f"MlvlPointGenerator(strides={self.strides}, offset={self.offset})"


# ---- helpers -------------------------------------------------------------------------------------
def _valid_size(featmap_size, pad_shape, stride) -> tuple[int, int]:
    """The cells of a feature map that cover the padded image: ceil(pad / stride), at most the map."""
    (feat_h, feat_w), (h, w), (stride_w, stride_h) = featmap_size, pad_shape[:2], stride
    return min(int(np.ceil(h / stride_h)), feat_h), min(int(np.ceil(w / stride_w)), feat_w)


def _cell_valid_flags(featmap_size, valid_size, owner: str, device) -> Tensor:
    """``[H * W]`` bool, row-major: True for the cells in the top-left ``valid_size`` (h, w)."""
    feat_h, feat_w = featmap_size
    valid_h, valid_w = valid_size
    if not (valid_h <= feat_h and valid_w <= feat_w):
        raise ValueError(f"{owner}: valid_size {valid_size} must not exceed featmap_size {featmap_size}")
    valid_x = torch.zeros(feat_w, dtype=torch.bool, device=device)
    valid_y = torch.zeros(feat_h, dtype=torch.bool, device=device)
    valid_x[:valid_w] = 1
    valid_y[:valid_h] = 1
    return (valid_y[:, None] & valid_x[None, :]).reshape(-1)


def anchor_inside_flags(
    flat_anchors: Tensor, valid_flags: Tensor, img_shape, allowed_border: int = 0
) -> Tensor:
    """Valid anchors lying inside the image (``img_shape`` = (h, w, ...)) up to ``allowed_border``
    pixels; a negative border disables the check."""
    img_h, img_w = img_shape[:2]
    if allowed_border < 0:
        return valid_flags
    return (
        valid_flags
        & (flat_anchors[:, 0] >= -allowed_border)
        & (flat_anchors[:, 1] >= -allowed_border)
        & (flat_anchors[:, 2] < img_w + allowed_border)
        & (flat_anchors[:, 3] < img_h + allowed_border)
    )


def calc_region(bbox: Tensor, ratio: float, featmap_size=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """mmdet's proportional region of a box ``(x1, y1, x2, y2)``: ``x1' = round((1 - r) x1 + r x2)``,
    ``x2' = round(r x1 + (1 - r) x2)`` (and likewise in y), as int64, clipped to ``featmap_size``
    (h, w) when given. Works on one box ``[4]`` or many ``[..., 4]``."""
    x1 = torch.round((1 - ratio) * bbox[..., 0] + ratio * bbox[..., 2]).long()
    y1 = torch.round((1 - ratio) * bbox[..., 1] + ratio * bbox[..., 3]).long()
    x2 = torch.round(ratio * bbox[..., 0] + (1 - ratio) * bbox[..., 2]).long()
    y2 = torch.round(ratio * bbox[..., 1] + (1 - ratio) * bbox[..., 3]).long()
    if featmap_size is not None:
        x1 = x1.clamp(min=0, max=featmap_size[1])
        y1 = y1.clamp(min=0, max=featmap_size[0])
        x2 = x2.clamp(min=0, max=featmap_size[1])
        y2 = y2.clamp(min=0, max=featmap_size[0])
    return x1, y1, x2, y2


def images_to_levels(target, num_levels) -> list[Tensor]:
    """Per-image targets ``[target_img0, target_img1, ...]`` (each covering all levels' anchors) to
    per-level targets ``[target_level0, ...]`` of shape ``[num_images, anchors_in_level, ...]``."""
    target = torch.stack(target, 0)
    levels, start = [], 0
    for n in num_levels:
        levels.append(target[:, start : start + n])
        start += n
    return levels


__all__ = [
    "AnchorGenerator",
    "LegacyAnchorGenerator",
    "MlvlPointGenerator",
    "SSDAnchorGenerator",
    "YOLOAnchorGenerator",
    "anchor_inside_flags",
    "calc_region",
    "images_to_levels",
]
