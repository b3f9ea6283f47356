"""The NMS family against plain greedy references (pydet.benchmarks.reference): exact keep lists on random and
adversarial inputs, the spatial-index path on large inputs, ties, NaN/inf, degenerate boxes."""

import math
import re

import numpy as np
import pytest
import torch
from helpers import assert_same, box_arrays, random_boxes
from hypothesis import given
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import pydet.ops as ops
from pydet.benchmarks import reference as R


@st.composite
def scored_boxes(draw, min_n=0, max_n=40):
    boxes = draw(box_arrays(min_n=min_n, max_n=max_n))
    n = len(boxes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scores = rng.random(n)
    if draw(st.booleans()):  # ties
        scores = np.round(scores * 4) / 4
    if n and draw(st.booleans()):
        scores[rng.integers(0, n, size=max(1, n // 5))] = np.nan
    return torch.as_tensor(boxes).reshape(-1, 4), torch.as_tensor(scores)


thresholds = st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])


def image_boxes(n, seed, image=(1333, 800), sizes=(8, 400), dtype=torch.float32):
    """The benchmark's distribution: random boxes in an image, sides 8-400 px."""
    g = torch.Generator().manual_seed(seed)
    wh = sizes[0] + torch.rand(n, 2, generator=g) * (sizes[1] - sizes[0])
    xy = torch.rand(n, 2, generator=g) * (torch.tensor(image) - wh)
    return torch.cat([xy, xy + wh], 1).to(dtype), torch.rand(n, generator=g, dtype=torch.float64).to(dtype)


def clustered_boxes(n, seed):
    """Many near-duplicates around a few centres: most boxes are suppressed, IoUs straddle thresholds."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(12, 2, generator=g) * 500
    pick = torch.randint(0, 12, (n,), generator=g)
    c = centres[pick] + torch.randn(n, 2, generator=g) * 6
    wh = 40 + torch.randn(n, 2, generator=g) * 5
    return torch.cat([c - wh / 2, c + wh / 2], 1), torch.rand(n, generator=g)


# ---- nms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(data=scored_boxes(), t=thresholds)
def test_nms_equals_greedy_reference(dtype, data, t, device):
    boxes, scores = data
    boxes, scores = boxes.to(dtype=dtype, device=device), scores.to(dtype=dtype, device=device)
    assert_same(ops.nms(boxes, scores, t), R.nms(boxes, scores, t))


@pytest.mark.parametrize("make", [image_boxes, clustered_boxes])
@pytest.mark.parametrize("n", [600, 4000])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 0.7])
def test_nms_large_inputs_use_the_index_and_stay_exact(make, n, t, device):
    boxes, scores = make(n, seed=n)
    boxes, scores = boxes.to(device), scores.to(device)
    assert_same(ops.nms(boxes, scores, t), R.nms(boxes, scores, t))


def test_nms_known_example(device):
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.0]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95], device=device)
    assert ops.nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert ops.nms(boxes, scores, 0.7).tolist() == [3, 1, 2]  # IoU(3, 1) = 81/119 = 0.68 <= 0.7


def test_nms_threshold_is_strict_and_compared_in_float64(device):
    # IoU exactly 0.5 (50 / 100): kept at threshold 0.5, suppressed just below it.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]], device=device)
    scores = torch.tensor([1.0, 0.5], device=device)
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert ops.nms(boxes, scores, 0.4999999).tolist() == [0]
    # IoU 3/10 rounds to float32(0.3) > 0.3: above the float64 threshold 0.3, as in torchvision
    boxes = torch.tensor([[0.0, 0, 3, 1], [0, 0, 10, 1]], device=device)
    assert ops.box_iou(boxes[:1], boxes[1:]).item() == torch.tensor(0.3).item() > 0.3
    assert ops.nms(boxes, scores, 0.3).tolist() == [0]


def test_ties_keep_the_lower_index(device):
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 4, device=device)
    scores = torch.tensor([0.5, 0.9, 0.9, 0.9], device=device)
    assert ops.nms(boxes, scores, 0.5).tolist() == [1]
    assert ops.nms(boxes, scores, 1.0).tolist() == [1, 2, 3, 0]


def test_nan_scores_and_degenerate_boxes(device):
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # kept
            [0, 0, 10, 10],  # NaN score: dropped, suppresses nothing
            [0, 0, 10, 10],  # suppressed by 0
            [5, 5, 5, 5],  # zero area: never suppressed, never suppresses
            [5, 5, 5, 5],
            [0, 0, float("nan"), 10],  # NaN coordinate: kept, suppresses nothing
            [0, 0, float("inf"), 10],  # infinite: kept, suppresses nothing
            [1, 1, 9, 9],  # IoU 0.64 with box 0
        ],
        device=device,
    )
    scores = torch.tensor([0.9, float("nan"), 0.8, 0.7, 0.6, 0.99, 0.98, 0.5], device=device)
    assert ops.nms(boxes, scores, 0.5).tolist() == [5, 6, 0, 3, 4]


def test_empty_and_all_nan(device):
    e = torch.zeros(0, 4, device=device)
    assert ops.nms(e, torch.zeros(0, device=device), 0.5).shape == (0,)
    b = random_boxes(3, device=device)
    assert ops.nms(b, torch.full((3,), float("nan"), device=device), 0.5).shape == (0,)


@pytest.mark.parametrize(
    "op, boxes",
    [
        (ops.batched_nms, torch.zeros(0, 4)),
        (ops.batched_nms, torch.zeros(0)),
        (ops.batched_nms_rotated, torch.zeros(0, 5)),
    ],
)
def test_batched_nms_of_no_boxes_returns_before_checking_the_rest(op, boxes, device):
    """torchvision's batched_nms (and detectron2's batched_nms_rotated) return an empty result for no
    boxes before looking at scores and idxs: float idxs (torch.empty's default) are fine there."""
    keep = op(boxes.to(device), torch.empty(0, device=device), torch.empty(0, device=device), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,) and keep.device == boxes.to(device).device
    with FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv()):  # ShapeEnv: data-dependent sizes
        assert (
            op(boxes.to(device), torch.empty(3, device=device), torch.empty(0, device=device), 0.5).dtype
            == torch.int64
        )


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # deprecated in torch 2.13
@pytest.mark.parametrize("scale, zero_point", [(1.0, 0), (0.5, 3), (2.0, 10)])
def test_quantized_nms_follows_torchvision(scale, zero_point):
    """torchvision's quantized CPU nms: IoU of the integer representations, scores by representation."""
    g = torch.Generator().manual_seed(5)
    xy = torch.randint(0, 150, (300, 2), generator=g).float()
    wh = torch.randint(1, 100, (300, 2), generator=g).float()
    real = torch.cat([xy, xy + wh], 1) * scale
    boxes = torch.quantize_per_tensor(real, scale, zero_point, torch.quint8)
    scores = torch.quantize_per_tensor(torch.rand(300, generator=g), 1 / 255, 0, torch.quint8)
    keep = ops.nms(boxes, scores, 0.5)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, R.nms(boxes.int_repr().float(), scores.int_repr().float(), 0.5))


