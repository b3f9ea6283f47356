"""SSD heads: torchvision's ``SSDHead`` (3x3 conv predictors) and ``SSDLiteHead`` (depthwise-separable
predictors, SSDLite), with torchvision's parameter names so its weights load key for key."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from pydet.layers import Conv2dNormActivation
from pydet.models.heads.common import concat_levels


class _Predictors(nn.Module):
    """One predictor per feature level (``module_list.i``), each giving ``values_per_anchor`` per anchor."""

    def __init__(self, module_list: nn.ModuleList, values_per_anchor: int):
        super().__init__()
        self.module_list = module_list
        self.values_per_anchor = values_per_anchor

    def forward(self, features: list[Tensor]) -> Tensor:
        if len(features) != len(self.module_list):
            raise ValueError(
                f"{type(self).__name__}: expected {len(self.module_list)} feature maps (one per predictor), got "
                f"{len(features)}"
            )
        return concat_levels(
            [m(f) for m, f in zip(self.module_list, features, strict=True)], self.values_per_anchor
        )


class _SSDHeads(nn.Module):
    """A classification and a regression predictor family over the same levels."""

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int, predictor):
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError(
                f"{type(self).__name__}: in_channels and num_anchors need one entry per level, got "
                f"{len(in_channels)} and {len(num_anchors)}"
            )
        levels = list(zip(in_channels, num_anchors, strict=True))
        self.classification_head = _Predictors(
            nn.ModuleList(predictor(c, a * num_classes) for c, a in levels), num_classes
        )
        self.regression_head = _Predictors(nn.ModuleList(predictor(c, a * 4) for c, a in levels), 4)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        return {
            "bbox_regression": self.regression_head(features),
            "cls_logits": self.classification_head(features),
        }


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.constant_(conv.bias, 0.0)
    return conv


class SSDHead(_SSDHeads):
    """``forward(features)`` -> ``{"bbox_regression": [N, A_total, 4], "cls_logits": [N, A_total, num_classes]}``.

    ``in_channels[l]`` and ``num_anchors[l]`` describe level ``l``; one 3x3 conv (padding 1) per level and
    output, Xavier-uniform weights and zero biases (torchvision's init). ``num_classes`` includes the
    background (class 0).
    """

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int):
        super().__init__(in_channels, num_anchors, num_classes, _conv3x3)


class SSDLiteHead(_SSDHeads):
    """SSDLite's head (torchvision ``SSDLiteHead``; super-gradients ``SSDHead(lite=True)``): per level a
    3x3 depthwise conv + norm + ReLU6 (fused kernel) then a 1x1 conv, weights drawn from N(0, 0.03²),
    biases 0. Same outputs as :class:`SSDHead`."""

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int, norm_layer=None):
        norm_layer = norm_layer or partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)

        def separable(c: int, out: int) -> nn.Sequential:
            block = nn.Sequential(
                Conv2dNormActivation(c, c, 3, groups=c, norm_layer=norm_layer), nn.Conv2d(c, out, 1)
            )
            for m in block.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, 0.03)
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0.0)
            return block

        super().__init__(in_channels, num_anchors, num_classes, separable)
