"""pydet.models.backbones and pydet.models.necks: torchvision's state-dict keys and shapes key for key
(from the recorded manifest), torchvision's outputs from torchvision's weights (when it imports),
feature-map shapes, layer freezing, and torch.compile(fullgraph=True) of the multi-output modules."""

import json
from pathlib import Path

import pytest
import torch
from helpers import import_torchvision
from torch import nn

from pydet.models.backbones import (
    MobileNetV1,
    MobileNetV2,
    MultiOutputBackbone,
    SSDFeatureExtractorVGG,
    resnet50,
    vgg16_to_ssd_backbone,
)
from pydet.models.necks import (
    FeaturePyramidNetwork,
    PANNeck,
    SSDBottleneckNeck,
    SSDInvertedResidualNeck,
    SSDLiteFeatureExtractorMobileNetV2,
    resnet50_fpn_backbone,
)

_MANIFEST = json.loads((Path(__file__).parent / "data" / "torchvision_state_dicts.json").read_text())[
    "models"
]


def _manifest(model: str, prefix: str = "") -> dict[str, list[int]]:
    return {k[len(prefix) :]: v for k, v in _MANIFEST[model].items() if k.startswith(prefix)}


def _shapes(module: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _grids(maps) -> list[int]:
    maps = maps.values() if isinstance(maps, dict) else maps
    return [m.shape[-1] for m in maps]


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so a norm in the wrong place or with the wrong key shows."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.fixture(scope="module")
def tv():
    torchvision = import_torchvision()
    if torchvision is None:
        pytest.skip("torchvision is not installed")
    return torchvision


def _assert_same_outputs(
    ours: nn.Module, ref: nn.Module, x: torch.Tensor, relative: float | None = None, **tol
):
    """Loads ``ref``'s weights (BN statistics randomised) into ``ours`` and compares eval outputs:
    ``assert_close`` with ``tol`` (default atol 1e-5), or, with ``relative``, a max error of at most
    ``relative`` times each map's largest magnitude (untrained deep nets reach values ~1e3)."""
    _randomise_bn(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    with torch.no_grad():
        got, want = ours(x), ref(x)
    if isinstance(want, dict):
        assert list(got) == list(want)
        got, want = list(got.values()), list(want.values())
    if relative is None:
        torch.testing.assert_close(got, want, **({"atol": 1e-5, "rtol": 1.3e-6} | tol))
        return
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert (g - w).abs().max() <= relative * w.abs().max()


# ---- state-dict layouts ------------------------------------------------------------------------


def test_ssd_vgg_keys_match_torchvision():
    assert _shapes(SSDFeatureExtractorVGG()) == _manifest("ssd300_vgg16", "backbone.")
    # SSD512 adds one block (conv12_2, 4x4) and keeps every other key.
    highres = _shapes(SSDFeatureExtractorVGG(highres=True))
    assert highres["extra.5.2.weight"] == [256, 128, 4, 4]
    assert {k: v for k, v in highres.items() if not k.startswith("extra.5.")} == _manifest(
        "ssd300_vgg16", "backbone."
    )


def test_resnet50_fpn_keys_match_torchvision():
    # Untrained torchvision RetinaNet uses BatchNorm2d (hence num_batches_tracked in the manifest).
    expected = _manifest("retinanet_resnet50_fpn", "backbone.")
    assert _shapes(resnet50_fpn_backbone(norm_layer=nn.BatchNorm2d, trainable_layers=5)) == expected
    # The detection default, FrozenBatchNorm2d, has the same keys but for the BN step counter.
    frozen = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    assert _shapes(resnet50_fpn_backbone()) == frozen


def test_classification_keys_match_torchvision():
    assert _shapes(MobileNetV2(num_classes=1000)) == _manifest("mobilenet_v2")
    assert _shapes(resnet50(nn.BatchNorm2d, num_classes=1000)) == _manifest("resnet50")


def test_vgg16_to_ssd_backbone_fills_every_vgg_conv():
    g = torch.Generator().manual_seed(0)
    # Random conv weights; the classifier (120M values, dropped by the conversion) is left uninitialised.
    plain = {
        k: torch.randn(v, generator=g) if k.startswith("features.") else torch.empty(v)
        for k, v in _manifest("vgg16").items()
    }
    converted = vgg16_to_ssd_backbone(plain)
    model = SSDFeatureExtractorVGG()
    result = model.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == []
    # Only what VGG16 has no counterpart for stays at its initialisation.
    assert all(
        k == "scale_weight" or k.startswith(("extra.0.7.", "extra.1.", "extra.2.", "extra.3.", "extra.4."))
        for k in result.missing_keys
    )
    state = model.state_dict()
    vgg_convs = [i for i in range(30) if plain.get(f"features.{i}.weight") is not None]
    assert len(vgg_convs) == 13
    for i in vgg_convs:
        ours = f"features.{i}" if i < 23 else f"extra.0.{i - 23}"
        for p in ("weight", "bias"):
            assert torch.equal(state[f"{ours}.{p}"], plain[f"features.{i}.{p}"]), (i, p)


# ---- same outputs as torchvision ---------------------------------------------------------------


@pytest.mark.torchvision
def test_ssd_vgg_matches_torchvision(tv):
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    ref = ssd300_vgg16(weights=None, weights_backbone=None).backbone
    ours = SSDFeatureExtractorVGG()
    x = torch.randn(1, 3, 300, 300)
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        got, want = ours.eval()(x), list(ref.eval()(x).values())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.torchvision
def test_resnet50_fpn_matches_torchvision(tv):
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.manual_seed(0)
    ref = retinanet_resnet50_fpn(weights=None, weights_backbone=None).backbone
    x = torch.randn(1, 3, 136, 136)  # levels 17, 9, 5, 3, 2: odd sizes exercise the upsampling
    _assert_same_outputs(resnet50_fpn_backbone(norm_layer=nn.BatchNorm2d, trainable_layers=5), ref, x)
    # The FrozenBatchNorm2d default loads the same checkpoint (num_batches_tracked dropped) and computes
    # the same eval-mode function, up to the rounding of its folded affine map.
    _assert_same_outputs(resnet50_fpn_backbone(), ref, x, relative=1e-5)


@pytest.mark.torchvision
def test_classifiers_match_torchvision(tv):
    from torchvision.models import mobilenet_v2
    from torchvision.models import resnet50 as tv_resnet50

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    _assert_same_outputs(resnet50(nn.BatchNorm2d, num_classes=1000), tv_resnet50(), x)
    # pydet's depthwise convs run its fused kernel (BatchNorm folded in): equal up to rounding.
    _assert_same_outputs(MobileNetV2(num_classes=1000), mobilenet_v2(), x, atol=1e-5, rtol=1e-4)


# ---- feature-map shapes ------------------------------------------------------------------------


@torch.no_grad()
def test_ssd_vgg_grids():
    out = SSDFeatureExtractorVGG().eval()(torch.randn(1, 3, 300, 300))
    assert _grids(out) == [38, 19, 10, 5, 3, 1]
    assert [m.shape[1] for m in out] == [512, 1024, 512, 256, 256, 256]
    ssd512 = SSDFeatureExtractorVGG(highres=True).eval()
    assert _grids(ssd512(torch.randn(1, 3, 512, 512))) == [64, 32, 16, 8, 4, 2, 1]


@torch.no_grad()
def test_fpn_levels_on_800():
    out = resnet50_fpn_backbone().eval()(torch.randn(1, 3, 800, 800))
    assert list(out) == ["0", "1", "2", "p6", "p7"]
    assert _grids(out) == [100, 50, 25, 13, 7]  # strides 8, 16, 32, 64, 128 (ceil)
    assert all(m.shape[1] == 256 for m in out.values())


@torch.no_grad()
def test_fpn_accepts_lists_and_max_pool_level():
    from pydet.models.necks import LastLevelMaxPool

    fpn = FeaturePyramidNetwork([8, 16], 4, extra_blocks=LastLevelMaxPool())
    out = fpn([torch.randn(1, 8, 9, 9), torch.randn(1, 16, 5, 5)])
    assert list(out) == ["0", "1", "pool"] and _grids(out) == [9, 5, 3]


@torch.no_grad()
def test_ssdlite_mobilenet_v2_grids_and_split():
    backbone = MobileNetV2().eval()
    _randomise_bn(backbone)
    model = SSDLiteFeatureExtractorMobileNetV2(backbone=backbone).eval()
    x = torch.randn(1, 3, 320, 320)
    out = model(x)
    assert _grids(out) == [20, 10, 5, 3, 2, 1]
    assert [m.shape[1] for m in out] == model.out_channels == [576, 1280, 512, 256, 256, 128]
    # Splitting block 14 after its expansion changes nothing: C4 is that expansion, C5 the backbone's map.
    c4_input = MultiOutputBackbone(backbone, ["features.13"])(x)[0]
    torch.testing.assert_close(out[0], backbone.features[14].conv[0](c4_input))
    torch.testing.assert_close(out[1], backbone(x))
    # Block 14's depthwise conv keeps its index inside the slice, as torchvision's SSDLite keys do.
    assert "features.1.0.1.0.weight" in model.state_dict()
    narrow = SSDLiteFeatureExtractorMobileNetV2(width_mult=0.5)
    assert narrow.out_channels == [288, 1280, 256, 128, 128, 64]


@torch.no_grad()
def test_mobilenet_out_indices():
    x = torch.randn(2, 3, 128, 128)
    v2 = MobileNetV2(out_indices=[6, 13, 18]).eval()
    assert [tuple(m.shape[1:]) for m in v2(x)] == [(32, 16, 16), (96, 8, 8), (1280, 4, 4)]
    assert v2.out_channels == [32, 96, 1280]
    v1 = MobileNetV1(out_indices=[5, 11, 13]).eval()
    assert [tuple(m.shape[1:]) for m in v1(x)] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4)]
    assert MobileNetV1(width_mult=0.5, out_indices=[13]).out_channels == [512]
    assert "features.1.depthwise_conv.conv.weight" in v1.state_dict()
    with pytest.raises(ValueError, match="out_indices"):
        MobileNetV2(out_indices=[19])