def test_nms_half_and_mixed_dtypes(device):
    boxes, scores = image_boxes(700, seed=1)
    boxes, scores = boxes.to(device), scores.to(device)
    assert_same(ops.nms(boxes.half(), scores, 0.5), ops.nms(boxes.half().float(), scores, 0.5))
    assert_same(ops.nms(boxes, scores.double(), 0.5), ops.nms(boxes, scores, 0.5))


def test_nms_is_deterministic_for_any_thread_count():
    boxes, scores = image_boxes(20_000, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.nms(boxes, scores, 0.5)
        torch.set_num_threads(max(2, threads))
        many = ops.nms(boxes, scores, 0.5)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


# ---- batched_nms -------------------------------------------------------------------------------
@given(data=scored_boxes(max_n=60), t=thresholds, classes=st.integers(1, 5))
def test_batched_nms_equals_per_class_loop(data, t, classes, device):
    boxes, scores = data
    idxs = torch.arange(len(boxes)) % classes
    boxes, scores, idxs = boxes.float().to(device), scores.float().to(device), idxs.to(device)
    assert_same(ops.batched_nms(boxes, scores, idxs, t), R.batched_nms(boxes, scores, idxs, t))


def test_batched_nms_many_classes_and_idx_dtypes(device):
    boxes, scores = image_boxes(5000, seed=5)
    idxs = torch.randint(0, 80, (5000,), generator=torch.Generator().manual_seed(0))
    boxes, scores, idxs = boxes.to(device), scores.to(device), idxs.to(device)
    expected = R.batched_nms(boxes, scores, idxs, 0.5)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        assert_same(ops.batched_nms(boxes, scores, idxs.to(dtype), 0.5), expected)


def test_batched_nms_has_no_coordinate_offset_trick(device):
    """Huge coordinates: the offset trick (boxes + idx * (max + 1)) loses precision in float32."""
    base = torch.tensor([[1e7, 1e7, 1e7 + 64, 1e7 + 64], [1e7 + 1, 1e7, 1e7 + 65, 1e7 + 64]], device=device)
    boxes = torch.cat([base, base])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6], device=device)
    idxs = torch.tensor([0, 0, 5, 5], device=device)
    assert ops.batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 2]


