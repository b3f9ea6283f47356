"""The detectors: torchvision's state-dict layout key for key, the same detections and losses as
torchvision's models from the same weights (when torchvision is installed), training steps,
predict_batch under torch.compile(fullgraph=True) and torch.export, and bad input."""

import json
import math
import pathlib
import re

import numpy as np
import pytest
import torch
from helpers import import_torchvision
from torch import nn

import pydet.models as M
from pydet.benchmarks import reference as R
from pydet.models.losses import multibox_loss
from pydet.ops import multiclass_nms_to_list

MANIFEST = json.loads((pathlib.Path(__file__).parent / "data" / "torchvision_state_dicts.json").read_text())[
    "models"
]


def shapes(model: nn.Module) -> dict:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def test_ssd300_keys_match_torchvision():
    assert shapes(M.ssd300_vgg16()) == MANIFEST["ssd300_vgg16"]


def test_retinanet_keys_match_torchvision():
    assert shapes(M.retinanet_resnet50_fpn()) == MANIFEST["retinanet_resnet50_fpn"]
    # from pretrained weights: FrozenBatchNorm2d, which has no num_batches_tracked (torchvision's too)
    frozen = M.retinanet_resnet50_fpn(weights_backbone={})
    expected = {k: v for k, v in MANIFEST["retinanet_resnet50_fpn"].items() if "num_batches_tracked" not in k}
    assert shapes(frozen) == expected


def test_weights_from_a_file_and_num_classes_mismatch(tmp_path):
    model = M.ssdlite320_mobilenet_v2(num_classes=5)
    path = tmp_path / "ssdlite.pth"
    torch.save({"model": model.state_dict()}, path)
    loaded = M.ssdlite320_mobilenet_v2(num_classes=5, weights=path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"head\.classification_head.*different num_classes"):
        M.ssdlite320_mobilenet_v2(num_classes=7, weights=path)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        M.ssd300_vgg16(weights=tmp_path / "missing.pth")


def _targets():
    return [
        {
            "boxes": torch.tensor([[10.0, 20.0, 120.0, 140.0], [50.0, 60.0, 90.0, 200.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[0.0, 0.0, 250.0, 180.0]]), "labels": torch.tensor([2])},
    ]


def _images():
    g = torch.Generator().manual_seed(0)
    return [
        torch.rand(3, 240, 260, generator=g),
        torch.rand(3, 200, 300, generator=g),
        torch.rand(3, 260, 260, generator=g),
    ]


def test_ssdlite_trains():
    torch.manual_seed(0)
    model = M.ssdlite320_mobilenet_v2(num_classes=4).train()
    losses = model(_images(), _targets())
    assert set(losses) == {"bbox_regression", "classification"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_multibox_loss_equals_torchvision_per_image_formula():
    g = torch.Generator().manual_seed(1)
    b, n, c, m = 3, 50, 4, 5
    logits = torch.randn(b, n, c, generator=g, dtype=torch.float64)
    deltas = torch.randn(b, n, 4, generator=g, dtype=torch.float64)
    target = torch.randn(b, n, 4, generator=g, dtype=torch.float64)
    matched = torch.randint(-2, m, (b, n), generator=g)
    matched[1] = -1  # an image without foreground
    labels = torch.randint(1, c, (b, m), generator=g)
    ours = multibox_loss(logits, deltas, matched, labels, target)
    # torchvision's SSD.compute_loss, image by image
    bbox, cls_targets, fg_total = [], [], 0
    for i in range(b):
        fg = torch.where(matched[i] >= 0)[0]
        fg_total += fg.numel()
        bbox.append(torch.nn.functional.smooth_l1_loss(deltas[i, fg], target[i, fg], reduction="sum"))
        t = torch.zeros(n, dtype=torch.int64)
        t[fg] = labels[i][matched[i, fg]]
        cls_targets.append(t)
    cls_targets = torch.stack(cls_targets)
    cls_loss = torch.nn.functional.cross_entropy(
        logits.view(-1, c), cls_targets.view(-1), reduction="none"
    ).view(b, n)
    fg_idx = cls_targets > 0
    neg = cls_loss.clone()
    neg[fg_idx] = -math.inf
    _, idx = neg.sort(1, descending=True)
    bg_idx = idx.sort(1)[1] < 3 * fg_idx.sum(1, keepdim=True)
    total = max(1, fg_total)
    torch.testing.assert_close(ours["bbox_regression"], torch.stack(bbox).sum() / total)
    torch.testing.assert_close(
        ours["classification"], (cls_loss[fg_idx].sum() + cls_loss[bg_idx].sum()) / total
    )


def test_retinanet_trains_with_each_box_loss():
    torch.manual_seed(0)
    for box_loss in ("l1", "smooth_l1", "giou"):
        model = M.retinanet_resnet50_fpn(
            num_classes=4, min_size=128, max_size=160, box_loss_type=box_loss
        ).train()
        losses = model(_images(), _targets())
        total = sum(losses.values())
        assert torch.isfinite(total), (box_loss, losses)
        total.backward()
        assert model.head.regression_head.bbox_reg.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def small_retinanet():
    return M.retinanet_resnet50_fpn(num_classes=5, topk_candidates=40, detections_per_img=60).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("mean", "std", "topk"),
    [
        (-4.0, 1.5, 40),  # a few candidates per level
        (0.0, 1.0, 40),  # more candidates than topk_candidates
        (-3.0, 2.0, 10_000),  # no top-k cut
        (-2.0, 3.0, 40),  # with NaN and +-inf logits
    ],
)
def test_retinanet_postprocess_equals_torchvision_algorithm(small_retinanet, dtype, mean, std, topk):
    """RetinaNet.predict (topk_per_level in logit space, then multiclass_nms) against torchvision's
    postprocess_detections written in plain torch, on random head outputs. (Equal scores are left
    to the op tests: NMS keeps different boxes when libraries order ties differently.)"""
    model = small_retinanet
    model.topk_candidates = topk
    sizes, classes = [300, 120, 0, 30], 5
    g = torch.Generator().manual_seed(int(mean * 10 + std))
    n = sum(sizes)
    logits = torch.randn(2, n, classes, generator=g, dtype=dtype) * std + mean
    if std == 3.0:
        logits[0, :5, 1] = math.nan
        logits[1, 7:12, 2] = math.inf
        logits[1, 20:30] = -math.inf
    deltas = torch.randn(2, n, 4, generator=g, dtype=dtype) * 0.5
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 200
    anchors = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g, dtype=dtype) * 60], 1)
    try:
        out = model.predict({"bbox_regression": deltas, "cls_logits": logits}, anchors, [(240, 260)], sizes)
    finally:
        model.topk_candidates = 40
    ref = R.retinanet_postprocess(deltas, logits, anchors, sizes, (240, 260), 0.05, 0.5, topk, 60)
    assert sum(d["boxes"].shape[0] for d in ref) > 0
    _same_detections(multiclass_nms_to_list(out), ref)


