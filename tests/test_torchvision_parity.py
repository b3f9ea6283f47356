"""pydet against torchvision 0.29's own code, function by function, on the same inputs.

These run where torchvision imports with its C++ ops (CI's torchvision environment, where
PYDET_REQUIRE_TORCHVISION=1 turns a missing torchvision into a failure); elsewhere they skip. Every
comparison is bit-exact unless its test says why not.
"""

import math
import os

import pytest
import torch
from helpers import assert_same, box_arrays, import_torchvision, random_boxes, ulp_tolerance
from hypothesis import given
from hypothesis import strategies as st

import pydet.ops as ops
from pydet.anchors import torchvision as pd_anchors
from pydet.coders import torchvision as pd_coders
from pydet.matchers import torchvision as pd_matchers

AXIS_ALIGNED = ["xyxy", "xywh", "cxcywh"]
ROTATED = ["xywhr", "cxcywhr", "xyxyxyxy"]
FLOATS = [torch.float32, torch.float64]


def _torchvision_with_ops():
    """torchvision with its own C++ library loaded (not helpers' nms shim), or None."""
    tv = import_torchvision()
    if tv is None or not hasattr(torch.ops.torchvision, "roi_align"):
        if os.environ.get("PYDET_REQUIRE_TORCHVISION") == "1":
            raise RuntimeError("PYDET_REQUIRE_TORCHVISION=1 but torchvision's C++ ops are not loaded")
        return None
    return tv


tv = _torchvision_with_ops()
pytestmark = [
    pytest.mark.torchvision,
    pytest.mark.skipif(tv is None, reason="needs torchvision with its C++ ops"),
]
tvops = tv.ops if tv is not None else None


def as_boxes(array, dtype):
    return torch.as_tensor(array).reshape(-1, 4).to(dtype)


def rotated(n: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = 1 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 49
    r = torch.rand(n, 1, generator=g, dtype=torch.float64) * 360 - 180
    return torch.cat([c, wh, r], 1).to(dtype)


def integer_boxes(n: int, dtype, seed: int = 0) -> torch.Tensor:
    return (random_boxes(n, seed=seed, dtype=torch.float64) // 1).to(dtype)


# ---- box utilities ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("dtype", FLOATS)
@given(a=box_arrays())
def test_box_area(fmt, dtype, a):
    boxes = as_boxes(a, dtype)
    assert_same(ops.box_area(boxes, fmt), tvops.box_area(boxes, fmt))


@pytest.mark.parametrize("fmt", AXIS_ALIGNED)
@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.uint8]
)
def test_box_area_other_dtypes(fmt, dtype):
    boxes = integer_boxes(50, dtype) if not dtype.is_floating_point else random_boxes(50, dtype=dtype)
    assert_same(ops.box_area(boxes, fmt), tvops.box_area(boxes, fmt))


@pytest.mark.parametrize("in_fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("out_fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("dtype", FLOATS)
@given(a=box_arrays())
def test_box_convert(in_fmt, out_fmt, dtype, a):
    boxes = as_boxes(a, dtype)
    assert_same(ops.box_convert(boxes, in_fmt, out_fmt), tvops.box_convert(boxes, in_fmt, out_fmt))


@pytest.mark.parametrize("in_fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("out_fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float16, torch.bfloat16])
def test_box_convert_other_dtypes(in_fmt, out_fmt, dtype):
    boxes = integer_boxes(50, dtype) if not dtype.is_floating_point else random_boxes(50, dtype=dtype)
    assert_same(ops.box_convert(boxes, in_fmt, out_fmt), tvops.box_convert(boxes, in_fmt, out_fmt))


@pytest.mark.parametrize("in_fmt", ROTATED)
@pytest.mark.parametrize("out_fmt", ROTATED)
@pytest.mark.parametrize("dtype", [*FLOATS, torch.float16, torch.int64, torch.int32])
def test_box_convert_rotated(in_fmt, out_fmt, dtype):
    center = rotated(64, seed=1)
    boxes = tvops.box_convert(center, "cxcywhr", in_fmt)
    boxes = boxes.round().to(dtype) if not dtype.is_floating_point else boxes.to(dtype)
    assert_same(ops.box_convert(boxes, in_fmt, out_fmt), tvops.box_convert(boxes, in_fmt, out_fmt))


