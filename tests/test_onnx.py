"""ONNX export of nms, multiclass_nms (dense and labels forms) and topk_per_level to standard operators, run in onnxruntime,
equal to eager."""

import warnings

import numpy as np
import pytest
import torch

import pydet.ops as ops

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
import pydet.onnx  # noqa: E402


def run_onnx(program, path, *inputs):
    program.save(str(path))
    session = ort.InferenceSession(str(path))
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)


def detections(b, n, c, seed, class_specific=False):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(b, n, c, generator=g) * 3).softmax(-1)
    shape = (b, n, c, 2) if class_specific else (b, n, 2)
    xy = torch.rand(shape, generator=g) * 200
    wh = 4 + torch.rand(shape, generator=g) * 60
    return torch.cat([xy, xy + wh], -1), scores


class Nms(torch.nn.Module):
    def forward(self, boxes, scores):
        return ops.nms(boxes, scores, 0.5)


class Multiclass(torch.nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, boxes, scores):
        return tuple(ops.multiclass_nms(boxes, scores, **self.options))


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_nms_exports_to_nonmaxsuppression(tmp_path):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 10 + torch.rand(300, 2, generator=g) * 60], 1)
    scores = torch.rand(300, generator=g)
    n = torch.export.Dim("n")
    program = pydet.onnx.export(Nms(), (boxes, scores), dynamic_shapes=({0: n}, {0: n}), verbose=False)
    assert "NonMaxSuppression" in {node.op_type for node in program.model_proto.graph.node}
    for seed in (1, 2):  # other inputs, other sizes
        g = torch.Generator().manual_seed(seed)
        xy = torch.rand(200 + seed, 2, generator=g) * 300
        b = torch.cat([xy, xy + 10 + torch.rand(200 + seed, 2, generator=g) * 60], 1)
        s = torch.rand(200 + seed, generator=g)
        (keep,) = run_onnx(program, tmp_path / "nms.onnx", b, s)
        np.testing.assert_array_equal(keep, ops.nms(b, s, 0.5).numpy())


@pytest.mark.parametrize("class_specific", [False, True])
@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("background_class", [None, 0])
@pytest.mark.parametrize("box_format, topk", [("xyxy", 30), ("cxcywh", -1)])
def test_multiclass_nms_exports_and_matches_eager(
    tmp_path, class_specific, class_agnostic, background_class, box_format, topk
):
    options = dict(
        score_threshold=0.05,
        iou_threshold=0.45,
        topk_per_class=topk,
        max_detections=40,
        class_agnostic=class_agnostic,
        background_class=background_class,
        box_format=box_format,
    )
    model = Multiclass(**options)
    boxes, scores = detections(3, 200, 6, seed=1, class_specific=class_specific)
    batch, anchors = torch.export.Dim("batch"), torch.export.Dim("anchors")
    shapes = ({0: batch, 1: anchors}, {0: batch, 1: anchors})
    program = pydet.onnx.export(model, (boxes, scores), dynamic_shapes=shapes, verbose=False)
    boxes, scores = detections(2, 150, 6, seed=7, class_specific=class_specific)
    got = run_onnx(program, tmp_path / "multiclass.onnx", boxes, scores)
    for ours, onnx_out in zip(model(boxes, scores), got, strict=True):
        np.testing.assert_allclose(onnx_out, ours.numpy(), rtol=1e-6, atol=1e-6)


class LabeledMulticlass(torch.nn.Module):
    def forward(self, boxes, scores, labels):
        return tuple(ops.multiclass_nms(boxes, scores, 0.05, 0.45, -1, 40, labels=labels, num_classes=6))


def test_multiclass_nms_labels_form_exports_and_matches_eager(tmp_path):
    boxes, scores = detections(2, 150, 6, seed=4)
    flat, labels = scores.max(-1)
    labels[0, :10] = -1  # padding
    program = pydet.onnx.export(LabeledMulticlass(), (boxes, flat, labels), verbose=False)
    got = run_onnx(program, tmp_path / "labeled.onnx", boxes, flat, labels)
    for ours, onnx_out in zip(LabeledMulticlass()(boxes, flat, labels), got, strict=True):
        np.testing.assert_allclose(onnx_out, ours.numpy(), rtol=1e-6, atol=1e-6)


class LevelTopk(torch.nn.Module):
    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold

    def forward(self, scores):
        return ops.topk_per_level(scores, 50, self.threshold, [300, 120, 0, 30])


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_topk_per_level_exports_and_matches_eager(tmp_path, threshold):
    g = torch.Generator().manual_seed(3)
    scores = (torch.randn(2, 450, 7, generator=g) * 4).round() / 4  # ties across the top-k cut
    scores[0, :3] = float("-inf")
    program = pydet.onnx.export(LevelTopk(threshold), (scores,), verbose=False)
    got = run_onnx(program, tmp_path / "topk.onnx", scores)
    for ours, onnx_out in zip(LevelTopk(threshold)(scores), got, strict=True):
        np.testing.assert_array_equal(onnx_out, ours.numpy())


class RoiAlign(torch.nn.Module):
    def __init__(self, aligned):
        super().__init__()
        self.aligned = aligned

    def forward(self, x, rois):
        return ops.roi_align(x, rois, (5, 4), 0.25, 2, self.aligned)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_exports_to_roialign(tmp_path, aligned):
    """onnxruntime's RoiAlign samples as torchvision does (same points and weights); its sums round in
    another order, so values agree to float rounding."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 30, 40, generator=g)

    def rois(k):
        xy = torch.rand(k, 2, generator=g) * 120
        boxes = torch.cat([xy, xy + 4 + torch.rand(k, 2, generator=g) * 60], 1)
        return torch.cat([(torch.arange(k) % 2).float()[:, None], boxes], 1)

    k = torch.export.Dim("k")
    program = pydet.onnx.export(
        RoiAlign(aligned), (x, rois(12)), dynamic_shapes=(None, {0: k}), verbose=False
    )
    assert "RoiAlign" in {node.op_type for node in program.model_proto.graph.node}
    r = rois(17)
    (got,) = run_onnx(program, tmp_path / "roi_align.onnx", x, r)
    np.testing.assert_allclose(got, RoiAlign(aligned)(x, r).numpy(), rtol=1e-5, atol=1e-5)


class DeformConv(torch.nn.Module):
    def __init__(self, modulated: bool):
        super().__init__()
        self.modulated = modulated

    def forward(self, x, offset, weight, bias, mask):
        return ops.deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask if self.modulated else None)


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_conv2d_exports_to_deformconv(tmp_path, modulated):
    """ONNX's DeformConv (opset 19) samples as torchvision does; onnxruntime's GEMM sums in another
    order, so values agree to float rounding. Weight and offset groups are kept."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 8, 9, 10, generator=g)
    offset = torch.randn(2, 36, 9, 10, generator=g) * 2  # 2 offset groups
    mask = torch.rand(2, 18, 9, 10, generator=g)
    weight = torch.randn(6, 4, 3, 3, generator=g)  # 2 weight groups
    bias = torch.randn(6, generator=g)
    args = (x, offset, weight, bias, mask)
    program = pydet.onnx.export(DeformConv(modulated), args, verbose=False)
    assert "DeformConv" in {node.op_type for node in program.model_proto.graph.node}
    (got,) = run_onnx(program, tmp_path / "deform_conv.onnx", *args)
    np.testing.assert_allclose(got, DeformConv(modulated)(*args).numpy(), rtol=1e-5, atol=1e-5)