@pytest.mark.parametrize("threshold", [0.0, 1e-30, 1e-4, 0.05, 0.3, 0.5, 0.9, 0.999])
def test_sigmoid_prefilter_never_drops_a_passing_logit(threshold):
    """Every bfloat16 and float16 value, and the 2^17 float32 and float64 values nearest the bound: a
    logit that topk_per_level drops (not > the bound, compared in the logits' dtype) never has
    sigmoid(x) > threshold in its dtype; and the bound lets few extra logits through."""
    from pydet.models.detectors.retinanet import sigmoid_prefilter

    all16 = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    for x in (all16.view(torch.float16), all16.view(torch.bfloat16), torch.float32, torch.float64):
        if isinstance(x, torch.dtype):  # the values around the bound, bit pattern by bit pattern
            bits = torch.int32 if x == torch.float32 else torch.int64
            centre = torch.tensor(sigmoid_prefilter(threshold, x), dtype=x).view(bits)
            x = (centre + torch.arange(-(2**16), 2**16)).to(bits).view(x)
        bound = sigmoid_prefilter(threshold, x.dtype)
        dropped = x[~(x > bound)]
        assert not (dropped.sigmoid() > threshold).any(), (x.dtype, dropped[dropped.sigmoid() > threshold])
        if 0 < threshold:
            logit = math.log(threshold / (1 - threshold))
            assert (
                logit - 1e-5 - 100 * torch.finfo(x.dtype).eps * (1 / (1 - threshold) + abs(logit) + 1) < bound
            )


def test_eval_output_format_and_sizes():
    model = M.ssdlite320_mobilenet_v2(num_classes=3, score_thresh=0.0).eval()
    images = _images()
    with torch.no_grad():
        out = model(images)
    assert len(out) == len(images)
    for det, image in zip(out, images, strict=True):
        assert set(det) == {"boxes", "scores", "labels"}
        k = det["boxes"].shape[0]
        assert 0 < k <= 300 and det["scores"].shape == (k,) and det["labels"].shape == (k,)
        assert (det["labels"] >= 1).all() and (det["labels"] < 3).all()
        h, w = image.shape[1:]
        assert (det["boxes"][:, 0::2] <= w + 1e-3).all() and (det["boxes"][:, 1::2] <= h + 1e-3).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


@pytest.mark.parametrize(
    ("build", "size"),
    [
        (lambda: M.ssdlite320_mobilenet_v2(num_classes=3, score_thresh=0.0, detections_per_img=20), 320),
        (lambda: M.ssd300_vgg16(num_classes=3, score_thresh=0.0, detections_per_img=20), 300),
        (lambda: M.ssd512_vgg16(num_classes=3, score_thresh=0.0, detections_per_img=20), 512),
        (lambda: M.retinanet_resnet50_fpn(num_classes=3, score_thresh=0.0, detections_per_img=20), 128),
    ],
    ids=["ssdlite", "ssd300", "ssd512", "retinanet"],
)
def test_predict_batch_compiles_fullgraph_and_exports(build, size):
    """Every detector's predict_batch: torch.compile(fullgraph=True, dynamic=True) over two batch
    sizes through one graph, and torch.export, give the eager results."""
    model = build().eval()
    torch._dynamo.reset()
    compiled_fn = torch.compile(model.predict_batch, fullgraph=True, dynamic=True, backend="eager")
    with torch.no_grad():
        for n in (2, 3):
            batch = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(n))
            for a, b in zip(model.predict_batch(batch), compiled_fn(batch), strict=True):
                torch.testing.assert_close(a, b)
        eager = model.predict_batch(batch)
        program = torch.export.export(_Predict(model), (batch,))
        for a, b in zip(eager, program.module()(batch), strict=True):
            torch.testing.assert_close(a, b)


