"""Separable-convolution blocks of MobileNet/SSDLite detectors, on the fused depthwise kernel.

State-dict layouts follow the libraries they mirror, so their checkpoints load:

- :class:`SeparableConv2d` (super-gradients ``SeperableConv2d``): ``0`` depthwise conv, ``1``
  BatchNorm2d, ``2`` ReLU, ``3`` pointwise conv.
- :class:`ConvModule` / :class:`DepthwiseSeparableConv` (mmcv ``ConvModule`` /
  ``DepthwiseSeparableConvModule``): ``conv``, ``bn`` or ``gn``, ``activate``;
  ``depthwise_conv.*`` and ``pointwise_conv.*``.
- :class:`Conv2dNormActivation` and :class:`InvertedResidual` (torchvision ``mobilenet_v2``):
  ``0`` conv, ``1`` norm, ``2`` activation; ``conv.0.0.weight`` ... ``conv.2.weight``,
  ``conv.3.*``. The flat layout of super-gradients' and the original MobileNetV2 code
  (``conv.0.weight`` ... ``conv.7.*``) is remapped on load.

In eval mode each depthwise conv -> BatchNorm -> activation runs as one kernel with the BatchNorm
folded in on the fly (:func:`pydet.layers.conv_norm_act`); ``fuse()`` folds it once for inference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pydet.layers.depthwise import DepthwiseConv2d, conv_norm_act, fold_batchnorm, fusable
from pydet.layers.norm import get_norm


def _fuse_triple(conv: nn.Module, norm: nn.Module | None, act: nn.Module | None) -> bool:
    """Folds ``norm`` and ``act`` into the depthwise ``conv`` in place; True if it did."""
    name = fusable(conv, norm, act)
    if name is None:
        return False
    with torch.no_grad():
        if norm is not None and not isinstance(norm, nn.Identity):
            weight, bias = fold_batchnorm(conv.weight, conv.bias, norm)
            conv.weight.copy_(weight)
            if conv.bias is None:
                conv.bias = nn.Parameter(bias)
            else:
                conv.bias.copy_(bias)
    conv.activation = name
    return True


class SeparableConv2d(nn.Sequential):
    """super-gradients' ``SeperableConv2d``: depthwise conv (``kernel_size``, ``stride``, ``padding``,
    ``bias``) -> BatchNorm2d -> ReLU -> 1x1 pointwise conv to ``out_channels`` (with bias)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__(
            DepthwiseConv2d(in_channels, kernel_size, stride, padding, bias=bias),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self[3](conv_norm_act(self[0], self[1], self[2], x))

    def fuse(self) -> SeparableConv2d:
        """Folds the (eval-mode) BatchNorm and the ReLU into the depthwise kernel, in place: the same
        outputs up to rounding, one pass less. Returns self."""
        if _fuse_triple(self[0], self[1], self[2]):
            self[1] = nn.Identity()
            self[2] = nn.Identity()
        return self


def _build_norm(norm_cfg: dict | None, channels: int) -> tuple[str, nn.Module] | None:
    if norm_cfg is None:
        return None
    cfg = dict(norm_cfg)
    kind = cfg.pop("type")
    if kind == "GN":
        return "gn", nn.GroupNorm(cfg.pop("num_groups"), channels, **cfg)
    if kind not in ("BN", "BN2d", "SyncBN", "FrozenBN"):
        raise ValueError(
            f"ConvModule: norm_cfg type must be 'BN', 'SyncBN', 'FrozenBN' or 'GN', got {kind!r}"
        )
    norm = get_norm("BN" if kind == "BN2d" else kind, channels)
    for key, value in cfg.items():
        setattr(norm, key, value)
    return "bn", norm


_ACTS = {
    "ReLU": nn.ReLU,
    "ReLU6": nn.ReLU6,
    "SiLU": nn.SiLU,
    "Swish": nn.SiLU,
    "HSwish": nn.Hardswish,
    "Hardswish": nn.Hardswish,
    "LeakyReLU": nn.LeakyReLU,
    "Sigmoid": nn.Sigmoid,
}


def _build_act(act_cfg: dict | None) -> nn.Module | None:
    if act_cfg is None:
        return None
    cfg = dict(act_cfg)
    kind = cfg.pop("type")
    cfg.pop("inplace", None)
    if kind not in _ACTS:
        raise ValueError(
            f"ConvModule: act_cfg type must be one of {', '.join(map(repr, _ACTS))}, got {kind!r}"
        )
    return _ACTS[kind](**cfg)


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` (order conv -> norm -> act): ``norm_cfg`` like ``dict(type='BN')`` or
    ``dict(type='GN', num_groups=32)``, ``act_cfg`` like ``dict(type='ReLU')`` (the default) or None;
    ``bias='auto'`` means a bias only without norm. A depthwise configuration (``groups ==
    in_channels == out_channels``) runs on the fused kernel."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool | str = "auto",
        norm_cfg: dict | None = None,
        act_cfg: dict | str | None = "default",
    ):
        super().__init__()
        act_cfg = {"type": "ReLU"} if act_cfg == "default" else act_cfg
        with_bias = norm_cfg is None if bias == "auto" else bool(bias)
        if groups == in_channels == out_channels:
            self.conv = DepthwiseConv2d(in_channels, kernel_size, stride, padding, dilation, with_bias)
        else:
            self.conv = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, dilation, groups, with_bias
            )
        built = _build_norm(norm_cfg, out_channels)
        self.norm_name = built[0] if built else None
        if built:
            self.add_module(*built)
        self.activate = _build_act(act_cfg)

    @property
    def norm(self) -> nn.Module | None:
        return getattr(self, self.norm_name) if self.norm_name else None

    def forward(self, x: Tensor) -> Tensor:
        return conv_norm_act(self.conv, self.norm, self.activate, x)


class DepthwiseSeparableConv(nn.Module):
    """mmcv's ``DepthwiseSeparableConvModule``: a depthwise :class:`ConvModule` then a 1x1 one.
    ``norm_cfg``/``act_cfg`` apply to both unless ``dw_*``/``pw_*`` override them (``'default'``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        norm_cfg: dict | None = None,
        act_cfg: dict | str | None = "default",
        dw_norm_cfg: dict | str | None = "default",
        dw_act_cfg: dict | str | None = "default",
        pw_norm_cfg: dict | str | None = "default",
        pw_act_cfg: dict | str | None = "default",
    ):
        super().__init__()

        def pick(value, default):
            return default if value == "default" else value

        self.depthwise_conv = ConvModule(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups=in_channels,
            norm_cfg=pick(dw_norm_cfg, norm_cfg),
            act_cfg=pick(dw_act_cfg, act_cfg),
        )
        self.pointwise_conv = ConvModule(
            in_channels,
            out_channels,
            1,
            norm_cfg=pick(pw_norm_cfg, norm_cfg),
            act_cfg=pick(pw_act_cfg, act_cfg),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class Conv2dNormActivation(nn.Sequential):
    """torchvision's ``Conv2dNormActivation`` (``0`` conv, ``1`` BatchNorm2d, ``2`` activation; ReLU6
    by default, padding ``(kernel_size - 1) // 2 * dilation``). A depthwise one (``groups ==
    in_channels == out_channels``) runs on the fused kernel."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer=nn.BatchNorm2d,
        activation_layer=nn.ReLU6,
        dilation: int = 1,
    ):
        padding = (kernel_size - 1) // 2 * dilation
        bias = norm_layer is None
        if groups == in_channels == out_channels:
            conv = DepthwiseConv2d(in_channels, kernel_size, stride, padding, dilation, bias)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        layers = [conv]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer())
        super().__init__(*layers)
        self.out_channels = out_channels
        self._has_norm, self._has_act = norm_layer is not None, activation_layer is not None

    def forward(self, x: Tensor) -> Tensor:
        norm = self[1] if self._has_norm else None
        act = self[-1] if self._has_act else None
        return conv_norm_act(self[0], norm, act, x)


class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual (torchvision layout; super-gradients' and mmdet's block):
    1x1 expansion to ``round(in_channels * expand_ratio)`` channels (omitted when ``expand_ratio ==
    1``) -> 3x3 depthwise (``stride``) -> 1x1 linear projection, each with BatchNorm, ReLU6 after the
    first two, and a residual connection when ``stride == 1`` and ``in_channels == out_channels``.
    ``grouped_conv_size > 1`` makes the 3x3 a grouped conv with that many channels per group
    (super-gradients), computed by ATen."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        grouped_conv_size: int = 1,
        norm_layer=nn.BatchNorm2d,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio)
        if hidden % grouped_conv_size:
            raise ValueError(
                f"InvertedResidual: grouped_conv_size ({grouped_conv_size}) must divide the hidden channels ({hidden})"
            )
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(in_channels, hidden, 1, norm_layer=norm_layer))
        layers += [
            Conv2dNormActivation(
                hidden, hidden, 3, stride, groups=hidden // grouped_conv_size, norm_layer=norm_layer
            ),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            norm_layer(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels
        self._expand = expand_ratio != 1

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return x + y if self.use_res_connect else y

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Flat layout (conv.0 conv, conv.1 bn, conv.2 relu6, conv.3 conv, ...) -> torchvision's nested one.
        flat = prefix + "conv.0.weight"
        if flat in state_dict and state_dict[flat].dim() == 4:
            mapping = (
                {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
                if self._expand
                else {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
            )
            for key in [k for k in state_dict if k.startswith(prefix + "conv.")]:
                index, _, rest = key[len(prefix) + 5 :].partition(".")
                if index in mapping:
                    state_dict[f"{prefix}conv.{mapping[index]}.{rest}"] = state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