# ---- multiclass_nms ----------------------------------------------------------------------------
def detector_output(b, n, c, seed, class_specific=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, c, generator=g) * 3
    scores = logits.softmax(-1)
    shape = (b, n, c, 2) if class_specific else (b, n, 2)
    xy = torch.rand(shape, generator=g) * 200
    wh = 4 + torch.rand(shape, generator=g) * 60
    return torch.cat([xy, xy + wh], -1).to(device), scores.to(device)


@pytest.mark.parametrize("class_specific", [False, True])
@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("background_class", [None, 0])
@pytest.mark.parametrize("box_format", ["xyxy", "cxcywh"])
def test_multiclass_nms_equals_torchvision_style_postprocess(
    class_specific, class_agnostic, background_class, box_format, device
):
    boxes, scores = detector_output(3, 300, 6, seed=7, class_specific=class_specific, device=device)
    args = (0.05, 0.45, 40, 50, class_agnostic, background_class, box_format)
    for ours, ref in zip(
        ops.multiclass_nms(boxes, scores, *args), R.multiclass_nms(boxes, scores, *args), strict=True
    ):
        assert_same(ours, ref)


@given(
    seed=st.integers(0, 10_000),
    score_threshold=st.sampled_from([0.0, 0.1, 0.3]),
    iou=thresholds,
    topk=st.sampled_from([-1, 1, 5, 50]),
    max_det=st.sampled_from([0, 1, 7, 100]),
)
def test_multiclass_nms_properties(seed, score_threshold, iou, topk, max_det, device):
    boxes, scores = detector_output(2, 60, 4, seed=seed, device=device)
    scores = (scores * 8).round() / 8  # ties
    args = (score_threshold, iou, topk, max_det, False, None, "xyxy")
    out = ops.multiclass_nms(boxes, scores, *args)
    for ours, ref in zip(out, R.multiclass_nms(boxes, scores, *args), strict=True):
        assert_same(ours, ref)
    assert out.boxes.shape == (2, max_det, 4)
    for b in range(2):
        n = int(out.num_detections[b])
        assert (out.labels[b, n:] == -1).all() and (out.indices[b, n:] == -1).all()
        assert (out.scores[b, n:] == 0).all() and (out.scores[b, :n] > score_threshold).all()