class _Predict(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return tuple(self.model.predict_batch(batch))


BAD = [
    (
        lambda m: m([torch.rand(1, 3, 64, 64)]),
        ValueError,
        "SSD: images[0] must be a 3-D tensor [C, H, W], got [1, 3, 64, 64]",
    ),
    (
        lambda m: m([torch.rand(4, 64, 64)]),
        ValueError,
        "SSD: images[0] must have 3 channels, got shape [4, 64, 64]",
    ),
    (
        lambda m: m([torch.zeros(3, 64, 64, dtype=torch.uint8)]),
        TypeError,
        "SSD: images[0] must be a floating-point",
    ),
    (lambda m: m(torch.rand(3, 64, 64)), TypeError, "SSD: images must be a list of [C, H, W] tensors"),
    (
        lambda m: m.predict_batch(torch.rand(3, 64, 64)),
        ValueError,
        "SSD.predict_batch: batch must have shape [B, 3, H, W]",
    ),
]
BAD_TRAINING = [
    (lambda m: m([torch.rand(3, 64, 64)]), ValueError, "SSD: targets should not be None in training mode"),
    (
        lambda m: m(
            [torch.rand(3, 64, 64)], [{"boxes": torch.rand(2, 5), "labels": torch.ones(2, dtype=torch.int64)}]
        ),
        ValueError,
        "SSD: targets[0]['boxes'] must be a tensor of shape [N, 4], got [2, 5]",
    ),
    (
        lambda m: m(
            [torch.rand(3, 64, 64)] * 2,
            [
                {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([1])},
                {
                    "boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0], [3.0, 3.0, 3.0, 9.0]]),
                    "labels": torch.tensor([1, 2]),
                },
            ],
        ),
        ValueError,
        "SSD: all bounding boxes should have positive height and width; found invalid box [3.0, 3.0, 3.0, 9.0] "
        "(index 1) for target at index 1",
    ),
    (
        lambda m: m(
            [torch.rand(3, 64, 64)], [{"boxes": torch.rand(2, 4), "labels": torch.ones(3, dtype=torch.int64)}]
        ),
        ValueError,
        "SSD: targets[0]['labels'] must be an integer tensor of shape [2], got [3]",
    ),
]


@pytest.fixture(scope="module")
def small_ssd():
    return M.ssdlite320_mobilenet_v2(num_classes=3)


@pytest.mark.parametrize(
    ("training", "index"),
    [(False, i) for i in range(len(BAD))] + [(True, i) for i in range(len(BAD_TRAINING))],
)
def test_bad_input(small_ssd, training, index):
    call, exc, message = (BAD_TRAINING if training else BAD)[index]
    small_ssd.train(training)
    with pytest.raises(exc, match=re.escape(message)):
        call(small_ssd)


# ---- against torchvision ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tv():
    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not installed")
    return tv


def _canonical(det: dict) -> dict:
    """Detections sorted by (score desc, label, box): equal scores may come out in either order."""
    keys = [det["boxes"][:, i].double().numpy() for i in (3, 2, 1, 0)]
    order = np.lexsort([*keys, det["labels"].numpy(), -det["scores"].double().numpy()])
    return {k: v[torch.as_tensor(order)] for k, v in det.items()}


def _same_detections(ours, ref):
    for a, b in zip(ours, ref, strict=True):
        assert a["boxes"].shape == b["boxes"].shape
        a, b = _canonical(a), _canonical(b)
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=1e-4)
        assert torch.equal(a["labels"], b["labels"])


@pytest.mark.torchvision
def test_ssd300_same_detections_and_losses_as_torchvision(tv):
    torch.manual_seed(0)
    ref = tv.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=5)
    ours = M.ssd300_vgg16(num_classes=5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        _same_detections(ours.eval()(_images()), ref.eval()(_images()))
        ours_l, ref_l = ours.train()(_images(), _targets()), ref.train()(_images(), _targets())
    for k in ref_l:
        torch.testing.assert_close(ours_l[k], ref_l[k], rtol=1e-4, atol=1e-5)


@pytest.mark.torchvision
def test_retinanet_same_detections_and_losses_as_torchvision(tv):
    torch.manual_seed(0)
    kwargs = dict(num_classes=5, min_size=256, max_size=320, score_thresh=0.005)
    ref = tv.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
    ours = M.retinanet_resnet50_fpn(**kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        _same_detections(ours.eval()(_images()), ref.eval()(_images()))
        ours_l, ref_l = ours.train()(_images(), _targets()), ref.train()(_images(), _targets())
    for k in ref_l:
        torch.testing.assert_close(ours_l[k], ref_l[k], rtol=1e-4, atol=1e-5)
