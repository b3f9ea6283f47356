"""MobileNetV2 (torchvision layout) and MobileNetV1, built from pydet's separable-conv blocks.

:class:`MobileNetV2` has ``torchvision.models.mobilenet_v2()``'s keys: ``features.0`` the stem
(3x3/2 :class:`Conv2dNormActivation`), ``features.1..17`` :class:`InvertedResidual` blocks,
``features.18`` the 1x1 conv to ``last_channel`` (1280), and ``classifier.1`` (the Linear after a
Dropout) when ``num_classes`` is set. Output strides of the features: 2 (index 0-1), 4 (2-3),
8 (4-6), 16 (7-13), 32 (14-18); index 13 is C4 (96 ch), 18 is C5 (1280 ch).

:class:`MobileNetV1` (no torchvision counterpart) uses mmcv-style blocks: ``features.0`` a 3x3/2
:class:`ConvModule` stem (``conv``, ``bn``), ``features.1..13`` :class:`DepthwiseSeparableConv`
blocks (``depthwise_conv.*``, ``pointwise_conv.*``). Output strides: 2 (index 0-1), 4 (2-3),
8 (4-5), 16 (6-11), 32 (12-13).

With ``out_indices`` both return the list of those ``features`` outputs (NCHW), in the given order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pydet.layers import Conv2dNormActivation, ConvModule, DepthwiseSeparableConv, InvertedResidual

NormLayer = Callable[[int], nn.Module]

# (expand ratio t, channels c, repeats n, first stride s) of the MobileNetV2 paper's Table 2.
_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# (channels, stride) of MobileNetV1's 13 depthwise-separable blocks.
_V1_SETTING = (
    ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))
)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``min_value``, default
    ``divisor``), rounded up when rounding down would lose more than 10% (TensorFlow's slim rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _check_indices(out_indices: Sequence[int] | None, n: int, name: str) -> list[int] | None:
    if out_indices is None:
        return None
    indices = list(out_indices)
    if not indices or not all(0 <= i < n for i in indices):
        raise ValueError(
            f"{name}: out_indices must be non-empty indices into features [0, {n}), got {out_indices}"
        )
    return indices


def _collect(features: nn.Sequential, indices: list[int], x: Tensor) -> list[Tensor]:
    """The outputs of ``features[i]`` for ``i`` in ``indices`` (their order), from one pass that
    stops after the deepest one."""
    wanted = {}
    last = max(indices)
    for i, layer in enumerate(features):
        if i > last:
            break
        x = layer(x)
        if i in indices:
            wanted[i] = x
    return [wanted[i] for i in indices]


class MobileNetV2(nn.Module):
    """MobileNetV2 in torchvision's layout (see the module doc). ``width_mult`` scales every
    width (rounded to ``round_nearest``; ``last_channel`` only grows). ``num_classes``: ``forward``
    returns logits (global average pool, Dropout(``dropout``), Linear). ``out_indices``: ``forward``
    returns ``[features[i](...) for i in out_indices]``; ``out_channels`` lists their widths.
    Otherwise ``forward`` returns the ``features.18`` map. Initialisation is torchvision's."""

    def __init__(
        self,
        width_mult: float = 1.0,
        round_nearest: int = 8,
        num_classes: int | None = None,
        out_indices: Sequence[int] | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        dropout: float = 0.2,
    ):
        super().__init__()
        if num_classes is not None and out_indices is not None:
            raise ValueError("MobileNetV2: give num_classes or out_indices, not both")
        in_channels = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        layers: list[nn.Module] = [Conv2dNormActivation(3, in_channels, stride=2, norm_layer=norm_layer)]
        for t, c, n, s in _V2_SETTING:
            out_channels = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                layers.append(
                    InvertedResidual(in_channels, out_channels, s if i == 0 else 1, t, norm_layer=norm_layer)
                )
                in_channels = out_channels
        layers.append(
            Conv2dNormActivation(in_channels, self.last_channel, kernel_size=1, norm_layer=norm_layer)
        )
        self.features = nn.Sequential(*layers)
        self.out_indices = _check_indices(out_indices, len(self.features), "MobileNetV2")
        self.out_channels = (
            self.last_channel
            if self.out_indices is None
            else [self.features[i].out_channels for i in self.out_indices]
        )
        if num_classes is not None:
            self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        self._classify = num_classes is not None

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.out_indices is not None:
            return _collect(self.features, self.out_indices, x)
        x = self.features(x)
        if self._classify:
            x = self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
        return x


class MobileNetV1(nn.Module):
    """MobileNetV1: a 3x3/2 stem (32 ch) and 13 depthwise-separable blocks (3x3 depthwise +
    1x1 pointwise, each with BatchNorm and ReLU) up to 1024 channels at stride 32; layout in the
    module doc. ``width_mult`` scales every width (rounded to multiples of 8). ``out_indices``:
    ``forward`` returns ``[features[i](...) for i in out_indices]``, else the last map.
    ``out_channels`` lists the returned widths (or is the last width)."""

    def __init__(
        self,
        width_mult: float = 1.0,
        out_indices: Sequence[int] | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
    ):
        super().__init__()
        norm_cfg = {"type": "BN"} if norm_cfg is None else norm_cfg
        act_cfg = {"type": "ReLU"} if act_cfg is None else act_cfg
        in_channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [
            ConvModule(3, in_channels, 3, stride=2, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        ]
        widths = [in_channels]
        for c, s in _V1_SETTING:
            out_channels = make_divisible(c * width_mult)
            layers.append(
                DepthwiseSeparableConv(
                    in_channels, out_channels, 3, stride=s, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg
                )
            )
            widths.append(out_channels)
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.out_indices = _check_indices(out_indices, len(self.features), "MobileNetV1")
        self.out_channels = in_channels if self.out_indices is None else [widths[i] for i in self.out_indices]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.out_indices is not None:
            return _collect(self.features, self.out_indices, x)
        return self.features(x)