def spread_labels(scores, labels, num_classes):
    """The dense [B, N, C] scores the labels form stands for: each score in its label's column."""
    dense = scores.new_full((*scores.shape, num_classes), -math.inf)
    valid = labels >= 0
    dense.scatter_(2, labels.clamp(min=0)[..., None], torch.where(valid, scores, -math.inf)[..., None])
    return dense


@given(
    seed=st.integers(0, 10_000),
    score_threshold=st.sampled_from([-math.inf, 0.0, 0.3]),
    topk=st.sampled_from([-1, 1, 5]),
    max_det=st.sampled_from([0, 3, 100]),
    class_agnostic=st.booleans(),
    background_class=st.sampled_from([None, 1]),
    class_specific=st.booleans(),
)
def test_multiclass_nms_labels_equal_the_dense_form(
    seed, score_threshold, topk, max_det, class_agnostic, background_class, class_specific, device
):
    """scores [B, N] + labels [B, N] give exactly the dense call on the spread [B, N, C] scores: ties,
    NaN and -inf scores, padding labels (-1) and labels that occur once or many times included."""
    classes = 4
    boxes, scores = detector_output(2, 50, classes, seed=seed, class_specific=class_specific, device=device)
    g = torch.Generator().manual_seed(seed)
    flat = ((scores[..., 0] * 8).round() / 8).contiguous()  # ties
    flat[0, :3] = math.nan
    flat[1, 3:5] = -math.inf
    labels = torch.randint(-1, classes, flat.shape, generator=g).to(device)
    args = (score_threshold, 0.5, topk, max_det, class_agnostic, background_class, "xyxy")
    got = ops.multiclass_nms(boxes, flat, *args, labels=labels, num_classes=classes)
    want = ops.multiclass_nms(boxes, spread_labels(flat, labels, classes), *args)
    for ours, ref in zip(got, want, strict=True):
        assert_same(ours, ref)


def test_multiclass_nms_labels_out_of_range():
    boxes, scores = detector_output(1, 10, 3, seed=0)
    labels = torch.zeros(1, 10, dtype=torch.int32)  # any integer dtype
    ops.multiclass_nms(boxes, scores[..., 0], labels=labels, num_classes=1)
    labels[0, 7] = 3
    with pytest.raises(
        ValueError, match=re.escape("labels holds 3 at [0, 7], not a class index in [0, num_classes = 3)")
    ):
        ops.multiclass_nms(boxes, scores[..., 0], 0.0, labels=labels, num_classes=3)


def test_multiclass_nms_to_list(device):
    boxes, scores = detector_output(2, 50, 5, seed=1, device=device)
    out = ops.multiclass_nms(boxes, scores, 0.1, 0.5, 10, 20)
    dets = ops.multiclass_nms_to_list(out)
    assert len(dets) == 2
    for b, d in enumerate(dets):
        n = int(out.num_detections[b])
        assert set(d) == {"boxes", "scores", "labels"}
        assert d["boxes"].shape == (n, 4) and d["scores"].shape == (n,) and d["labels"].dtype == torch.int64


def test_multiclass_nms_empty_and_half(device):
    boxes, scores = detector_output(2, 0, 3, seed=2, device=device)
    out = ops.multiclass_nms(boxes, scores, 0.1, 0.5, 10, 5)
    assert out.num_detections.tolist() == [0, 0] and out.boxes.shape == (2, 5, 4)
    boxes, scores = detector_output(2, 40, 3, seed=2, device=device)
    half = ops.multiclass_nms(boxes.half(), scores.half(), 0.1, 0.5, 10, 5)
    assert half.boxes.dtype == torch.float16 and half.scores.dtype == torch.float16
    ref = ops.multiclass_nms(boxes.half().float(), scores.half().float(), 0.1, 0.5, 10, 5)
    assert_same(half.indices, ref.indices)


