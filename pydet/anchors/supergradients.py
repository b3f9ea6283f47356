"""super-gradients' SSD ``DefaultBoxes`` (and NVIDIA's DeepLearningExamples SSD it descends from),
numerically identical, on pydet's one-pass grid kernel. No super-gradients import."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pydet.ops.anchors import anchor_grid


class DefaultBoxes:
    """SSD default boxes in normalised image coordinates ([0, 1]), anchor-major.

    Per level ``k`` with scale ``s = scales[k]``, next scale ``s' = scales[k + 1]`` and aspect ratios
    ``a`` in ``aspect_ratios[k]``, the box sizes are ``(s, s)``, ``(sqrt(s s'), sqrt(s s'))`` and
    ``(s sqrt(a), s / sqrt(a))``, ``(s / sqrt(a), s sqrt(a))`` per ratio, divided by ``fig_size``;
    centres ``((j + 0.5) / f, (i + 0.5) / f)`` for feature-map row ``i`` and column ``j``, with
    ``f = feat_size[k]`` (super-gradients) or, when ``steps`` is given, ``f = fig_size / steps[k]``
    (NVIDIA's SSD300; there the sizes are divided by ``fig_size`` before the square root, as NVIDIA
    does). Everything is computed in float64 and rounded once to float32, then clamped to [0, 1].

    Rows are anchor-major -- box size, then feature-map row, then column -- which is the order of an
    SSD head whose ``[B, A * 4, H, W]`` output is viewed as ``[B, 4, A * H * W]``.

    ``boxes("xywh")`` gives ``(cx, cy, w, h)``, ``boxes("ltrb")`` (alias ``"xyxy"``) the corners
    ``cx -/+ 0.5 w``, computed in float32 from the clamped centre-size boxes, as both libraries do.
    Each call returns a fresh copy, so a caller can never modify the boxes held here.

    Ready configurations: :func:`dboxes300_coco` (SSD300, 8,732 boxes) and
    :func:`dboxes_ssdlite_320` (SSDLite-MobileNetV2 at 320, 3,234 boxes).
    """

    def __init__(
        self,
        fig_size: int,
        feat_size,
        steps=None,
        scales=None,
        aspect_ratios=None,
        scale_xy=0.1,
        scale_wh=0.2,
    ):
        if scales is None or aspect_ratios is None:
            raise ValueError("DefaultBoxes: scales and aspect_ratios are required")
        feat_size = [int(f) for f in feat_size]
        if not feat_size:
            raise ValueError("DefaultBoxes: feat_size must list at least one feature map")
        if len(scales) != len(feat_size) + 1:
            raise ValueError(
                f"DefaultBoxes: scales must have one entry per feature map plus one ({len(feat_size) + 1}), got "
                f"{len(scales)}"
            )
        if len(aspect_ratios) != len(feat_size):
            raise ValueError(
                f"DefaultBoxes: aspect_ratios must have one list per feature map ({len(feat_size)}), got "
                f"{len(aspect_ratios)}"
            )
        if steps is not None and len(steps) != len(feat_size):
            raise ValueError(
                f"DefaultBoxes: steps must have one entry per feature map ({len(feat_size)}), got {len(steps)}"
            )
        if fig_size <= 0:
            raise ValueError(f"DefaultBoxes: fig_size must be positive, got {fig_size}")
        if any(f < 0 for f in feat_size):
            raise ValueError(f"DefaultBoxes: feat_size must be >= 0, got {feat_size}")
        if any(s <= 0 for s in scales) or any(a <= 0 for r in aspect_ratios for a in r):
            raise ValueError(
                f"DefaultBoxes: scales and aspect_ratios must be positive, got {scales} and {aspect_ratios}"
            )
        if steps is not None and any(s <= 0 for s in steps):
            raise ValueError(f"DefaultBoxes: steps must be positive, got {steps}")
        self.fig_size = fig_size
        self.feat_size = feat_size
        self.steps = steps
        self.scales = scales
        self.aspect_ratios = aspect_ratios
        self.scale_xy_ = scale_xy
        self.scale_wh_ = scale_wh

        half_sizes, centres = [], []
        self.num_anchors = []
        for k, sfeat in enumerate(feat_size):
            sizes = self._level_sizes(k)
            self.num_anchors.append(len(sizes))
            f = fig_size / steps[k] if steps is not None else sfeat
            centre = torch.tensor([(j + 0.5) / f for j in range(sfeat)], dtype=torch.float64)
            centres.append(centre.float().clamp(0, 1))
            half_sizes.append(0.5 * torch.tensor(sizes, dtype=torch.float64).float().clamp(0, 1))
        zeros = [torch.zeros_like(h) for h in half_sizes]
        # (cx, cy, w, h): centres shifted onto zero, sizes carried through (only x, y are shifted).
        self.dboxes = anchor_grid(
            [torch.cat([z, 2 * h], 1) for z, h in zip(zeros, half_sizes, strict=True)],
            centres,
            centres,
            anchor_major=True,
            shift_corners=False,
        )
        # (cx - w/2, cy - h/2, cx + w/2, cy + h/2) = centre + (-h, h) with h = 0.5 w exact in float32.
        self.dboxes_ltrb = anchor_grid(
            [torch.cat([-h, h], 1) for h in half_sizes], centres, centres, anchor_major=True
        )

    def _level_sizes(self, k: int) -> list[tuple[float, float]]:
        """Level ``k``'s (w, h) in units of the image, in float64 with the library's operation order."""
        if self.steps is not None:  # NVIDIA: normalise, then take the geometric mean
            sk1 = self.scales[k] / self.fig_size
            sk3 = math.sqrt(sk1 * (self.scales[k + 1] / self.fig_size))
            sizes = [(sk1, sk1), (sk3, sk3)]
            for alpha in self.aspect_ratios[k]:
                sizes += [
                    (sk1 * math.sqrt(alpha), sk1 / math.sqrt(alpha)),
                    (sk1 / math.sqrt(alpha), sk1 * math.sqrt(alpha)),
                ]
            return sizes
        sk1 = self.scales[k]  # super-gradients: geometric mean in pixels, then normalise
        sk3 = math.sqrt(sk1 * self.scales[k + 1])
        sizes = [(sk1, sk1), (sk3, sk3)]
        for alpha in self.aspect_ratios[k]:
            w, h = sk1 * math.sqrt(alpha), sk1 / math.sqrt(alpha)
            sizes += [(w, h), (h, w)]
        return [(w / self.fig_size, h / self.fig_size) for w, h in sizes]

    @property
    def scale_xy(self) -> float:
        return self.scale_xy_

    @property
    def scale_wh(self) -> float:
        return self.scale_wh_

    def __call__(self, order: str = "ltrb") -> Tensor:
        """``[num_boxes, 4]`` float32: ``"xywh"`` (centre, size) or ``"ltrb"``/``"xyxy"`` (corners)."""
        if order == "xywh":
            return self.dboxes.clone()
        if order in ("ltrb", "xyxy"):
            return self.dboxes_ltrb.clone()
        raise ValueError(f"DefaultBoxes: order must be 'xywh', 'ltrb' or 'xyxy', got {order!r}")

    def __repr__(self) -> str:
        return (
            f"DefaultBoxes(fig_size={self.fig_size}, feat_size={self.feat_size}, steps={self.steps}, "
            f"scales={self.scales}, aspect_ratios={self.aspect_ratios}, scale_xy={self.scale_xy}, "
            f"scale_wh={self.scale_wh})"
        )


def dboxes300_coco() -> DefaultBoxes:
    """SSD300 (NVIDIA / super-gradients ``dboxes300_coco``): 8,732 boxes."""
    return DefaultBoxes(
        300,
        [38, 19, 10, 5, 3, 1],
        steps=[8, 16, 32, 64, 100, 300],
        scales=[21, 45, 99, 153, 207, 261, 315],
        aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    )


def dboxes_ssdlite_320() -> DefaultBoxes:
    """SSDLite-MobileNetV2 at 320x320 (super-gradients' ``ssdlite_mobilenet_v2`` anchors): 3,234 boxes."""
    return DefaultBoxes(
        320,
        [20, 10, 5, 3, 2, 1],
        scales=[32, 82, 133, 184, 235, 285, 336],
        aspect_ratios=[[2, 3]] * 6,
    )


__all__ = ["DefaultBoxes", "dboxes300_coco", "dboxes_ssdlite_320"]