@pytest.mark.parametrize("dtype", FLOATS)
@given(a=box_arrays(), h=st.integers(0, 2000), w=st.integers(0, 2000))
def test_clip_boxes_to_image(dtype, a, h, w):
    boxes = as_boxes(a, dtype)
    assert_same(ops.clip_boxes_to_image(boxes, (h, w)), tvops.clip_boxes_to_image(boxes, (h, w)))


@pytest.mark.parametrize("dtype", FLOATS)
@given(a=box_arrays(), min_size=st.sampled_from([0.0, 1e-3, 1.0, 10.0]))
def test_remove_small_boxes(dtype, a, min_size):
    boxes = as_boxes(a, dtype)
    assert_same(ops.remove_small_boxes(boxes, min_size), tvops.remove_small_boxes(boxes, min_size))


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int32, torch.int16, torch.uint8, torch.float16, torch.bfloat16]
)
def test_clip_and_remove_small_other_dtypes(dtype):
    boxes = integer_boxes(60, dtype) if not dtype.is_floating_point else random_boxes(60, dtype=dtype)
    assert_same(ops.clip_boxes_to_image(boxes, (70, 50)), tvops.clip_boxes_to_image(boxes, (70, 50)))
    assert_same(ops.remove_small_boxes(boxes, 12.5), tvops.remove_small_boxes(boxes, 12.5))


# ---- the IoU family ----------------------------------------------------------------------------------
PAIRWISE = ["box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"]


def tolerance(name: str, dtype: torch.dtype) -> dict:
    # complete IoU goes through atan: pydet's own (dual.h) is faithfully rounded, ATen's may differ in
    # the last ulp, which the formula amplifies by at most a few ulp.
    return ulp_tolerance(dtype) if "complete" in name else {}


@pytest.mark.parametrize("name", PAIRWISE)
@pytest.mark.parametrize("dtype", FLOATS)
@given(a=box_arrays(), b=box_arrays())
def test_pairwise(name, dtype, a, b):
    b1, b2 = as_boxes(a, dtype), as_boxes(b, dtype)
    assert_same(getattr(ops, name)(b1, b2), getattr(tvops, name)(b1, b2), **tolerance(name, dtype))


@pytest.mark.parametrize("fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("dtype", FLOATS)
@given(a=box_arrays(), b=box_arrays())
def test_box_iou_format(fmt, dtype, a, b):
    b1, b2 = as_boxes(a, dtype), as_boxes(b, dtype)
    assert_same(ops.box_iou(b1, b2, fmt=fmt), tvops.box_iou(b1, b2, fmt=fmt))


@pytest.mark.parametrize("fmt", ROTATED)
@pytest.mark.parametrize("dtype", FLOATS)
def test_box_iou_rotated_formats(fmt, dtype):
    """torchvision 0.29 converts to cxcywhr and calls its box_iou_rotated kernel, pydet its own: both
    return float32, but pydet clips the rectangles exactly in float64 where torchvision (detectron2's
    code) collects intersection points with 1e-5 tolerances in the input dtype, so values differ in
    the last float32 bits (README: differences)."""
    b1 = tvops.box_convert(rotated(40, dtype), "cxcywhr", fmt)
    b2 = tvops.box_convert(rotated(30, dtype, seed=3), "cxcywhr", fmt)
    b2[:10] = b1[:10]  # identical boxes: IoU 1
    actual, expected = ops.box_iou(b1, b2, fmt=fmt), tvops.box_iou(b1, b2, fmt=fmt)
    assert actual.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-7)


@pytest.mark.parametrize("name", PAIRWISE)
def test_pairwise_batched(name):
    b1 = random_boxes(24).reshape(2, 3, 4, 4)
    b2 = random_boxes(5, seed=1)[None, None].expand(1, 3, 5, 4)
    expected = getattr(tvops, name)(b1, b2)
    assert_same(getattr(ops, name)(b1, b2), expected, **tolerance(name, torch.float32))


@pytest.mark.parametrize("name", PAIRWISE)
@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]
)
def test_pairwise_other_dtypes(name, dtype):
    """Half boxes give float32 like torchvision's _upcast, with its roundings to the half dtype."""
    if dtype.is_floating_point:
        b1, b2 = random_boxes(30, dtype=dtype), random_boxes(20, seed=1, dtype=dtype)
    else:
        b1, b2 = integer_boxes(30, dtype), integer_boxes(20, dtype, seed=1)
    assert_same(getattr(ops, name)(b1, b2), getattr(tvops, name)(b1, b2), **tolerance(name, torch.float32))