# ---- topk_per_level ----------------------------------------------------------------------------
SCORE_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@st.composite
def level_scores(draw):
    """Scores [B, N] or [B, N, C] with ties, NaN, +-inf and signed zeros, and a split into levels."""
    b, n = draw(st.integers(0, 3)), draw(st.integers(0, 40))
    c = draw(st.sampled_from([None, 1, 3, 7]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(b, n) if c is None else (b, n, c))
    if draw(st.booleans()):  # ties
        x = np.round(x * 2) / 2
    if x.size and draw(st.booleans()):
        where = rng.random(x.shape) < 0.2
        x[where] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0], size=where.sum())
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    sizes = np.diff([0, *cuts, n]).tolist() if draw(st.booleans()) else None
    return torch.as_tensor(x), sizes


@pytest.mark.parametrize("dtype", SCORE_DTYPES)
@given(
    data=level_scores(),
    k=st.integers(0, 12),
    threshold=st.sampled_from([None, -math.inf, -1.0, 0.0, 0.1, 0.5, math.inf]),
)
def test_topk_per_level_equals_threshold_then_stable_topk(dtype, data, k, threshold, device):
    scores, sizes = data
    scores = scores.to(dtype=dtype, device=device)
    values, indices = ops.topk_per_level(scores, k, threshold, sizes)
    ref_values, ref_indices = R.topk_per_level(scores, k, threshold, sizes)
    assert_same(values, ref_values)
    assert_same(indices, ref_indices)


@pytest.mark.parametrize("threshold", [None, 0.5, 3.0])
@pytest.mark.parametrize("k", [1, 7, 1000])
def test_topk_per_level_large_levels(threshold, k, device):
    """Levels of millions of scores: the parallel chunks, the rising bound and the merge, with ties
    (scores on a grid of quarters) across chunk boundaries; the same for any thread count."""
    g = torch.Generator().manual_seed(k)
    scores = (torch.randn(2, 300_000, 9, generator=g) * 4).round() / 4
    scores[0, 1000:2000] = math.nan
    scores[1, 5:9, 2] = math.inf
    sizes = [200_000, 60_000, 39_000, 0, 1000]
    scores = scores.to(device)
    ref = R.topk_per_level(scores, k, threshold, sizes)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 5):
            torch.set_num_threads(n)
            for ours, expected in zip(ops.topk_per_level(scores, k, threshold, sizes), ref, strict=True):
                assert_same(ours, expected)
    finally:
        torch.set_num_threads(threads)


def test_topk_per_level_layouts_and_threshold_rounding(device):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 50, 6, generator=g).to(device)
    expected = ops.topk_per_level(scores, 9, 0.2, [30, 20])
    for layout in (
        scores.transpose(0, 1).contiguous().transpose(0, 1),
        scores[:, :, None].expand(3, 50, 2, 6)[:, :, 0],
    ):
        for ours, ref in zip(ops.topk_per_level(layout, 9, 0.2, [30, 20]), expected, strict=True):
            assert_same(ours, ref)
    # the threshold is rounded to the scores' dtype before comparing, as `scores > threshold` does
    half = torch.tensor([[0.1, 0.2]], dtype=torch.float16, device=device)
    indices = ops.topk_per_level(half, 2, 0.09995)[1]
    assert indices.tolist() == [[[1, -1]]]
    assert (half > 0.09995).tolist() == [[False, True]]


def test_topk_per_level_padding_and_empty(device):
    scores = torch.tensor([[3.0, 1.0, math.nan, 2.0]], device=device)
    values, indices = ops.topk_per_level(scores, 6, 1.0)
    assert values.tolist() == [[[3.0, 2.0] + [-math.inf] * 4]] and indices.tolist() == [[[0, 3] + [-1] * 4]]
    values, indices = ops.topk_per_level(torch.empty(0, 5, 3, device=device), 4, None, [2, 3])
    assert values.shape == indices.shape == (0, 2, 4)
    values, indices = ops.topk_per_level(scores, 0)
    assert values.shape == (1, 1, 0) and indices.dtype == torch.int64


