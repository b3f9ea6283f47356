"""Path Aggregation Network neck (PANet, Liu et al. 2018; mmdet's ``PAFPN`` layout).

Inputs: one NCHW map per level, highest resolution first (e.g. C3, C4, C5), with
``in_channels_list`` channels; each level is half the size of the previous one (ceil). Outputs: one
``out_channels`` map per level, same sizes. Two passes:

1. top-down (FPN): ``lat_i = lateral_convs[i](C_i)``, ``lat_i += nearest_upsample(lat_{i+1})``
   from the coarsest level down, then ``P_i = fpn_convs[i](lat_i)`` (3x3);
2. bottom-up: ``M_0 = P_0``, ``M_i = P_i + downsample_convs[i-1](M_{i-1})`` (3x3 stride-2 convs),
   outputs ``N_0 = M_0`` and ``N_i = pafpn_convs[i-1](M_i)``, so the finest level's localisation
   detail reaches the coarse levels through a short path. (As in mmdet, the downsampling reads the
   aggregated ``M``, not the previous output ``N``, so mmdet PAFPN weights compute the same.)

Keys (mmcv :class:`ConvModule`): ``lateral_convs.i.conv``, ``fpn_convs.i.conv``,
``downsample_convs.i.conv``, ``pafpn_convs.i.conv`` (plus ``.bn``/``.gn`` with a norm). Convs are
xavier-uniform initialised with zero biases (mmdet's default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pydet.layers import ConvModule


class PANNeck(nn.Module):
    """PAFPN over ``len(in_channels_list)`` levels to ``out_channels`` each (see the module doc).
    ``norm_cfg``/``act_cfg`` configure every conv (mmcv style, e.g. ``dict(type="BN")``,
    ``dict(type="ReLU")``); both None (the default) gives plain biased convs, as mmdet's PAFPN.
    ``forward`` takes a list (or dict) of maps and returns a list."""

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
    ):
        super().__init__()
        if len(in_channels_list) < 2:
            raise ValueError(f"PANNeck: needs at least 2 levels, got {list(in_channels_list)}")
        n = len(in_channels_list)

        def conv(cin: int, k: int, stride: int = 1) -> ConvModule:
            return ConvModule(cin, out_channels, k, stride, (k - 1) // 2, norm_cfg=norm_cfg, act_cfg=act_cfg)

        self.lateral_convs = nn.ModuleList(conv(c, 1) for c in in_channels_list)
        self.fpn_convs = nn.ModuleList(conv(out_channels, 3) for _ in range(n))
        self.downsample_convs = nn.ModuleList(conv(out_channels, 3, 2) for _ in range(n - 1))
        self.pafpn_convs = nn.ModuleList(conv(out_channels, 3) for _ in range(n - 1))
        self.out_channels = [out_channels] * n
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[Tensor] | Mapping[str, Tensor]) -> list[Tensor]:
        maps = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
        if len(maps) != len(self.lateral_convs):
            raise ValueError(f"PANNeck: expected {len(self.lateral_convs)} maps, got {len(maps)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, maps, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            # Size-exact upsampling: odd-sized levels (25 -> 13) are not a plain x2.
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        merged = [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]
        for i in range(1, len(merged)):
            merged[i] = merged[i] + self.downsample_convs[i - 1](merged[i - 1])
        return [merged[0]] + [conv(x) for conv, x in zip(self.pafpn_convs, merged[1:], strict=True)]
