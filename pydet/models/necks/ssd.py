"""SSD necks: extra stride-2 levels appended after a backbone's last map.

- :class:`SSDLiteFeatureExtractorMobileNetV2`: torchvision's ``SSDLiteFeatureExtractorMobileNet``
  layout on a MobileNetV2. ``features.0`` runs the backbone up to and including the 1x1 expansion of
  block 14 (the first stride-32 block), whose 576-channel stride-16 output is C4 (MobileNetV3
  paper, section 6.3); ``features.1`` runs the rest of block 14 (``features.1.0.{1,2,3}`` = its
  depthwise conv, projection and norm, keeping their indices as torchvision's slices do) and blocks 15..18 (1280 channels, stride 32). ``extra.0..3`` are
  :func:`ssdlite_extra_block` s with 512, 256, 256, 128 channels. A 320x320 input gives 6 maps:
  [576, 1280, 512, 256, 256, 128] channels on 20, 10, 5, 3, 2, 1 grids.
- :class:`SSDInvertedResidualNeck` / :class:`SSDBottleneckNeck`: super-gradients' ``SSDNeck``
  variants (keys ``neck_blocks.i.*``): they take the backbone's list of maps and return it followed
  by one map per block, each block applied to the previous output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from pydet.layers import Conv2dNormActivation, InvertedResidual
from pydet.models.backbones.mobilenet import MobileNetV2

NormLayer = Callable[[int], nn.Module]

_C4_BLOCK = 14  # MobileNetV2's first stride-2 block after C4 (features.14: 96 -> 160 channels)


def ssdlite_extra_block(
    in_channels: int, out_channels: int, norm_layer: NormLayer = nn.BatchNorm2d
) -> nn.Sequential:
    """torchvision's SSDLite extra block: 1x1 to ``out_channels // 2``, 3x3 depthwise stride 2
    (padding 1), 1x1 to ``out_channels``; each :class:`Conv2dNormActivation` with ReLU6. Halves the
    grid (ceil)."""
    mid = out_channels // 2
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, 1, norm_layer=norm_layer),
        Conv2dNormActivation(mid, mid, 3, stride=2, groups=mid, norm_layer=norm_layer),
        Conv2dNormActivation(mid, out_channels, 1, norm_layer=norm_layer),
    )


def _normal_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=0.03)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SSDLiteFeatureExtractorMobileNetV2(nn.Module):
    """SSDLite's MobileNetV2 feature extractor (layout in the module doc). ``width_mult`` scales the
    backbone and the extra blocks (``max(min_depth, int(c * width_mult))`` channels).
    ``backbone``: a :class:`MobileNetV2` to split (e.g. with ImageNet weights; its modules are
    reused); by default a fresh one with ``width_mult`` and ``norm_layer``. The extra blocks are
    initialised N(0, 0.03) with zero biases, as in torchvision. ``forward(x)`` returns the 6 maps."""

    def __init__(
        self,
        width_mult: float = 1.0,
        min_depth: int = 16,
        norm_layer: NormLayer = nn.BatchNorm2d,
        backbone: MobileNetV2 | None = None,
    ):
        super().__init__()
        if backbone is None:
            backbone = MobileNetV2(width_mult=width_mult, norm_layer=norm_layer)
        features = backbone.features
        split = features[_C4_BLOCK]
        if split.use_res_connect or len(split.conv) != 4:  # 4: expansion, depthwise, projection, norm
            raise ValueError("SSDLiteFeatureExtractorMobileNetV2: block 14 must be a strided expansion block")
        self.features = nn.Sequential(
            nn.Sequential(*features[:_C4_BLOCK], split.conv[0]),  # stem .. C4 expansion (stride 16)
            nn.Sequential(split.conv[1:], *features[_C4_BLOCK + 1 :]),  # C4 depthwise .. last 1x1 conv
        )

        def depth(c: int) -> int:
            return max(min_depth, int(c * width_mult))

        widths = [features[-1].out_channels, depth(512), depth(256), depth(256), depth(128)]
        self.extra = nn.ModuleList(
            ssdlite_extra_block(widths[i], widths[i + 1], norm_layer) for i in range(len(widths) - 1)
        )
        _normal_init(self.extra)
        self.out_channels = [split.conv[0].out_channels, *widths]

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for block in self.features:
            x = block(x)
            outputs.append(x)
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return outputs


class _SSDNeck(nn.Module):
    """Returns ``inputs + [b_1(inputs[-1]), b_2(b_1(...)), ...]`` for its ``neck_blocks``; the input
    list is not modified. ``out_channels`` lists the channels of every returned map."""

    def __init__(
        self, in_channels: int | Sequence[int], blocks: list[nn.Module], out_channels: Sequence[int]
    ):
        super().__init__()
        self.neck_blocks = nn.ModuleList(blocks)
        in_list = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        self.out_channels = in_list + list(out_channels)

    def forward(self, inputs: Tensor | Sequence[Tensor]) -> list[Tensor]:
        outputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        x = outputs[-1]
        for block in self.neck_blocks:
            x = block(x)
            outputs.append(x)
        return outputs


def _last(in_channels: int | Sequence[int]) -> int:
    return in_channels if isinstance(in_channels, int) else in_channels[-1]


class SSDInvertedResidualNeck(_SSDNeck):
    """super-gradients' ``SSDInvertedResidualNeck``: one stride-2 :class:`InvertedResidual` per entry
    of ``out_channels`` (expansion ``expand_ratios[i]``, grouped 3x3 with ``grouped_conv_size``
    channels per group), the first applied to the last map of ``in_channels``. Keys
    ``neck_blocks.i.conv.*``."""

    def __init__(
        self,
        in_channels: int | Sequence[int],
        out_channels: Sequence[int],
        expand_ratios: Sequence[float],
        grouped_conv_size: int = 1,
    ):
        if len(expand_ratios) != len(out_channels):
            raise ValueError("SSDInvertedResidualNeck: expand_ratios needs one entry per block")
        blocks, prev = [], _last(in_channels)
        for c, t in zip(out_channels, expand_ratios, strict=True):
            blocks.append(
                InvertedResidual(prev, c, stride=2, expand_ratio=t, grouped_conv_size=grouped_conv_size)
            )
            prev = c
        super().__init__(in_channels, blocks, out_channels)


class SSDBottleneckNeck(_SSDNeck):
    """super-gradients' ``SSDBottleneckNeck``: per block, 1x1 conv to ``bottleneck_channels[i]`` +
    BN + ReLU, then a ``kernel_sizes[i]`` conv with ``strides[i]`` (padding 1 when the stride is 2,
    else 0) to ``out_channels[i]`` + BN + ReLU; convs without bias. Keys ``neck_blocks.i.{0,1,3,4}``."""

    def __init__(
        self,
        in_channels: int | Sequence[int],
        out_channels: Sequence[int],
        bottleneck_channels: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
    ):
        n = len(out_channels)
        if not len(bottleneck_channels) == len(kernel_sizes) == len(strides) == n:
            raise ValueError(
                "SSDBottleneckNeck: bottleneck_channels, kernel_sizes and strides need one entry per block"
            )
        blocks, prev = [], _last(in_channels)
        for c, mid, k, s in zip(out_channels, bottleneck_channels, kernel_sizes, strides, strict=True):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(prev, mid, kernel_size=1, bias=False),
                    nn.BatchNorm2d(mid),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(mid, c, kernel_size=k, stride=s, padding=1 if s == 2 else 0, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                )
            )
            prev = c
        super().__init__(in_channels, blocks, out_channels)
