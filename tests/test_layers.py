"""pydet.layers: the separable-convolution blocks give the outputs of the plain PyTorch modules they
replace (train and eval, loaded from those modules' state dicts), fuse() changes nothing but
rounding, and the detectron2-style layers follow detectron2's conventions."""

import pytest
import torch
from torch import nn

from pydet import layers


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def _same_in_both_modes(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    ours.load_state_dict(ref.state_dict(), strict=True)
    for train in (False, True):
        ours.train(train)
        ref.train(train)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-10)


def test_separable_conv2d_is_super_gradients_block():
    ref = nn.Sequential(
        nn.Conv2d(6, 6, 3, 2, 1, groups=6), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 10, 1)
    ).double()
    _randomise_bn(ref)
    ours = layers.SeparableConv2d(6, 10, kernel_size=3, stride=2, padding=1).double()
    assert list(ours.state_dict()) == list(ref.state_dict())
    _same_in_both_modes(ours, ref, torch.randn(2, 6, 11, 13, dtype=torch.float64))


def test_fuse_keeps_outputs():
    block = layers.SeparableConv2d(5, 7, kernel_size=3, padding=1, bias=False).double()
    _randomise_bn(block)
    block.eval()
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64)
    want = block(x)
    block.fuse()
    assert isinstance(block[1], nn.Identity) and block[0].activation == "relu"
    torch.testing.assert_close(block(x), want, rtol=1e-12, atol=1e-12)


def _torchvision_inverted_residual(inp, oup, stride, expand_ratio):
    """torchvision.models.mobilenetv2.InvertedResidual, written out with plain modules."""
    hidden = round(inp * expand_ratio)

    def cbr(i, o, k, s, groups):
        return nn.Sequential(
            nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(o), nn.ReLU6()
        )

    mods = [cbr(inp, hidden, 1, 1, 1)] if expand_ratio != 1 else []
    mods += [
        cbr(hidden, hidden, 3, stride, hidden),
        nn.Conv2d(hidden, oup, 1, bias=False),
        nn.BatchNorm2d(oup),
    ]
    return nn.Sequential(*mods)


@pytest.mark.parametrize("inp, oup, stride, expand", [(8, 8, 1, 6), (8, 12, 2, 6), (16, 16, 1, 1)])
def test_inverted_residual_matches_torchvision_layout(inp, oup, stride, expand):
    conv = _torchvision_inverted_residual(inp, oup, stride, expand).double()
    _randomise_bn(conv)
    ref = nn.Module()
    ref.conv = conv
    ours = layers.InvertedResidual(inp, oup, stride, expand).double()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, inp, 10, 10, dtype=torch.float64)
    for train in (False, True):
        ours.train(train)
        conv.train(train)
        y = conv(x)
        torch.testing.assert_close(
            ours(x), x + y if stride == 1 and inp == oup else y, rtol=1e-10, atol=1e-10
        )


@pytest.mark.parametrize("expand", [6, 1])
def test_inverted_residual_loads_the_flat_layout(expand):
    nested = layers.InvertedResidual(8, 8, 1, expand)
    _randomise_bn(nested)
    flat_index = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
    if expand == 1:
        flat_index = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
    flat = {}
    for key, value in nested.state_dict().items():
        body = key[len("conv.") :]
        head = next(p for p in sorted(flat_index, key=len, reverse=True) if body.startswith(p + "."))
        flat["conv." + flat_index[head] + body[len(head) :]] = value
    fresh = layers.InvertedResidual(8, 8, 1, expand)
    fresh.load_state_dict(flat, strict=True)
    for a, b in zip(fresh.state_dict().values(), nested.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_grouped_inverted_residual_uses_aten():
    block = layers.InvertedResidual(8, 8, 1, 2, grouped_conv_size=4)
    dw = block.conv[1][0]
    assert type(dw) is nn.Conv2d and dw.groups == 4
    assert block(torch.randn(1, 8, 6, 6)).shape == (1, 8, 6, 6)


def test_depthwise_separable_conv_is_mmcv_layout():
    block = layers.DepthwiseSeparableConv(4, 6, 3, padding=1, norm_cfg={"type": "BN"}).double()
    assert set(block.state_dict()) >= {
        "depthwise_conv.conv.weight",
        "depthwise_conv.bn.running_mean",
        "pointwise_conv.conv.weight",
        "pointwise_conv.bn.weight",
    }
    assert block.depthwise_conv.conv.bias is None  # bias='auto': none with a norm
    _randomise_bn(block)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    dw, pw = block.depthwise_conv, block.pointwise_conv
    for train in (False, True):
        block.train(train)
        want = pw.activate(
            pw.bn(pw.conv(dw.activate(dw.bn(nn.functional.conv2d(x, dw.conv.weight, None, 1, 1, 1, 4)))))
        )
        torch.testing.assert_close(block(x), want, rtol=1e-10, atol=1e-10)


def test_gn_and_no_activation_configs():
    m = layers.ConvModule(
        8, 8, 3, padding=1, groups=8, norm_cfg={"type": "GN", "num_groups": 4}, act_cfg=None
    )
    assert isinstance(m.gn, nn.GroupNorm) and m.activate is None
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(m(x), m.gn(m.conv(x)))


def test_depthwise_conv2d_falls_back_for_aten_only_options():
    for kwargs in ({"padding": "same"}, {"padding": 1, "padding_mode": "reflect"}):
        conv = layers.DepthwiseConv2d(3, 3, activation="relu6", **kwargs)
        assert not conv.uses_kernel
        x = torch.randn(1, 3, 8, 8)
        want = nn.functional.relu6(nn.Conv2d.forward(conv, x))
        torch.testing.assert_close(conv(x), want)
    with pytest.raises(ValueError, match="activation must be one of"):
        layers.DepthwiseConv2d(3, activation="gelu")


def test_compile_fullgraph_of_a_block():
    block = layers.InvertedResidual(8, 8, 1, 4).eval()
    x = torch.randn(2, 8, 12, 12)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), block(x))