@torch.no_grad()
def test_pan_neck_is_fpn_then_bottom_up():
    maps = [torch.randn(1, 8, 13, 13), torch.randn(1, 16, 7, 7), torch.randn(1, 32, 4, 4)]
    pan = PANNeck([8, 16, 32], 6).eval()
    out = pan(maps)
    assert [tuple(m.shape[1:]) for m in out] == [(6, 13, 13), (6, 7, 7), (6, 4, 4)]
    # The top-down half is an FPN with the same weights.
    fpn = FeaturePyramidNetwork([8, 16, 32], 6)
    for i in range(3):
        fpn.inner_blocks[i][0].load_state_dict(pan.lateral_convs[i].conv.state_dict())
        fpn.layer_blocks[i][0].load_state_dict(pan.fpn_convs[i].conv.state_dict())
    p = list(fpn(maps).values())
    m1 = p[1] + pan.downsample_convs[0].conv(p[0])
    m2 = p[2] + pan.downsample_convs[1].conv(m1)
    torch.testing.assert_close(out, [p[0], pan.pafpn_convs[0].conv(m1), pan.pafpn_convs[1].conv(m2)])


@torch.no_grad()
def test_ssd_necks_append_levels():
    maps = [torch.randn(1, 96, 19, 19), torch.randn(1, 1280, 10, 10)]
    ir = SSDInvertedResidualNeck([96, 1280], [512, 256, 256, 64], [0.2, 0.25, 0.5, 0.25]).eval()
    out = ir(maps)
    assert len(maps) == 2  # the input list is not extended in place
    assert out[:2] == maps and _grids(out) == [19, 10, 5, 3, 2, 1]
    assert [m.shape[1] for m in out] == ir.out_channels == [96, 1280, 512, 256, 256, 64]
    # Stride 2 pads by 1, stride 1 does not: 10 -> 5 -> 3 -> 2, then the 2x2 conv -> 1.
    bn = SSDBottleneckNeck([96, 1280], [512, 256, 256, 256], [256, 128, 128, 128], [3, 3, 3, 2], [2, 2, 2, 1])
    out = bn.eval()(maps)
    assert _grids(out) == [19, 10, 5, 3, 2, 1]
    assert [m.shape[1] for m in out] == bn.out_channels == [96, 1280, 512, 256, 256, 256]
    assert list(bn.state_dict())[:2] == ["neck_blocks.0.0.weight", "neck_blocks.0.1.weight"]


