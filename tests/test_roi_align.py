"""roi_align against a plain float64 reference (torchvision's algorithm written as loops), with its
edge cases, gradients, layouts, dtypes, autocast and bad input. torchvision's own kernel is compared
bit for bit in test_torchvision_parity.py."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pydet.ops as ops
from pydet.layers import RoIAlign


def _axis(first, last, scale, aligned, pooled, ratio):
    """(start, bin, grid) of one axis, as torchvision computes them (Python floats are float64)."""
    offset = 0.5 if aligned else 0.0
    start, end = first * scale - offset, last * scale - offset
    size = end - start
    if not aligned:
        size = max(size, 1.0)
    bin_size = size / pooled
    grid = ratio if ratio > 0 else math.ceil(size / pooled)
    return start, bin_size, grid


def _taps(v, extent):
    """Bilinear (low, high, weight of high, weight of low) on one axis, or None outside [-1, extent]."""
    if v < -1.0 or v > extent or extent == 0:
        return None
    v = max(v, 0.0)
    low = int(v)
    if low >= extent - 1:
        low = high = extent - 1
        v = float(low)
    else:
        high = low + 1
    frac = v - low
    return low, high, frac, 1.0 - frac


def _bilinear(image, ty, tx):
    """The bilinear sample of ``image [..., H, W]`` from one tap pair per axis (``_taps``), in the order
    the kernels add the four corners."""
    (yl, yh, ly, hy), (xl, xh, lx, hx) = ty, tx
    return (
        hy * hx * image[..., yl, xl]
        + hy * lx * image[..., yl, xh]
        + ly * hx * image[..., yh, xl]
        + ly * lx * image[..., yh, xh]
    )


def reference(input, rois, pooled, scale, ratio, aligned):
    """Plain loops over RoIs, bins and samples (channels as one vector), in float64; differentiable in input."""
    ph_n, pw_n = pooled
    x = input.double()
    _, c, h, w = x.shape
    out = []
    for roi in rois.double().tolist():
        b = int(roi[0])
        ys, yb, gy = _axis(roi[2], roi[4], scale, aligned, ph_n, ratio)
        xs, xb, gx = _axis(roi[1], roi[3], scale, aligned, pw_n, ratio)
        count = max(gy * gx, 1)
        bins = []
        for ph in range(ph_n):
            for pw in range(pw_n):
                total = x.new_zeros(c)
                for iy in range(max(gy, 0)):
                    ty = _taps(ys + ph * yb + (iy + 0.5) * yb / gy, h)
                    for ix in range(max(gx, 0)):
                        tx = _taps(xs + pw * xb + (ix + 0.5) * xb / gx, w)
                        if ty is None or tx is None:
                            continue
                        total = total + _bilinear(x[b], ty, tx)
                bins.append(total / count)
        out.append(torch.stack(bins, 1).reshape(c, ph_n, pw_n) if bins else x.new_zeros(c, ph_n, pw_n))
    return torch.stack(out) if out else x.new_zeros(0, c, ph_n, pw_n)


def make_rois(k, n, size, seed=0, spread=1.5):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * size * spread - size * 0.25
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * size * 0.75
    index = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([index, xy, xy + wh], 1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [-1, 0, 1, 2, 4])
def test_matches_reference_float64_exactly(aligned, ratio):
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rois = make_rois(12, 2, 24, seed=ratio + 7)
    got = ops.roi_align(x, rois, (3, 4), 0.5, ratio, aligned)
    torch.testing.assert_close(got, reference(x, rois, (3, 4), 0.5, ratio, aligned), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lower_precision_close_to_float64(dtype):
    x = torch.randn(2, 4, 10, 12, generator=torch.Generator().manual_seed(2))
    rois = make_rois(9, 2, 40, seed=3)
    got = ops.roi_align(x.to(dtype), rois.to(dtype), 5, 0.25, -1, True)
    assert got.dtype == dtype
    want = reference(x.to(dtype), rois.to(dtype), (5, 5), 0.25, -1, True)
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_gradients():
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = make_rois(5, 2, 8, seed=4)
    for aligned, ratio in ((False, 2), (True, -1)):

        def pool(t, aligned=aligned, ratio=ratio):
            return ops.roi_align(t, rois, (2, 3), 1.0, ratio, aligned)

        torch.autograd.gradcheck(pool, (x,))
        torch.autograd.gradgradcheck(pool, (x,))
    got = torch.autograd.grad(ops.roi_align(x, rois, 3, 1.0, 2, True).sum(), x)[0]
    want = torch.autograd.grad(reference(x, rois, (3, 3), 1.0, 2, True).sum(), x)[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gradients_do_not_depend_on_threads():
    x = torch.randn(2, 64, 30, 40, requires_grad=True)
    rois = make_rois(300, 2, 120, seed=5).float()
    grads = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = ops.roi_align(x, rois, 7, 0.25, 2, False)
            grads.append((out, torch.autograd.grad(out, x, torch.ones_like(out))[0]))
        finally:
            torch.set_num_threads(previous)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


@st.composite
def roi_cases(draw):
    n = draw(st.integers(1, 2))
    # float64 blocks hold 8 channels: 19 = two whole blocks (channels_last: read in place) and a part
    c = draw(st.sampled_from([1, 3, 8, 19]))
    h, w = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    k = draw(st.integers(0, 5))
    coordinate = st.one_of(
        st.floats(-20, 30, allow_nan=False),
        st.sampled_from([0.0, 0.5, 1.0, -1.0, float(w), float(h), 1e-30, -1e-30]),
        st.integers(-5, 12).map(float),
    )
    rows = []
    for _ in range(k):
        x1, y1 = draw(coordinate), draw(coordinate)
        x2 = x1 + draw(st.one_of(st.floats(-3, 20), st.just(0.0), st.floats(0, 1e-3)))
        y2 = y1 + draw(st.one_of(st.floats(-3, 20), st.just(0.0), st.floats(0, 1e-3)))
        rows.append([float(draw(st.integers(0, n - 1))), x1, y1, x2, y2])
    pooled = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 2.0]))
    ratio = draw(st.sampled_from([-1, 0, 1, 2, 4]))
    aligned = draw(st.booleans())
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    return n, c, h, w, rows, pooled, scale, ratio, aligned, layout


@settings(max_examples=150, deadline=None)
@given(roi_cases())
def test_property_matches_reference(case):
    n, c, h, w, rows, pooled, scale, ratio, aligned, layout = case
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(len(rows)))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.stack([x, x], -1)[..., 0]
    rois = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
    x.requires_grad_()
    got = ops.roi_align(x, rois, pooled, scale, ratio, aligned)
    want = reference(x, rois, pooled, scale, ratio, aligned)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if got.numel():
        g = torch.randn_like(got)
        gx = torch.autograd.grad(got, x, g)[0]
        wx = torch.autograd.grad(want, x, g)[0] if want.requires_grad else torch.zeros_like(x)
        torch.testing.assert_close(gx, wx, rtol=1e-12, atol=1e-12)


def test_list_of_boxes_equals_rois_tensor():
    x = torch.randn(3, 2, 12, 12)
    boxes = [make_rois(4, 1, 40, seed=s)[:, 1:].float() for s in range(3)]
    rois = torch.cat([torch.cat([torch.full((4, 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    assert torch.equal(ops.roi_align(x, boxes, 3, 0.25), ops.roi_align(x, rois, 3, 0.25))
    module = RoIAlign(3, 0.25, -1)
    assert torch.equal(module(x, boxes), ops.roi_align(x, rois, 3, 0.25))
    assert "output_size=(3, 3)" in repr(module)


def test_empty_and_degenerate_inputs():
    x = torch.randn(2, 3, 8, 8)
    assert ops.roi_align(x, torch.zeros(0, 5), 4).shape == (0, 3, 4, 4)
    rois = torch.tensor([[1.0, 1.0, 1.0, 5.0, 5.0]])
    assert ops.roi_align(x[:, :0], rois, 2).shape == (1, 0, 2, 2)
    assert torch.equal(ops.roi_align(x[:, :, :0], rois, 2), torch.zeros(1, 3, 2, 2))  # no pixels: zeros
    outside = torch.tensor([[0.0, 100.0, 100.0, 120.0, 120.0]])
    assert torch.equal(ops.roi_align(x, outside, 2, 1.0, 2), torch.zeros(1, 3, 2, 2))


def test_non_finite_rois_give_nan_bins_and_no_gradient():
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    inf, nan = math.inf, math.nan
    rois = torch.tensor([[0.0, nan, 1, 4, 4], [0, 1, 1, inf, 4], [0, -inf, 1, 2, 2], [0, 3e38, 0, -3e38, 2]])
    finite = torch.tensor([[0.0, 1, 1, 5, 6]])
    for ratio in (-1, 2):
        out = ops.roi_align(x, torch.cat([rois, finite]), 2, 1.0, ratio, True)
        assert out[:4].isnan().all() and out[4].isfinite().all()
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
        (alone,) = torch.autograd.grad(ops.roi_align(x, finite, 2, 1.0, ratio, True).sum(), x)
        assert torch.equal(grad, alone)
    assert ops.roi_align(x, finite, 2, float("nan")).isnan().all()


def test_huge_rois_finish_quickly():
    """An adaptive grid of 1e29 samples per bin: only the samples inside the image are visited."""
    x = torch.randn(1, 2, 16, 16)
    rois = torch.tensor([[0.0, -1e30, -1e30, 1e30, 1e30], [0, -1e6, 3, 1e6, 9], [0, 2, 2, 2e9, 2e9]])
    out = ops.roi_align(x, rois, 3, 1.0, -1, False)
    assert out.shape == (3, 2, 3, 3) and out.isfinite().all()


def test_bad_batch_index():
    x = torch.randn(2, 1, 4, 4)
    for index in (2.0, -1.0, 0.5, math.nan):
        with pytest.raises(
            ValueError, match=r"pydet.roi_align: rois\[1, 0\] must be an integer batch index in \[0, 2\)"
        ):
            ops.roi_align(x, torch.tensor([[0.0, 0, 0, 1, 1], [index, 0, 0, 1, 1]]), 2)


def test_argument_errors():
    x = torch.randn(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 0, 0, 2, 2]])
    with pytest.raises(ValueError, match="rois must have shape"):
        ops.roi_align(x, rois[:, :4], 2)
    with pytest.raises(ValueError, match=r"boxes\[0\] must have shape \[L, 4\]"):
        ops.roi_align(x, [rois], 2)
    with pytest.raises(TypeError, match="rois must have input's dtype"):
        ops.roi_align(x, rois.double(), 2)
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        ops.roi_align(x.int(), rois, 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        ops.roi_align(x, rois, (2, 0))
    with pytest.raises(ValueError, match=r"input must have shape \[N, C, H, W\]"):
        ops.roi_align(x[0], rois, 2)


def test_autocast_computes_in_float32_and_returns_input_dtype():
    x = torch.randn(1, 3, 9, 9)
    rois = torch.tensor([[0.0, 1, 1, 7, 6]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.roi_align(x, rois, 3).dtype == torch.float32
        half = ops.roi_align(x.half(), rois.half(), 3)
    assert half.dtype == torch.float16
    assert torch.equal(half, ops.roi_align(x.half().float(), rois.half().float(), 3).half())


# ---- multi_scale_roi_align -------------------------------------------------------------------------
def _pyramid(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 24 // 2**i, 32 // 2**i, generator=g, dtype=dtype) for i in range(3)]


def test_multi_scale_equals_roi_align_per_level():
    """One call over all levels = roi_align of each level's RoIs on it (torchvision's loop), values and gradients."""
    features = [f.requires_grad_() for f in _pyramid()]
    scales = [0.25, 0.125, 0.0625]
    rois = make_rois(30, 2, 120, seed=8)
    levels = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(9))
    out = ops.multi_scale_roi_align(features, rois, levels, scales, (3, 2), 2, True)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, features, grad)
    expected = torch.zeros_like(out)
    for level, (f, scale) in enumerate(zip(features, scales, strict=True)):
        pick = levels == level
        expected[pick] = ops.roi_align(f, rois[pick], (3, 2), scale, 2, True)
    expected_grads = torch.autograd.grad(expected, features, grad)
    assert torch.equal(out, expected)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.equal(got, want)


def test_multi_scale_gradcheck_and_errors():
    features = [f[:, :2, :8, :8].contiguous().requires_grad_() for f in _pyramid()]
    rois = make_rois(4, 2, 20, seed=3)
    levels = torch.tensor([0, 2, 1, 0])

    def pool(*fs):
        return ops.multi_scale_roi_align(list(fs), rois, levels, [1.0, 0.5, 0.25], 2, -1, False)

    torch.autograd.gradcheck(pool, tuple(features))
    with pytest.raises(ValueError, match=r"levels\[1\] must be in \[0, 3\)"):
        ops.multi_scale_roi_align(features, rois, torch.tensor([0, 3, 1, 0]), [1.0, 0.5, 0.25], 2)
    with pytest.raises(ValueError, match="spatial_scales must have one scale per feature map"):
        ops.multi_scale_roi_align(features, rois, levels, [1.0, 0.5], 2)
    with pytest.raises(
        ValueError, match=r"features\[1\] must have the batch size and channels of features\[0\]"
    ):
        ops.multi_scale_roi_align([features[0], features[1][:, :1]], rois, levels.clamp(max=1), [1.0, 0.5], 2)
    with pytest.raises(TypeError, match=r"features\[2\] must have features\[0\]'s dtype"):
        ops.multi_scale_roi_align([*features[:2], features[2].float()], rois, levels, [1.0, 0.5, 0.25], 2)
    with pytest.raises(TypeError, match="levels must be an int64 tensor"):
        ops.multi_scale_roi_align(features, rois, levels.int(), [1.0, 0.5, 0.25], 2)
    with pytest.raises(ValueError, match="features must hold 1 to 8 feature maps"):
        ops.multi_scale_roi_align(features * 3, rois, levels, [1.0] * 9, 2)


def test_multi_scale_module_levels_and_single_level():
    from collections import OrderedDict

    from pydet.layers import MultiScaleRoIAlign, fpn_levels

    g = torch.Generator().manual_seed(4)
    x = OrderedDict((f"p{i}", torch.randn(1, 2, 256 // 2**i, 256 // 2**i, generator=g)) for i in range(2, 5))
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 250.0, 250.0], [3.0, 5.0, 200.0, 160.0]])]
    levels = fpn_levels(boxes, 2, 4)
    assert levels.tolist() == [0, 2, 1]
    pooled = MultiScaleRoIAlign(["p2", "p3", "p4"], 3, 2)(x, boxes, [(256, 256)])
    for k, level in enumerate(levels.tolist()):
        feature = x[f"p{level + 2}"]
        rois = torch.cat([torch.zeros(1, 1), boxes[0][k : k + 1]], 1)
        assert torch.equal(pooled[k : k + 1], ops.roi_align(feature, rois, 3, 2.0 ** -(level + 2), 2))
    single = MultiScaleRoIAlign(["p3"], 3, 2)(x, boxes, [(256, 256)])
    assert torch.equal(single, ops.roi_align(x["p3"], boxes, 3, 0.125, 2))


def test_detectron2_roialign_module():
    from pydet.layers import ROIAlign

    x = torch.randn(2, 3, 10, 12)
    rois = make_rois(6, 2, 40, seed=12)  # float64 rois: detectron2 casts them to the input's dtype
    module = ROIAlign((4, 3), 0.25, 0)
    assert module.aligned
    assert torch.equal(module(x, rois), ops.roi_align(x, rois.float(), (4, 3), 0.25, 0, True))
    with pytest.raises(ValueError, match=r"rois must have shape \[K, 5\]"):
        module(x, rois[:, 1:])


def test_detectron2_roi_pooler():
    """detectron2's ROIPooler: its level rule (1e-8 inside the log, where torchvision adds 1e-6 to the
    level), then every pooler type equals its op called level by level."""
    from pydet.layers import ROIAlignRotated, ROIPooler, assign_boxes_to_levels, fpn_levels

    # a side just under 224 px: log2(side / 224) is -7e-7, which torchvision's + 1e-6 lifts to level 4
    # and detectron2's + 1e-8 inside the log leaves at level 3; sides 112 and 111.99 straddle 3 and 2
    boxes = [
        torch.tensor(
            [
                [0.0, 0.0, 223.9999, 223.9999],
                [0.0, 0.0, 112.0, 112.0],
                [0.0, 0.0, 111.99, 111.99],
                [5, 5, 600, 500],
            ]
        )
    ]
    assert assign_boxes_to_levels(boxes, 2, 5, 224, 4).tolist() == [1, 1, 0, 3]
    assert fpn_levels(boxes, 2, 5).tolist() == [2, 1, 0, 3]
    g = torch.Generator().manual_seed(6)
    x = [torch.randn(2, 3, 256 >> i, 320 >> i, generator=g) for i in range(2, 6)]
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    xy = torch.rand(2, 30, 2, generator=g) * 300
    box_lists = [torch.cat([xy[i], xy[i] + 8 + torch.rand(30, 2, generator=g) * 500], 1) for i in range(2)]
    rois = torch.cat([torch.cat([torch.full((30, 1), float(i)), b], 1) for i, b in enumerate(box_lists)])
    levels = assign_boxes_to_levels(box_lists, 2, 5, 224, 4)
    assert len(set(levels.tolist())) == 4
    for pooler_type in ("ROIAlign", "ROIAlignV2", "ROIPool"):
        pooled = ROIPooler(7, scales, 2, pooler_type)(x, box_lists)
        for level in range(4):
            pick = levels == level
            if pooler_type == "ROIPool":
                want = ops.roi_pool(x[level], rois[pick], 7, scales[level])
            else:
                want = ops.roi_align(x[level], rois[pick], 7, scales[level], 2, pooler_type == "ROIAlignV2")
            assert torch.equal(pooled[pick], want)
    rotated = [
        torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2], torch.full_like(b[:, :1], 30.0)], 1)
        for b in box_lists
    ]
    pooled = ROIPooler((5, 4), scales, 2, "ROIAlignRotated")(x, rotated)
    rotated_rois = torch.cat(
        [torch.cat([torch.full((30, 1), float(i)), b], 1) for i, b in enumerate(rotated)]
    )
    for level in range(4):
        pick = levels == level  # the same areas
        want = ROIAlignRotated((5, 4), scales[level], 2)(x[level], rotated_rois[pick])
        assert torch.equal(pooled[pick], want)
    assert ROIPooler(7, scales, 2, "ROIAlign")(x, [b[:0] for b in box_lists]).shape == (0, 3, 7, 7)
    with pytest.raises(ValueError, match=r"pydet.ROIPooler: pooler_type must be one of"):
        ROIPooler(7, scales, 2, "ROIAlignV3")
    with pytest.raises(ValueError, match=r"pydet.ROIPooler: scales must be powers of 2"):
        ROIPooler(7, [1 / 3], 2, "ROIAlign")
    with pytest.raises(ValueError, match=r"pydet.ROIPooler: scales must form a pyramid"):
        ROIPooler(7, [1 / 4, 1 / 16], 2, "ROIAlign")
    with pytest.raises(ValueError, match=r"pydet.ROIPooler: box_lists must have one tensor per image \(2\)"):
        ROIPooler(7, scales, 2, "ROIAlign")(x, box_lists[:1])


def test_channels_last_read_in_place_equals_contiguous():
    """Whole 16-channel blocks of a channels_last float32 map are sampled in place, the last part block
    from a copy: both give the contiguous input's bits, over several levels too."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 40, 30, 44, generator=g)
    rois = make_rois(50, 2, 120, seed=13).float()
    cl = x.contiguous(memory_format=torch.channels_last)
    for aligned in (False, True):
        assert torch.equal(
            ops.roi_align(cl, rois, 5, 0.25, 2, aligned), ops.roi_align(x, rois, 5, 0.25, 2, aligned)
        )
    small = x[:, :, ::2, ::2].contiguous()
    levels = torch.randint(0, 2, (50,), generator=g)
    want = ops.multi_scale_roi_align([x, small], rois, levels, [0.25, 0.125], 4, 2)
    got = ops.multi_scale_roi_align(
        [cl, small.contiguous(memory_format=torch.channels_last)], rois, levels, [0.25, 0.125], 4, 2
    )
    assert torch.equal(got, want)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    """Every RoI op's CUDA kernel against its CPU kernel: values within rounding (the CUDA forwards sum
    each bin in the CPU's order; ps/max pooling's index outputs are compared through the values) and
    input gradients to rounding (the CUDA backwards add atomically)."""
    from test_roi_align_rotated import make_rotated

    g = torch.Generator().manual_seed(21)
    x = torch.randn(2, 12, 19, 23, generator=g, dtype=torch.float64).to(dtype)
    rois = make_rois(20, 2, 80, seed=22).to(dtype)
    rotated = make_rotated(20, 2, 80, seed=23).to(dtype)
    calls = [
        lambda t, r, _: ops.roi_align(t, r, (5, 4), 0.25, 2, True),
        lambda t, r, _: ops.roi_align(t, r, 3, 0.5, -1, False),
        lambda t, _, r: ops.roi_align_rotated(t, r, 3, 0.25, 2),
        lambda t, r, _: ops.roi_pool(t, r, 3, 0.25),
        lambda t, r, _: ops.ps_roi_pool(t, r, 2, 0.25),
        lambda t, r, _: ops.ps_roi_align(t, r, 2, 0.25, 2),
    ]
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for call in calls:
        results = []
        for device in ("cpu", "cuda"):
            leaf = x.to(device).requires_grad_()
            out = call(leaf, rois.to(device), rotated.to(device))
            results.append((out.cpu(), torch.autograd.grad(out, leaf, torch.ones_like(out))[0].cpu()))
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(b, a, rtol=tol, atol=tol, equal_nan=True)