# ---- detectron2-style layers ----------------------------------------------------------------------
def test_frozen_batchnorm_matches_eval_batchnorm_and_converts():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).double()
    _randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    want = model(x)
    frozen = layers.convert_frozen_batchnorm(model)
    assert isinstance(frozen[1], layers.FrozenBatchNorm2d)
    torch.testing.assert_close(frozen(x), want)
    # BatchNorm2d checkpoints (with num_batches_tracked) load into FrozenBatchNorm2d
    layers.FrozenBatchNorm2d(4).load_state_dict(nn.BatchNorm2d(4).state_dict(), strict=True)


def test_frozen_batchnorm_folds_into_the_depthwise_kernel():
    block = layers.Conv2dNormActivation(6, 6, 3, groups=6, norm_layer=layers.FrozenBatchNorm2d).double()
    fbn = block[1]
    fbn.running_var.uniform_(0.5, 2)
    fbn.weight.normal_()
    x = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    want = nn.functional.relu6(fbn(nn.functional.conv2d(x, block[0].weight, None, 1, 1, 1, 6)))
    torch.testing.assert_close(block(x), want)


def test_get_norm():
    assert isinstance(layers.get_norm("BN", 8), nn.BatchNorm2d)
    assert isinstance(layers.get_norm("SyncBN", 8), nn.SyncBatchNorm)
    assert isinstance(layers.get_norm("FrozenBN", 8), layers.FrozenBatchNorm2d)
    gn = layers.get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
    assert layers.get_norm("", 8) is None and layers.get_norm(None, 8) is None
    assert isinstance(layers.get_norm(lambda c: nn.LayerNorm(c), 8), nn.LayerNorm)
    with pytest.raises(ValueError, match="norm must be one of"):
        layers.get_norm("XN", 8)


def test_detectron2_conv2d_norm_activation_and_empty_input():
    conv = layers.Conv2d(
        3, 32, 3, padding=1, bias=False, norm=layers.get_norm("GN", 32), activation=torch.relu
    )
    assert set(conv.state_dict()) == {"weight", "norm.weight", "norm.bias"}
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(
        conv(x), torch.relu(conv.norm(nn.functional.conv2d(x, conv.weight, None, 1, 1)))
    )
    assert conv(torch.randn(0, 3, 5, 5)).shape == (0, 32, 5, 5)
    sync = layers.Conv2d(3, 8, 1, norm=nn.SyncBatchNorm(8))
    with pytest.raises(ValueError, match="SyncBatchNorm does not support empty inputs"):
        sync(torch.randn(0, 3, 5, 5))


def test_shape_spec():
    s = layers.ShapeSpec(channels=256, stride=8)
    assert (s.channels, s.height, s.width, s.stride) == (256, None, None, 8)


def test_eval_fold_cache_follows_parameter_updates():
    block = layers.Conv2dNormActivation(4, 4, 3, groups=4).double().eval()
    _randomise_bn(block)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)

    def reference():
        bn = block[1]
        y = nn.functional.conv2d(x, block[0].weight, None, 1, 1, 1, 4)
        return nn.functional.relu6(
            nn.functional.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
        )

    with torch.no_grad():
        torch.testing.assert_close(block(x), reference())
        block[1].running_var.mul_(3.0)  # in place: the version counter moves
        block[0].weight.add_(0.5)
        torch.testing.assert_close(block(x), reference())
        block.load_state_dict(layers.Conv2dNormActivation(4, 4, 3, groups=4).double().state_dict())
        torch.testing.assert_close(block(x), reference())