@pytest.mark.cuda
def test_topk_per_level_cuda_equals_cpu():
    g = torch.Generator().manual_seed(1)
    scores = (torch.randn(2, 90_000, 11, generator=g) * 4).round() / 4
    sizes = [60_000, 20_000, 10_000]
    for threshold in (None, 1.0):
        for ours, ref in zip(
            ops.topk_per_level(scores.cuda(), 300, threshold, sizes),
            ops.topk_per_level(scores, 300, threshold, sizes),
            strict=True,
        ):
            assert_same(ours.cpu(), ref)


# ---- soft_nms ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["naive", "linear", "gaussian"])
@pytest.mark.parametrize("offset", [0, 1])
@given(
    data=scored_boxes(max_n=30),
    t=st.sampled_from([0.1, 0.3, 0.5]),
    min_score=st.sampled_from([0.0, 1e-3, 0.2]),
)
def test_soft_nms_equals_mmcv_procedure(method, offset, data, t, min_score, device):
    boxes, scores = data
    boxes, scores = boxes.float().to(device), scores.float().to(device)
    dets, keep = ops.soft_nms(boxes, scores, t, 0.5, min_score, method, offset)
    rdets, rkeep = R.soft_nms(boxes, scores, t, 0.5, min_score, method, offset)
    assert_same(keep, rkeep)
    assert_same(dets, rdets.to(dets.dtype), atol=1e-6, rtol=1e-5)


def test_soft_nms_example(device):
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.0]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95], device=device)
    dets, keep = ops.soft_nms(boxes, scores, 0.3, 0.5, 1e-3, "linear")
    assert keep.tolist() == [3, 2, 1]  # box 0 decays to 0 (IoU 1), box 1 to 0.8 * (1 - 81/119)
    assert dets[2, 4].item() == pytest.approx(0.8 * (1 - 81 / 119), rel=1e-6)


# ---- rotated -----------------------------------------------------------------------------------
def rotated(n, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g) * 100
    wh = 2 + torch.rand(n, 2, generator=g) * 30
    a = (torch.rand(n, 1, generator=g) - 0.5) * 360
    return torch.cat([c, wh, a], 1).to(device)


def test_rotated_iou_at_zero_angle_equals_axis_aligned_iou(device):
    r1, r2 = rotated(40, 1, device), rotated(50, 2, device)
    r1[:, 4] = 0
    r2[:, 4] = 0
    xyxy = lambda r: ops.box_convert(r[:, :4].double(), "cxcywh", "xyxy")  # noqa: E731
    torch.testing.assert_close(ops.box_iou_rotated(r1.double(), r2.double()), ops.box_iou(xyxy(r1), xyxy(r2)))


def test_rotated_iou_geometry(device):
    r = torch.tensor(
        [
            [5, 3, 4, 2, -90],
            [5, 3, 4, 2, 90],
            [5, 3, 2, 4, 0],
            [5, 3, 4, 2, 0],
            [5, 3, 4, 4, 45],
            [50, 50, 1, 1, 0.0],
        ],
        device=device,
    )
    iou = ops.box_iou_rotated(r, r)
    assert torch.allclose(iou.diagonal(), torch.ones(6, device=device))
    assert iou[0, 1].item() == pytest.approx(1.0, abs=1e-6)  # detectron2's documented example
    assert iou[0, 2].item() == pytest.approx(1.0, abs=1e-6)  # 4x2 turned 90 degrees = 2x4
    assert iou[2, 3].item() == pytest.approx(4 / 12, abs=1e-6)  # a 2x4 and a 4x2 cross
    assert iou[3, 5].item() == 0.0
    square = torch.tensor([[0, 0, 2, 2, 0], [0, 0, 2, 2, 45.0]], device=device, dtype=torch.float64)
    octagon = 8 * (math.sqrt(2) - 1)  # overlap of a square and itself turned 45 degrees
    assert ops.box_iou_rotated(square, square)[0, 1].item() == pytest.approx(
        octagon / (8 - octagon), rel=1e-12
    )


