"""RetinaNet's head (torchvision ``RetinaNetHead``; detectron2 ``RetinaNetHead``): two towers of four
3x3 conv + ReLU (optional GroupNorm) shared across levels, then the class logits and box deltas."""

from __future__ import annotations

import math

from torch import Tensor, nn

from pydet.layers import Conv2dNormActivation
from pydet.models.heads.common import concat_levels


def _tower(channels: int, num_convs: int, norm_layer) -> nn.Sequential:
    return nn.Sequential(
        *(
            Conv2dNormActivation(channels, channels, 3, norm_layer=norm_layer, activation_layer=nn.ReLU)
            for _ in range(num_convs)
        )
    )


def _init_normal(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


class RetinaNetClassificationHead(nn.Module):
    """``conv`` tower + ``cls_logits``; the logits' bias starts at ``-log((1 - p) / p)`` so every anchor
    begins with foreground probability ``prior_probability`` (the focal-loss paper's init)."""

    def __init__(
        self, in_channels, num_anchors, num_classes, prior_probability=0.01, norm_layer=None, num_convs=4
    ):
        super().__init__()
        self.conv = _tower(in_channels, num_convs, norm_layer)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        _init_normal(self)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))
        self.num_classes = num_classes
        self.num_anchors = num_anchors

    def forward(self, features: list[Tensor]) -> Tensor:
        return concat_levels([self.cls_logits(self.conv(f)) for f in features], self.num_classes)


class RetinaNetRegressionHead(nn.Module):
    """``conv`` tower + ``bbox_reg`` (4 deltas per anchor)."""

    def __init__(self, in_channels, num_anchors, norm_layer=None, num_convs=4):
        super().__init__()
        self.conv = _tower(in_channels, num_convs, norm_layer)
        self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        _init_normal(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        return concat_levels([self.bbox_reg(self.conv(f)) for f in features], 4)


class RetinaNetHead(nn.Module):
    """``forward(features)`` -> ``{"cls_logits": [N, A_total, num_classes], "bbox_regression": [N, A_total, 4]}``.

    ``norm_layer=None`` is RetinaNet v1 (convs with bias); ``partial(nn.GroupNorm, 32)`` gives the
    GroupNorm variant. ``num_classes`` has no background class (sigmoid per class).
    """

    def __init__(self, in_channels, num_anchors, num_classes, norm_layer=None, prior_probability=0.01):
        super().__init__()
        self.classification_head = RetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, prior_probability, norm_layer
        )
        self.regression_head = RetinaNetRegressionHead(in_channels, num_anchors, norm_layer)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        return {
            "cls_logits": self.classification_head(features),
            "bbox_regression": self.regression_head(features),
        }
