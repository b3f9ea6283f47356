"""VGG16 and the SSD300/SSD512 feature extractor built on it, in torchvision's state-dict layout.

:func:`vgg16_features` is ``torchvision.models.vgg16().features``: indices 0..30, each 3x3 conv
(padding 1) followed by an in-place ReLU, a 2x2 max pool after each of the five stages.

:class:`SSDFeatureExtractorVGG` has the keys of ``ssd300_vgg16().backbone``:

- ``features.0..22``: conv1_1 .. relu4_3, with pool3 (index 16) in ``ceil_mode`` so a 300x300 input
  gives the paper's 38x38 conv4_3 map;
- ``scale_weight`` [512]: the per-channel scale (init 20) of conv4_3's L2 normalisation;
- ``extra.0``: pool4 .. relu5_3 (``0..6``), then ``7`` = 3x3/stride-1 max pool (pool5), fc6 as a
  3x3 conv with dilation 6 (``7.1``), fc7 as a 1x1 conv (``7.3``), each followed by a ReLU;
- ``extra.1..4`` (SSD300) or ``extra.1..5`` (SSD512): 1x1 reduction + ReLU, 3x3 (or 4x4) conv + ReLU.

``forward(x)`` returns the list of maps, NCHW: 6 for SSD300 (38, 19, 10, 5, 3, 1 at 300x300),
7 for SSD512 (64, 32, 16, 8, 4, 2, 1 at 512x512).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torchvision's configuration "D"; "M" is a 2x2 max pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_POOL3, _POOL4 = 16, 23  # indices of pool3 and pool4 in vgg16_features()


def vgg16_features() -> nn.Sequential:
    """``torchvision.models.vgg16().features``: 31 modules, conv weights kaiming-normal (fan_out), biases 0."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


def _xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _extra_block(in_channels: int, mid: int, out: int, kernel_size: int, stride: int, padding: int):
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out, kernel_size=kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    )


class SSDFeatureExtractorVGG(nn.Module):
    """SSD's VGG16 feature extractor (torchvision ``SSDFeatureExtractorVGG`` keys; see the module doc).

    ``features``: a ``vgg16_features()``-layout Sequential to build on (e.g. holding ImageNet weights;
    its pool3 is switched to ``ceil_mode`` in place, as torchvision does); None builds a fresh one.
    ``highres=True`` gives SSD512: conv10_2 and conv11_2 become stride-2 3x3 convs (padding 1) and a
    conv12_2 block (4x4, padding 1) is added, as in the paper's SSD512 (torchvision's ``highres``
    has the same keys and shapes but keeps SSD300's unpadded conv10_2/conv11_2). The layers added
    on top of VGG16 (fc6, fc7, the extra blocks) are xavier-uniform initialised with zero biases.
    """

    def __init__(self, features: nn.Sequential | None = None, highres: bool = False):
        super().__init__()
        backbone = vgg16_features() if features is None else features
        pools = [i for i, m in enumerate(backbone) if isinstance(m, nn.MaxPool2d)]
        if len(backbone) != 31 or pools != [4, 9, _POOL3, _POOL4, 30]:
            raise ValueError("SSDFeatureExtractorVGG: features must have vgg16_features()'s layout")
        # ceil_mode keeps 75 -> 38 at 300x300 (floor would give 37), matching the paper's grids.
        backbone[_POOL3].ceil_mode = True
        self.scale_weight = nn.Parameter(torch.full((512,), 20.0))
        self.features = nn.Sequential(*backbone[:_POOL4])

        fc = nn.Sequential(
            # pool5 with stride 1 keeps conv5's resolution for the atrous fc6.
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),
            nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, kernel_size=1),
            nn.ReLU(inplace=True),
        )
        _xavier_init(fc)
        # SSD512 halves every extra level (3x3 stride 2, padding 1) down to 2x2, then 4x4 -> 1x1.
        last_stride, last_pad = (2, 1) if highres else (1, 0)
        extra = [
            _extra_block(1024, 256, 512, 3, 2, 1),  # conv8_2
            _extra_block(512, 128, 256, 3, 2, 1),  # conv9_2
            _extra_block(256, 128, 256, 3, last_stride, last_pad),  # conv10_2
            _extra_block(256, 128, 256, 3, last_stride, last_pad),  # conv11_2
        ]
        if highres:
            extra.append(_extra_block(256, 128, 256, 4, 1, 1))  # conv12_2
        for block in extra:
            _xavier_init(block)
        # extra.0 continues VGG16 (pool4 .. relu5_3, pool5 dropped) into fc6/fc7: conv5_3 keeps its
        # ImageNet weights, fc6/fc7 are the paper's convolutionalised classifier.
        self.extra = nn.ModuleList([nn.Sequential(*backbone[_POOL4:-1], fc), *extra])

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.features(x)
        # conv4_3's activations are much larger than the deeper maps'; L2-normalising each position
        # over channels and rescaling by a learnt per-channel factor balances them (ParseNet).
        outputs = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return outputs


def vgg16_to_ssd_backbone(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Maps a plain ``vgg16`` state dict (``features.N.weight/bias``) onto
    :class:`SSDFeatureExtractorVGG`'s keys: ``features.0..22`` stay, ``features.23..29`` (pool4 ..
    relu5_3) become ``extra.0.{N - 23}``. The classifier is dropped: fc6/fc7 keep their fresh
    initialisation, as in torchvision. Load the result with ``strict=False``."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if head != "features":
            continue
        index, _, param = rest.partition(".")
        n = int(index)
        if n < _POOL4:
            out[f"features.{n}.{param}"] = value
        elif n < 30:
            out[f"extra.0.{n - _POOL4}.{param}"] = value
    return out