# ---- freezing and multi-output -----------------------------------------------------------------


def test_resnet_fpn_freezing():
    model = resnet50_fpn_backbone(trainable_layers=3)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    body = {n for n, _ in model.body.named_parameters()}
    assert frozen == {f"body.{n}" for n in body if n.startswith(("conv1.", "layer1."))}
    assert frozen and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(
        ".bn" in n or "downsample.1" in n for n, _ in model.named_parameters()
    )  # FrozenBN: buffers
    everything = resnet50_fpn_backbone(trainable_layers=5, norm_layer=nn.BatchNorm2d)
    assert all(p.requires_grad for p in everything.parameters())
    nothing = resnet50_fpn_backbone(trainable_layers=0)
    assert not any(p.requires_grad for p in nothing.body.parameters())
    assert all(p.requires_grad for p in nothing.fpn.parameters())
    with pytest.raises(ValueError, match="trainable_layers"):
        resnet50_fpn_backbone(trainable_layers=6)


@torch.no_grad()
def test_multi_output_backbone_walk():
    torch.manual_seed(0)
    resnet = resnet50(nn.BatchNorm2d).eval()
    _randomise_bn(resnet)
    x = torch.randn(1, 3, 64, 64)
    multi = MultiOutputBackbone(resnet, ["layer3.1", "layer2", "layer4"])
    stem = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    c3 = resnet.layer2(resnet.layer1(stem))
    l31 = resnet.layer3[1](resnet.layer3[0](c3))
    torch.testing.assert_close(multi(x), [l31, c3, resnet(x)])  # in the requested order
    assert multi.probe_channels() == [1024, 512, 2048]
    assert list(multi.state_dict()) == ["module." + k for k in resnet.state_dict()]
    # A module and one inside it: the outer output is still the whole module's.
    mb = MobileNetV2(width_mult=0.35).eval()
    both = MultiOutputBackbone(mb, ["features", "features.3"])(x)
    torch.testing.assert_close(both[0], mb(x))
    with pytest.raises(ValueError, match="not an nn"):
        MultiOutputBackbone(mb, ["features.3.conv"])
    with pytest.raises(AttributeError):
        MultiOutputBackbone(mb, ["features.99"])


# ---- torch.compile ---------------------------------------------------------------------------


# aot_eager: dynamo's whole-graph capture (fullgraph=True fails on any graph break) and AOTAutograd's
# fake-tensor trace through pydet's custom ops, in seconds; inductor's C++ code generation takes
# minutes on a small CPU machine, so it runs with the large tests (PYDET_TEST_LARGE=1).
_BACKENDS = ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]


def _compiled_matches_eager(model: nn.Module, backend: str) -> None:
    torch._dynamo.reset()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        got = torch.compile(model, fullgraph=True, backend=backend)(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", _BACKENDS)
def test_ssdlite_compiles_fullgraph(backend):
    _compiled_matches_eager(SSDLiteFeatureExtractorMobileNetV2(width_mult=0.35).eval(), backend)


@pytest.mark.parametrize("backend", _BACKENDS)
def test_multi_output_compiles_fullgraph(backend):
    backbone = MobileNetV1(width_mult=0.25).eval()
    _compiled_matches_eager(
        MultiOutputBackbone(backbone, ["features.5", "features.11", "features.13"]), backend
    )