def test_rotated_iou_is_symmetric_and_invariant(device):
    r1, r2 = rotated(30, 3, device).double(), rotated(30, 4, device).double()
    iou = ops.box_iou_rotated(r1, r2)
    torch.testing.assert_close(iou, ops.box_iou_rotated(r2, r1).t())
    shift = torch.tensor([13.0, -7.0, 0, 0, 0], dtype=torch.float64, device=device)
    torch.testing.assert_close(iou, ops.box_iou_rotated(r1 + shift, r2 + shift))
    turn = torch.tensor([0, 0, 0, 0, 180.0], dtype=torch.float64, device=device)
    torch.testing.assert_close(iou, ops.box_iou_rotated(r1 + turn, r2))


def test_nms_rotated_equals_greedy_on_rotated_iou(device):
    boxes = rotated(300, 5, device)
    boxes[:, 2:4] *= 2
    scores = torch.rand(300, generator=torch.Generator().manual_seed(0)).to(device)
    iou = ops.box_iou_rotated(boxes, boxes)
    for t in (0.1, 0.5):
        order = torch.sort(scores, descending=True, stable=True).indices
        suppressed = torch.zeros(300, dtype=torch.bool, device=device)
        keep = []
        for i in order.tolist():
            if not suppressed[i]:
                keep.append(i)
                suppressed |= iou[i].double() > t
        assert ops.nms_rotated(boxes, scores, t).tolist() == keep
    idxs = torch.arange(300, device=device) % 3
    per_class = torch.cat(
        [
            torch.where(idxs == c)[0][ops.nms_rotated(boxes[idxs == c], scores[idxs == c], 0.3)]
            for c in range(3)
        ]
    )
    assert_same(ops.batched_nms_rotated(boxes, scores, idxs, 0.3), R._by_score(per_class, scores))


# ---- CUDA ----------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_equals_cpu():
    for make in (image_boxes, clustered_boxes):
        boxes, scores = make(30_000, seed=9)
        assert_same(ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), ops.nms(boxes, scores, 0.5))
        idxs = torch.randint(0, 80, (30_000,), generator=torch.Generator().manual_seed(1))
        assert_same(
            ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu(),
            ops.batched_nms(boxes, scores, idxs, 0.5),
        )
        d, k = ops.soft_nms(boxes[:2000], scores[:2000], 0.3, 0.5, 0.01, "gaussian")
        dc, kc = ops.soft_nms(boxes[:2000].cuda(), scores[:2000].cuda(), 0.3, 0.5, 0.01, "gaussian")
        assert_same(kc.cpu(), k)
        assert_same(dc.cpu(), d, atol=1e-6, rtol=1e-5)
    boxes, scores = detector_output(8, 8732, 91, seed=3)
    for ours, cuda in zip(
        ops.multiclass_nms(boxes, scores, 0.01, 0.45, 400, 200, background_class=0),
        ops.multiclass_nms(boxes.cuda(), scores.cuda(), 0.01, 0.45, 400, 200, background_class=0),
        strict=True,
    ):
        assert_same(cuda.cpu(), ours)
    flat = scores[..., 1:].amax(-1)  # the labels form, as RetinaNet calls it
    labels = scores[..., 1:].argmax(-1) + 1
    for ours, cuda in zip(
        ops.multiclass_nms(boxes, flat, 0.01, 0.45, -1, 200, labels=labels, num_classes=91),
        ops.multiclass_nms(
            boxes.cuda(), flat.cuda(), 0.01, 0.45, -1, 200, labels=labels.cuda(), num_classes=91
        ),
        strict=True,
    ):
        assert_same(cuda.cpu(), ours)
    r = rotated(2000, 1)
    s = torch.rand(2000)
    assert_same(ops.nms_rotated(r.cuda(), s.cuda(), 0.3).cpu(), ops.nms_rotated(r, s, 0.3))
    assert_same(ops.box_iou_rotated(r.cuda(), r.cuda()).cpu(), ops.box_iou_rotated(r, r), atol=1e-6, rtol=0)


