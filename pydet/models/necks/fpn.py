"""Feature Pyramid Network (Lin et al. 2017) in torchvision's layout, and the ResNet-50-FPN backbone
of torchvision's ``retinanet_resnet50_fpn``.

:class:`FeaturePyramidNetwork` keys: ``inner_blocks.i.0`` (1x1 lateral conv of input level ``i``)
and ``layer_blocks.i.0`` (3x3 output conv), with ``.1`` the norm when ``norm_layer`` is given (and
then no conv bias), plus ``extra_blocks.*``. Inputs are ordered from the highest resolution (C3)
to the lowest (C5); the output has one ``out_channels`` map per input (same names, same sizes)
followed by the extra levels: :class:`LastLevelP6P7` adds ``"p6"``, ``"p7"`` (strides x2, x4 of
the last level), :class:`LastLevelMaxPool` adds ``"pool"``.

:class:`BackboneWithFPN` keys: ``body.*`` (the backbone, returning an OrderedDict of levels) and
``fpn.*``; :func:`resnet50_fpn_backbone` reproduces ``retinanet_resnet50_fpn().backbone``
key for key. For an 800x800 input its levels "0", "1", "2", "p6", "p7" have strides 8..128
(100, 50, 25, 13, 7).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pydet.layers import Conv2dNormActivation, FrozenBatchNorm2d
from pydet.models.backbones.resnet import ResNet

Features = Mapping[str, Tensor] | Sequence[Tensor]


def _as_named(x: Features) -> tuple[list[str], list[Tensor]]:
    """(names, maps) of a dict of levels, or of a list (named "0", "1", ...)."""
    if isinstance(x, Mapping):
        return list(x.keys()), list(x.values())
    return [str(i) for i in range(len(x))], list(x)


class ExtraFPNBlock(nn.Module):
    """Base of the blocks adding levels after the FPN: ``forward(results, inputs, names)`` gets the
    FPN outputs, the FPN inputs and the names, and returns the extended ``(results, names)``."""

    def forward(
        self, results: list[Tensor], inputs: list[Tensor], names: list[str]
    ) -> tuple[list[Tensor], list[str]]:
        raise NotImplementedError


class LastLevelMaxPool(ExtraFPNBlock):
    """Adds ``"pool"``: the last FPN level subsampled by 2 (1x1 max pool, stride 2; Faster R-CNN's P6)."""

    def forward(self, results, inputs, names):
        return [*results, F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0)], [*names, "pool"]


