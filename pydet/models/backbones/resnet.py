"""ResNet-50 (bottleneck ResNet v1.5: the stride sits on the 3x3 conv) in torchvision's layout.

Keys: ``conv1`` (7x7/2), ``bn1``, then ``layer1..layer4`` of :class:`Bottleneck` blocks (``conv1``
1x1, ``conv2`` 3x3 with the stride, ``conv3`` 1x1 to ``4 * planes``, ``bn1..3``, ``downsample.0``
conv + ``downsample.1`` norm on each stage's first block), and ``fc`` when ``num_classes`` is set.
``relu``, ``maxpool`` and ``avgpool`` hold no state. Output strides: layer1 4 (256 ch), layer2 8
(512), layer3 16 (1024), layer4 32 (2048).

As a detection backbone (``num_classes=None``) the norm defaults to :class:`FrozenBatchNorm2d`
(ImageNet statistics kept fixed, the detectron2/torchvision convention for small batches) and
``forward`` returns an ``OrderedDict`` of the requested stage outputs, like torchvision's
``IntermediateLayerGetter``; ``trainable_layers`` freezes the early stages like torchvision's
``_resnet_fpn_extractor``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pydet.layers import FrozenBatchNorm2d

NormLayer = Callable[[int], nn.Module]

# Stages in the order torchvision's _resnet_fpn_extractor unfreezes them (deepest first).
_TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


class Bottleneck(nn.Module):
    """1x1 (``planes``) -> 3x3 (``planes``, ``stride``) -> 1x1 (``4 * planes``), each with a norm,
    ReLU after the first two and after the residual sum. ``downsample`` maps the input to the
    output's shape when the stride or the channel count changes."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = FrozenBatchNorm2d,
    ):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def freeze_layers(model: nn.Module, trainable_layers: int) -> None:
    """torchvision's ``_resnet_fpn_extractor`` freezing: only the last ``trainable_layers`` (0..5)
    of ``layer4, layer3, layer2, layer1, conv1`` keep ``requires_grad``; ``bn1`` trains only with
    all 5. The classifier ``fc`` is left alone (torchvision drops it before freezing)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
    trainable = list(_TRAINABLE_ORDER[:trainable_layers])
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, parameter in model.named_parameters():
        if not name.startswith("fc.") and not any(name.startswith(layer) for layer in trainable):
            parameter.requires_grad_(False)


class ResNet(nn.Module):
    """Bottleneck ResNet in torchvision's layout (see the module doc); ``layers`` blocks per stage.

    ``num_classes``: adds ``avgpool`` + ``fc`` and ``forward`` returns logits [N, num_classes];
    None (a backbone) has neither. ``return_layers`` (``{"layer2": "0", ...}``, names among
    ``conv1, bn1, relu, maxpool, layer1..layer4``) or ``out_indices`` (stage numbers, ``(2, 3, 4)``
    is ``{"layer2": "0", "layer3": "1", "layer4": "2"}``) make ``forward`` return an OrderedDict of
    those outputs in network order; as in ``IntermediateLayerGetter``, the stages after the last
    returned one are dropped (so a ``(1, 2, 3)`` backbone has no ``layer4`` keys). Without either,
    a backbone returns the layer4 map. ``trainable_layers`` (0..5, default all): see
    :func:`freeze_layers`.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int | None = None,
        norm_layer: NormLayer = FrozenBatchNorm2d,
        return_layers: dict[str, str] | None = None,
        out_indices: Sequence[int] | None = None,
        trainable_layers: int = 5,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if return_layers is not None and out_indices is not None:
            raise ValueError("ResNet: give return_layers or out_indices, not both")
        if out_indices is not None:
            if not all(1 <= i <= 4 for i in out_indices):
                raise ValueError(f"ResNet: out_indices must be stage numbers in [1, 4], got {out_indices}")
            return_layers = {f"layer{i}": str(k) for k, i in enumerate(out_indices)}
        if return_layers is not None and num_classes is not None:
            raise ValueError("ResNet: return_layers/out_indices need num_classes=None")

        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for i, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            stage = self._make_stage(in_channels, planes, blocks, 1 if i == 0 else 2, norm_layer)
            self.add_module(f"layer{i + 1}", stage)
            in_channels = planes * Bottleneck.expansion
        self._classify = num_classes is not None
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights(zero_init_residual)

        self.return_layers = None if return_layers is None else dict(return_layers)
        if self.return_layers is not None:
            names = [name for name, _ in self.named_children()]
            unknown = set(self.return_layers) - set(names)
            if unknown:
                raise ValueError(f"ResNet: return_layers {sorted(unknown)} are not among {names}")
            last = max(names.index(name) for name in self.return_layers)
            for name in names[last + 1 :]:
                delattr(self, name)
        freeze_layers(self, trainable_layers)

    @staticmethod
    def _make_stage(in_channels: int, planes: int, blocks: int, stride: int, norm_layer) -> nn.Sequential:
        out_channels = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                norm_layer(out_channels),
            )
        stage = [Bottleneck(in_channels, planes, stride, downsample, norm_layer)]
        stage += [Bottleneck(out_channels, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each block then starts as the identity, which helps large-batch training (Goyal et al.).
            for m in self.modules():
                if isinstance(m, Bottleneck) and getattr(m.bn3, "weight", None) is not None:
                    nn.init.zeros_(m.bn3.weight)

    def forward(self, x: Tensor) -> Tensor | OrderedDict[str, Tensor]:
        if self.return_layers is None:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            if self._classify:
                x = self.fc(torch.flatten(self.avgpool(x), 1))
            return x
        out: OrderedDict[str, Tensor] = OrderedDict()
        # The children are registered in execution order and the unused tail was dropped.
        for name, module in self.named_children():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def resnet50(norm_layer: NormLayer = FrozenBatchNorm2d, num_classes: int | None = None, **kwargs) -> ResNet:
    """ResNet-50 (3, 4, 6, 3 blocks); ``kwargs`` go to :class:`ResNet` (``return_layers``,
    ``out_indices``, ``trainable_layers``, ``zero_init_residual``). ``torchvision.models.resnet50()``
    is ``resnet50(nn.BatchNorm2d, num_classes=1000)``."""
    return ResNet((3, 4, 6, 3), num_classes=num_classes, norm_layer=norm_layer, **kwargs)