LOSSES = ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_losses(name, reduction, dtype):
    b1, b2 = random_boxes(500, dtype=dtype), random_boxes(500, seed=1, dtype=dtype)
    b2[:50] = b1[:50]
    actual = getattr(ops, name)(b1, b2, reduction=reduction)
    expected = getattr(tvops, name)(b1, b2, reduction=reduction)
    if reduction == "none":
        assert_same(actual, expected, **tolerance(name, dtype))
    else:  # pydet sums in float64 in a fixed order (any thread count), ATen pairwise in the dtype
        torch.testing.assert_close(actual, expected, rtol=16 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 1.5, 2.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_focal_loss(alpha, gamma, reduction):
    """Bit for bit at gamma = 0 without reduction (ATen's BCE, as torchvision). Otherwise pydet's exp and
    log1p may differ from ATen's (SLEEF) in the last bit, and torchvision's BCE, (1 - t) x - log_sigmoid(x),
    cancels where x << 0: differences stay within a few ulp of |x|."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2001, 91, generator=g) * 4
    t = (torch.rand(2001, 91, generator=g) < 0.05).float()
    actual = ops.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction=reduction)
    expected = tvops.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction=reduction)
    if gamma == 0.0 and reduction == "none":
        assert_same(actual, expected)
    else:
        torch.testing.assert_close(actual, expected, rtol=2e-5, atol=2e-6)


# ---- NMS ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms(dtype, threshold):
    boxes = random_boxes(2000, dtype=dtype)
    scores = torch.randperm(2000, generator=torch.Generator().manual_seed(0)).to(dtype) / 2000
    assert_same(ops.nms(boxes, scores, threshold), tvops.nms(boxes, scores, threshold))


@pytest.mark.parametrize("n", [500, 3000])  # below and above torchvision's 4000-coordinate switch
def test_batched_nms(n):
    boxes = random_boxes(n)
    g = torch.Generator().manual_seed(1)
    scores = torch.randperm(n, generator=g).float() / n
    idxs = torch.randint(0, 7, (n,), generator=g)
    assert_same(ops.batched_nms(boxes, scores, idxs, 0.5), tvops.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # deprecated in torch 2.14
def test_nms_quantized():
    boxes = random_boxes(300) / 2
    scores = torch.rand(300, generator=torch.Generator().manual_seed(2))
    qb = torch.quantize_per_tensor(boxes, scale=0.25, zero_point=0, dtype=torch.quint8)
    qs = torch.quantize_per_tensor(scores, scale=1 / 256, zero_point=0, dtype=torch.quint8)
    assert_same(ops.nms(qb, qs, 0.5), tvops.nms(qb, qs, 0.5))


def test_empty_inputs():
    empty = torch.empty(0, 4)
    assert_same(ops.nms(empty, torch.empty(0), 0.5), tvops.nms(empty, torch.empty(0), 0.5))
    assert_same(
        ops.batched_nms(empty, torch.empty(0), torch.empty(0, dtype=torch.int64), 0.5),
        tvops.batched_nms(empty, torch.empty(0), torch.empty(0, dtype=torch.int64), 0.5),
    )
    for name in PAIRWISE:
        assert_same(getattr(ops, name)(empty, random_boxes(3)), getattr(tvops, name)(empty, random_boxes(3)))
    assert_same(ops.box_area(empty), tvops.box_area(empty))
    assert_same(ops.remove_small_boxes(empty, 1.0), tvops.remove_small_boxes(empty, 1.0))


# ---- detection helpers: anchors, box coder, matchers ---------------------------------------------------
def test_anchor_generator():
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes, ratios = ((32, 64), (128,)), ((0.5, 1.0, 2.0), (1.0, 3.0))
    images = torch.zeros(2, 3, 200, 300)
    features = [torch.zeros(2, 8, 25, 38), torch.zeros(2, 8, 13, 19)]
    expected = AnchorGenerator(sizes, ratios)(ImageList(images, [(200, 300)] * 2), features)
    actual = pd_anchors.AnchorGenerator(sizes, ratios)(
        pd_anchors.ImageList(images, [(200, 300)] * 2), features
    )
    for a, e in zip(actual, expected, strict=True):
        assert_same(a, e)


@pytest.mark.parametrize("clip", [True, False])
def test_default_box_generator(clip):
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.image_list import ImageList

    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    images = torch.zeros(1, 3, 300, 300)
    features = [torch.zeros(1, 4, s, s) for s in (38, 19, 10, 5, 3, 1)]
    expected = DefaultBoxGenerator(ratios, clip=clip)(ImageList(images, [(300, 300)]), features)
    actual = pd_anchors.DefaultBoxGenerator(ratios, clip=clip)(
        pd_anchors.ImageList(images, [(300, 300)]), features
    )
    for a, e in zip(actual, expected, strict=True):
        assert_same(a, e)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder(weights):
    """The centre offsets bit for bit; dw, dh (log) and the decoded boxes (exp) within the last bits,
    where ATen's SLEEF and pydet's exp/log round differently (README: transcendentals)."""
    from torchvision.models.detection._utils import BoxCoder

    eps = torch.finfo(torch.float32).eps
    proposals = random_boxes(400) + 1
    gt = random_boxes(400, seed=1) + 1
    theirs, ours = BoxCoder(weights), pd_coders.BoxCoder(weights)
    codes = theirs.encode_single(gt, proposals)
    encoded = ours.encode_single(gt, proposals)
    assert_same(encoded[:, :2], codes[:, :2])
    torch.testing.assert_close(encoded[:, 2:], codes[:, 2:], rtol=2 * eps, atol=eps)
    codes = codes + torch.randn(codes.shape, generator=torch.Generator().manual_seed(3)) * 3  # exp clamp too
    torch.testing.assert_close(
        ours.decode_single(codes, proposals), theirs.decode_single(codes, proposals), rtol=4 * eps, atol=1e-5
    )
    torch.testing.assert_close(
        ours.decode(codes, [proposals]), theirs.decode(codes, [proposals]), rtol=4 * eps, atol=1e-5
    )


@pytest.mark.parametrize("low_quality", [False, True])
def test_matcher(low_quality):
    from torchvision.models.detection._utils import Matcher

    quality = tvops.box_iou(random_boxes(12, seed=4), random_boxes(3000, seed=5))
    quality[:, :50] = quality[:, 50:100]  # ties
    expected = Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)(quality)
    assert_same(pd_matchers.Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)(quality), expected)


def test_ssd_matcher():
    from torchvision.models.detection._utils import SSDMatcher

    quality = tvops.box_iou(random_boxes(9, seed=6), random_boxes(2000, seed=7))
    assert_same(pd_matchers.SSDMatcher(0.5)(quality), SSDMatcher(0.5)(quality))


# ---- RoI pooling -----------------------------------------------------------------------------------
def _feature_and_rois(dtype, k=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, 19, 23, generator=g).to(dtype)
    xy = torch.rand(k, 2, generator=g) * 60 - 8
    wh = torch.rand(k, 2, generator=g) * 50 - 4
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=g).float(), xy, xy + wh], 1)
    rois[0, 1:] = torch.tensor([-100.0, -90.0, 150.0, 160.0])  # beyond the image on every side
    rois[1, 1:] = torch.tensor([6.5, 7.25, 6.5, 7.25])  # a point
    rois[2, 1:] = torch.tensor([40.0, 40.0, 44.0, 46.0])  # on the last row and column
    return x, rois.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [-1, 0, 1, 2, 4])
def test_roi_align(dtype, aligned, ratio):
    """Values and input gradients bit for bit: same samples, weights and summation order (float16 in
    float16 arithmetic, as torchvision's CPU kernel)."""
    x, rois = _feature_and_rois(dtype, seed=ratio + 3)
    results = []
    for fn in (ops.roi_align, tvops.roi_align):
        leaf = x.clone().requires_grad_()
        out = fn(leaf, rois, (6, 5), 0.5, ratio, aligned)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
        results.append((out, torch.autograd.grad(out, leaf, grad)[0]))
    assert_same(results[0][0], results[1][0])
    assert_same(results[0][1], results[1][1])


def test_roi_align_list_boxes_and_module():
    x, rois = _feature_and_rois(torch.float32, seed=11)
    boxes = [rois[rois[:, 0] == b, 1:] for b in range(2)]
    assert_same(ops.roi_align(x, boxes, 7, 0.25, 2), tvops.roi_align(x, boxes, 7, 0.25, 2))
    from pydet.layers import RoIAlign

    assert_same(RoIAlign(4, 0.5, -1, True)(x, rois), tvops.RoIAlign(4, 0.5, -1, True)(x, rois))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize(
    ("name", "args"), [("roi_pool", ()), ("ps_roi_pool", ()), ("ps_roi_align", (-1,)), ("ps_roi_align", (2,))]
)
def test_max_and_position_sensitive_pooling(dtype, name, args):
    """Values, int32 index outputs (argmax, channel mapping) and input gradients bit for bit.
    ps_roi_pool's gradients are compared on RoIs clear of the last row and column: beyond them
    torchvision's backward is not its forward's gradient (README, Differences)."""
    _, rois = _feature_and_rois(dtype, seed=5)
    rois[3:9, 3:] = rois[3:9, 1:3]  # zero-size RoIs (ps_roi_align: NaN bins, as torchvision's)
    x = torch.randn(2, 24, 19, 23, generator=torch.Generator().manual_seed(6)).to(dtype)
    scale = 0.5
    if name == "ps_roi_pool":
        clear = ((rois[:, 1:] * scale >= 0) & (rois[:, 1:] * scale < 16.5)).all(1)
        rois = rois[clear]
    results = []
    for op in (getattr(torch.ops.pydet, name), getattr(torch.ops.torchvision, name)):
        leaf = x.clone().requires_grad_()
        out, index = op(leaf, rois, scale, 3, 4, *args)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
        results.append((out, index, torch.autograd.grad(out, leaf, grad)[0]))
    for ours, theirs in zip(*results, strict=True):
        assert_same(ours, theirs)


def test_max_and_position_sensitive_pooling_modules():
    from pydet.layers import PSRoIAlign, PSRoIPool, RoIPool

    _, rois = _feature_and_rois(torch.float32, seed=12)
    x = torch.randn(2, 8, 19, 23, generator=torch.Generator().manual_seed(3))
    boxes = [rois[rois[:, 0] == b, 1:] for b in range(2)]
    assert_same(RoIPool(3, 0.5)(x, boxes), tvops.RoIPool(3, 0.5)(x, boxes))
    assert_same(PSRoIPool(2, 0.5)(x, boxes), tvops.PSRoIPool(2, 0.5)(x, boxes))
    assert_same(PSRoIAlign(2, 0.5, 2)(x, rois), tvops.PSRoIAlign(2, 0.5, 2)(x, rois))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("names", "size", "ratio"), [(["p2", "p3", "p4", "p5"], 7, 2), (["p3", "p2"], (5, 4), -1), (["p4"], 3, 0)]
)
def test_multi_scale_roi_align(dtype, names, size, ratio):
    """torchvision's MultiScaleRoIAlign (its level mapping, then roi_align level by level) against
    pydet's one call: values and every level's gradient bit for bit."""
    from collections import OrderedDict

    from pydet.layers import MultiScaleRoIAlign

    g = torch.Generator().manual_seed(len(names))
    shapes = [(64, 96), (32, 48), (16, 24), (8, 12), (4, 6)]
    feats = OrderedDict(
        (f"p{i + 2}", torch.randn(2, 6, h, w, generator=g).to(dtype)) for i, (h, w) in enumerate(shapes[:4])
    )
    feats["pool"] = torch.randn(2, 6, *shapes[4], generator=g).to(dtype)
    boxes = []
    for _ in range(2):
        wh = torch.rand(40, 2, generator=g) * 300 + 4
        xy = torch.rand(40, 2, generator=g) * torch.tensor([380.0, 250.0])
        boxes.append(torch.cat([xy, xy + wh], 1).to(dtype))
    image_shapes = [(256, 384), (250, 380)]
    results = []
    for module in (MultiScaleRoIAlign(names, size, ratio), tvops.MultiScaleRoIAlign(names, size, ratio)):
        leaves = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
        out = module(leaves, boxes, image_shapes)
        used = [leaves[k] for k in leaves if k in names]
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
        results.append((out, torch.autograd.grad(out, used, grad)))
    assert_same(results[0][0], results[1][0])
    for ours, theirs in zip(results[0][1], results[1][1], strict=True):
        assert_same(ours, theirs)


def test_the_comparisons_use_torchvision_kernels():
    """Not the shim of helpers.import_torchvision: torchvision's own C++ library is loaded."""
    assert hasattr(torch.ops.torchvision, "box_iou_rotated")
    assert math.isfinite(float(tvops.box_iou(random_boxes(2), random_boxes(2)).sum()))


# ---- masks -------------------------------------------------------------------------------------------
def test_paste_masks_in_image():
    """torchvision's Mask R-CNN paste: values within float rounding (ATen's resize contracts
    multiply-adds on FMA-capable CPUs), the same pasted pixels."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    g = torch.Generator().manual_seed(4)
    masks = torch.rand(40, 1, 28, 28, generator=g)
    # boxes overlapping the image (torchvision's slicing raises for boxes wholly beyond an edge)
    xy = torch.rand(40, 2, generator=g) * torch.tensor([500.0, 330.0]) - 20
    boxes = torch.cat([xy, xy + 25 + torch.rand(40, 2, generator=g) * 200], 1)
    for padding in (0, 1, 2):
        ours = ops.paste_masks_in_image(masks, boxes, (427, 640), padding)
        theirs = paste_masks_in_image(masks, boxes, (427, 640), padding)
        assert_same(ours, theirs, atol=16 * torch.finfo(torch.float32).eps)
        assert torch.equal(ours != 0, theirs != 0)


def test_masks_to_boxes():
    g = torch.Generator().manual_seed(5)
    masks = torch.rand(12, 50, 70, generator=g) > 0.995
    masks[3] = False
    assert_same(ops.masks_to_boxes(masks), tvops.masks_to_boxes(masks))
    assert_same(ops.masks_to_boxes(masks.float()), tvops.masks_to_boxes(masks.float()))


# ---- deformable convolution --------------------------------------------------------------------------
def _deform_inputs(dtype, n, c, size, oc, k, groups, offset_groups, stride, padding, dilation, seed):
    g = torch.Generator().manual_seed(seed)
    oh = (size[0] + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    ow = (size[1] + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    x = torch.randn(n, c, *size, generator=g).to(dtype)
    offset = (torch.randn(n, 2 * offset_groups * k * k, oh, ow, generator=g) * 3).to(dtype)
    offset[:, :, ::3] = offset[:, :, ::3].round()  # samples on pixels and on the borders
    mask = torch.rand(n, offset_groups * k * k, oh, ow, generator=g).to(dtype)
    weight = torch.randn(oc, c // groups, k, k, generator=g).to(dtype)
    bias = torch.randn(oc, generator=g).to(dtype)
    return x, offset, mask, weight, bias


DEFORM_CASES = [  # n, c, (h, w), oc, k, groups, offset_groups, stride, padding, dilation
    (2, 6, (9, 11), 4, 3, 1, 1, 1, 1, 1),
    (1, 8, (10, 7), 6, 3, 2, 4, 2, 0, 1),
    (2, 4, (8, 9), 4, 2, 2, 2, 1, 2, 2),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", DEFORM_CASES)
@pytest.mark.parametrize("use_mask", [False, True])
def test_deform_conv2d_columns(dtype, case, use_mask):
    """The sampled columns bit for bit: with one-hot weights (output channel = one (channel, tap)) each
    output is one column value, which both GEMMs return exactly."""
    n, c, size, _, k, _, og, stride, padding, dilation = case
    x, offset, mask, _, _ = _deform_inputs(dtype, n, c, size, 1, k, 1, og, stride, padding, dilation, seed=3)
    weight = torch.eye(c * k * k, dtype=dtype).reshape(c * k * k, c, k, k)
    args = (stride, padding, dilation, mask if use_mask else None)
    ours = ops.deform_conv2d(x, offset, weight, None, *args)
    assert_same(ours, tvops.deform_conv2d(x, offset, weight, None, *args))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", DEFORM_CASES)
@pytest.mark.parametrize("use_mask", [False, True])
def test_deform_conv2d(dtype, case, use_mask):
    """Output and the five gradients within float rounding: both multiply the same columns by the
    weight through a GEMM, but in different column orders and tiles."""
    stride, padding, dilation = case[7:]
    inputs = _deform_inputs(dtype, *case, seed=4)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    results = []
    for fn in (ops.deform_conv2d, tvops.deform_conv2d):
        x, offset, mask, weight, bias = (t.clone().requires_grad_() for t in inputs)
        out = fn(x, offset, weight, bias, stride, padding, dilation, mask if use_mask else None)
        leaves = (x, offset, weight, bias) + ((mask,) if use_mask else ())
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
        results.append((out, *torch.autograd.grad(out, leaves, grad)))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, **tol)


def test_deform_conv2d_module_state_dicts():
    from pydet.layers import DeformConv2d

    theirs = tvops.DeformConv2d(8, 6, 3, stride=2, padding=1, groups=2)
    ours = DeformConv2d(8, 6, 3, stride=2, padding=1, groups=2)
    ours.load_state_dict(theirs.state_dict())
    x, offset, mask, _, _ = _deform_inputs(torch.float32, 2, 8, (11, 9), 6, 3, 2, 1, 2, 1, 1, seed=5)
    torch.testing.assert_close(ours(x, offset, mask), theirs(x, offset, mask), rtol=1e-5, atol=1e-5)
    assert set(ours.state_dict()) == set(theirs.state_dict())