@pytest.mark.cuda
def test_multiclass_nms_in_a_cuda_graph():
    """SSD300 post-processing (8 x 8,732 x 91) captured in a CUDA graph: capture fails on any host
    synchronisation, and each replay on new inputs gives the eager (CPU) result."""
    boxes, scores = (t.cuda() for t in detector_output(8, 8732, 91, seed=5))
    args = (0.01, 0.45, 400, 200)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph (workspace allocations), as torch advises
        ops.multiclass_nms(boxes, scores, *args, background_class=0)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ops.multiclass_nms(boxes, scores, *args, background_class=0)
    for seed in (6, 7):
        new_boxes, new_scores = detector_output(8, 8732, 91, seed=seed)
        boxes.copy_(new_boxes)
        scores.copy_(new_scores)
        graph.replay()
        expected = ops.multiclass_nms(new_boxes, new_scores, *args, background_class=0)
        for got, want in zip(captured, expected, strict=True):
            assert_same(got.cpu(), want)


@pytest.mark.slow
def test_nms_200k_boxes_exact():
    """200,000 boxes: the keep list is exactly greedy NMS's, checked through its characterisation (no
    two kept boxes overlap above the threshold; every other box overlaps a kept box that ranks before
    it), in chunks -- the reference never holds the 200,000^2 matrix either."""
    boxes, scores = image_boxes(200_000, seed=11)
    keep = ops.nms(boxes, scores, 0.5)
    rank = torch.empty(200_000, dtype=torch.int64)
    rank[torch.sort(-scores, stable=True).indices] = torch.arange(200_000)
    assert torch.equal(rank[keep], torch.sort(rank[keep]).values)  # kept in rank order
    kept = torch.zeros(200_000, dtype=torch.bool)
    kept[keep] = True
    others = torch.where(~kept)[0]
    assert 0 < len(keep) < 200_000
    for start in range(0, len(keep), 4096):
        rows = keep[start : start + 4096]
        iou = ops.box_iou(boxes[rows], boxes[keep])
        iou[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = 0  # a box with itself
        assert (iou <= 0.5).all()
    for rows in others.split(4096):
        above = ops.box_iou(boxes[rows], boxes[keep]) > 0.5
        assert (above & (rank[keep][None] < rank[rows][:, None])).any(1).all()


# ---- compile / export ------------------------------------------------------------------------------
class Postprocess(torch.nn.Module):
    def forward(self, boxes, scores):
        out = ops.multiclass_nms(boxes, scores, 0.1, 0.5, 20, 30, background_class=0)
        return out.num_detections, out.boxes, out.scores, out.labels


def test_multiclass_nms_compiles_fullgraph_dynamic_and_exports(device):
    torch._dynamo.reset()
    model = Postprocess()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for b, n in ((2, 100), (3, 57)):
        boxes, scores = detector_output(b, n, 5, seed=n, device=device)
        for ours, ref in zip(compiled(boxes, scores), model(boxes, scores), strict=True):
            assert_same(ours, ref)
    boxes, scores = detector_output(2, 100, 5, seed=0, device=device)
    batch, anchors = torch.export.Dim("batch", min=1), torch.export.Dim("anchors", min=2)
    exported = torch.export.export(
        model, (boxes, scores), dynamic_shapes=({0: batch, 1: anchors}, {0: batch, 1: anchors})
    )
    other = detector_output(3, 41, 5, seed=3, device=device)
    for ours, ref in zip(exported.module()(*other), model(*other), strict=True):
        assert_same(ours, ref)


def test_nms_compiles_with_dynamic_output(device):
    torch._dynamo.reset()
    f = torch.compile(lambda b, s: ops.nms(b, s, 0.5), fullgraph=True, dynamic=True)
    boxes, scores = image_boxes(800, seed=2)
    assert_same(f(boxes.to(device), scores.to(device)), ops.nms(boxes.to(device), scores.to(device), 0.5))