class LastLevelP6P7(ExtraFPNBlock):
    """RetinaNet's P6 and P7 (keys ``p6``, ``p7``): 3x3 stride-2 convs, ``p7 = conv(relu(p6))``.
    P6 is computed from P5 when ``in_channels == out_channels`` (torchvision's RetinaNet), else from
    C5 (the paper). kaiming-uniform (a=1) weights, zero biases."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.use_p5 = in_channels == out_channels

    def forward(self, results, inputs, names):
        p6 = self.p6(results[-1] if self.use_p5 else inputs[-1])
        p7 = self.p7(F.relu(p6))
        return [*results, p6, p7], [*names, "p6", "p7"]


class FeaturePyramidNetwork(nn.Module):
    """FPN over ``len(in_channels_list)`` levels (torchvision's ``FeaturePyramidNetwork``; layout in
    the module doc). Top-down: ``inner_i = lateral_i(C_i) + nearest_upsample(inner_{i+1})`` to
    ``C_i``'s size, ``P_i = layer_i(inner_i)``. ``forward`` takes an OrderedDict (or a list) of NCHW
    maps from highest to lowest resolution and returns an OrderedDict (input names, then the extra
    blocks' names). Convs: kaiming-uniform (a=1) weights, zero biases."""

    _version = 2  # version 1 (torchvision < 0.13) had the convs at inner_blocks.i, not inner_blocks.i.0

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        if not in_channels_list or any(c <= 0 for c in in_channels_list):
            raise ValueError(
                f"FeaturePyramidNetwork: in_channels_list must be positive, got {in_channels_list}"
            )
        if extra_blocks is not None and not isinstance(extra_blocks, ExtraFPNBlock):
            raise TypeError(f"extra_blocks must be an ExtraFPNBlock, got {type(extra_blocks).__name__}")
        self.inner_blocks = nn.ModuleList(
            Conv2dNormActivation(c, out_channels, 1, norm_layer=norm_layer, activation_layer=None)
            for c in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            Conv2dNormActivation(out_channels, out_channels, 3, norm_layer=norm_layer, activation_layer=None)
            for _ in in_channels_list
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.extra_blocks = extra_blocks
        self.out_channels = out_channels

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        if local_metadata.get("version", 1) < 2:
            for block in ("inner_blocks", "layer_blocks"):
                for i in range(len(self.inner_blocks)):
                    for param in ("weight", "bias"):
                        old = f"{prefix}{block}.{i}.{param}"
                        if old in state_dict:
                            state_dict[f"{prefix}{block}.{i}.0.{param}"] = state_dict.pop(old)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Features) -> OrderedDict[str, Tensor]:
        names, maps = _as_named(x)
        if len(maps) != len(self.inner_blocks):
            raise ValueError(
                f"FeaturePyramidNetwork: expected {len(self.inner_blocks)} maps, got {len(maps)}"
            )
        last_inner = self.inner_blocks[-1](maps[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(maps) - 2, -1, -1):
            lateral = self.inner_blocks[idx](maps[idx])
            # Upsample to the lateral's exact size: an odd-sized level (25 -> 13) is not a plain x2.
            last_inner = lateral + F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer_blocks[idx](last_inner))
        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, maps, names)
        return OrderedDict(zip(names, results, strict=True))


class BackboneWithFPN(nn.Module):
    """``fpn(body(x))``: ``body`` returns its levels (OrderedDict or list, highest resolution first)
    with ``in_channels_list`` channels; the result is the FPN's OrderedDict. Keys ``body.*`` and
    ``fpn.*`` (torchvision's ``BackboneWithFPN``); ``out_channels`` is the FPN width."""

    def __init__(
        self,
        body: nn.Module,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_blocks: ExtraFPNBlock | None = None,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks, norm_layer)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


_RETINANET_EXTRA = object()  # default marker: a fresh LastLevelP6P7(256, 256) per call


def resnet50_fpn_backbone(
    trainable_layers: int = 3,
    returned_layers: Sequence[int] = (2, 3, 4),
    extra_blocks: ExtraFPNBlock | None = _RETINANET_EXTRA,  # type: ignore[assignment]
    norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d,
    out_channels: int = 256,
) -> BackboneWithFPN:
    """torchvision's ``retinanet_resnet50_fpn`` backbone: a ResNet-50 body returning the
    ``returned_layers`` stages as "0", "1", ... (trailing stages dropped), frozen but for the last
    ``trainable_layers`` (see :func:`pydet.models.backbones.resnet.freeze_layers`), under an FPN with
    ``out_channels`` (256) channels. ``extra_blocks`` defaults to RetinaNet's
    ``LastLevelP6P7(256, 256)`` (P6/P7 from P5); pass None for no extra levels. torchvision builds
    the untrained model with ``nn.BatchNorm2d`` and all layers trainable
    (``norm_layer=nn.BatchNorm2d, trainable_layers=5`` here); a pretrained one as the defaults."""
    if extra_blocks is _RETINANET_EXTRA:
        extra_blocks = LastLevelP6P7(256, 256)
    if not returned_layers or not all(1 <= i <= 4 for i in returned_layers):
        raise ValueError(f"returned_layers must be stage numbers in [1, 4], got {returned_layers}")
    body = ResNet(
        (3, 4, 6, 3), norm_layer=norm_layer, out_indices=returned_layers, trainable_layers=trainable_layers
    )
    # Stage i (1..4) outputs 256 * 2**(i - 1) channels.
    in_channels_list = [256 * 2 ** (i - 1) for i in returned_layers]
    return BackboneWithFPN(body, in_channels_list, out_channels, extra_blocks)
