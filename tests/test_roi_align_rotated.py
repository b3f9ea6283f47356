"""roi_align_rotated (detectron2's ROIAlignRotated) against a plain float64 reference (detectron2's
algorithm written as loops), with its edge cases, gradients, dtypes and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_roi_align import _bilinear, _taps

import pydet.ops as ops
from pydet.layers import ROIAlignRotated


def reference(input, rois, pooled, scale, ratio):
    """detectron2's ROIAlignRotated as loops in float64 (Python floats); differentiable in input."""
    ph_n, pw_n = pooled
    x = input.double()
    _, c, h, w = x.shape
    out = []
    for b, cx, cy, rw, rh, angle in rois.double().tolist():
        cw, ch = cx * scale - 0.5, cy * scale - 0.5
        rw, rh = rw * scale, rh * scale
        theta = angle * math.pi / 180.0
        cos, sin = math.cos(theta), math.sin(theta)
        bh, bw = rh / ph_n, rw / pw_n
        gy = ratio if ratio > 0 else math.ceil(rh / ph_n)
        gx = ratio if ratio > 0 else math.ceil(rw / pw_n)
        count = max(gy * gx, 1)
        bins = []
        for ph in range(ph_n):
            for pw in range(pw_n):
                total = x.new_zeros(c)
                for iy in range(gy):
                    yy = -rh / 2.0 + ph * bh + (iy + 0.5) * bh / gy
                    for ix in range(gx):
                        xx = -rw / 2.0 + pw * bw + (ix + 0.5) * bw / gx
                        ty = _taps(yy * cos - xx * sin + ch, h)
                        tx = _taps(yy * sin + xx * cos + cw, w)
                        if ty is None or tx is None:
                            continue
                        total = total + _bilinear(x[int(b)], ty, tx)
                bins.append(total / count)
        out.append(torch.stack(bins, 1).reshape(c, ph_n, pw_n))
    return torch.stack(out) if out else x.new_zeros(0, c, ph_n, pw_n)


def make_rotated(k, n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(k, 2, generator=g, dtype=torch.float64) * size * 1.2 - size * 0.1
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * size * 0.6
    angle = torch.rand(k, 1, generator=g, dtype=torch.float64) * 360 - 180
    index = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([index, centre, wh, angle], 1)


@pytest.mark.parametrize("ratio", [-1, 0, 1, 2])
def test_matches_reference_float64(ratio):
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_()
    rois = make_rotated(12, 2, 40, seed=ratio + 3)
    got = ops.roi_align_rotated(x, rois, (3, 4), 0.5, ratio)
    want = reference(x, rois, (3, 4), 0.5, ratio)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    g = torch.randn_like(got)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], rtol=1e-12, atol=1e-12
    )


@st.composite
def rotated_cases(draw):
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        cx, cy = draw(st.floats(-5, 15)), draw(st.floats(-5, 15))
        rw = draw(st.one_of(st.floats(0, 12), st.just(0.0)))
        rh = draw(st.one_of(st.floats(0, 12), st.just(0.0)))
        angle = draw(st.one_of(st.floats(-360, 360), st.sampled_from([0.0, 90.0, -90.0, 180.0, 45.0])))
        rows.append([float(draw(st.integers(0, n - 1))), cx, cy, rw, rh, angle])
    pooled = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return n, h, w, rows, pooled, draw(st.sampled_from([1.0, 0.5, 2.0])), draw(st.sampled_from([-1, 1, 2]))


@settings(max_examples=100, deadline=None)
@given(rotated_cases())
def test_property_matches_reference(case):
    n, h, w, rows, pooled, scale, ratio = case
    x = torch.randn(n, 2, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(len(rows)))
    rois = torch.tensor(rows, dtype=torch.float64).reshape(-1, 6)
    x.requires_grad_()
    got = ops.roi_align_rotated(x, rois, pooled, scale, ratio)
    want = reference(x, rois, pooled, scale, ratio)
    # the reference rotates in Python floats: cos/sin and the angle's conversion may differ by an ulp
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    if got.numel():
        g = torch.randn_like(got)
        gx = torch.autograd.grad(got, x, g)[0]
        wx = torch.autograd.grad(want, x, g)[0] if want.requires_grad else torch.zeros_like(x)
        torch.testing.assert_close(gx, wx, rtol=1e-9, atol=1e-9)


def test_axis_aligned_equals_roi_align():
    """At angle 0 the rotated RoI is roi_align's aligned=True RoI with the same centre and size."""
    x = torch.randn(2, 4, 30, 40, dtype=torch.float64)
    rotated = make_rotated(20, 2, 100, seed=3)
    rotated[:, 5] = 0
    boxes = torch.cat(
        [rotated[:, :1], rotated[:, 1:3] - rotated[:, 3:5] / 2, rotated[:, 1:3] + rotated[:, 3:5] / 2], 1
    )
    torch.testing.assert_close(
        ops.roi_align_rotated(x, rotated, 5, 0.25, 2),
        ops.roi_align(x, boxes, 5, 0.25, 2, True),
        rtol=0,
        atol=1e-12,
    )


def test_gradients_and_threads():
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64, requires_grad=True)
    rois = make_rotated(5, 2, 10, seed=4)
    torch.autograd.gradcheck(lambda t: ops.roi_align_rotated(t, rois, (2, 3), 1.0, 2), (x,))
    torch.autograd.gradgradcheck(lambda t: ops.roi_align_rotated(t, rois, 2, 1.0, -1), (x,))
    big = torch.randn(2, 40, 30, 40, requires_grad=True)
    many = make_rotated(200, 2, 120, seed=5).float()
    results = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = ops.roi_align_rotated(big, many, 7, 0.25, 2)
            results.append((out, torch.autograd.grad(out, big, torch.ones_like(out))[0]))
        finally:
            torch.set_num_threads(previous)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_degenerate_rois_and_errors():
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    nan, inf = math.nan, math.inf
    rois = torch.tensor(
        [[0.0, nan, 3, 4, 4, 0], [0, 3, 3, inf, 4, 0], [0, 3, 3, 4, 4, inf], [0, 4, 4, 3, 5, 30]]
    )
    out = ops.roi_align_rotated(x, rois, 2, 1.0, 2)
    assert out[:3].isnan().all() and out[3].isfinite().all()
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    (alone,) = torch.autograd.grad(ops.roi_align_rotated(x, rois[3:], 2, 1.0, 2).sum(), x)
    assert torch.equal(grad, alone)
    huge = torch.tensor([[0.0, 4, 4, 1e9, 1e9, 10]])
    assert ops.roi_align_rotated(x, huge, 2).isfinite().all()  # adaptive grid capped: finishes
    assert ops.roi_align_rotated(x, rois[:0], 2).shape == (0, 2, 2, 2)
    with pytest.raises(ValueError, match=r"pydet.roi_align_rotated: rois\[0, 3:5\] \(w, h\) must be >= 0"):
        ops.roi_align_rotated(x, torch.tensor([[0.0, 3, 3, -1, 4, 0]]), 2)
    with pytest.raises(ValueError, match=r"rois\[0, 0\] must be an integer batch index in \[0, 1\)"):
        ops.roi_align_rotated(x, torch.tensor([[1.0, 3, 3, 1, 4, 0]]), 2)
    with pytest.raises(ValueError, match=r"rois must have shape \[K, 6\]"):
        ops.roi_align_rotated(x, rois[:, :5], 2)
    with pytest.raises(ValueError, match=r"pydet.ROIAlignRotated: rois must have shape \[K, 6\]"):
        ROIAlignRotated(2, 1.0, 2)(x, rois[:, :5])


def test_module_and_dtypes():
    x = torch.randn(2, 3, 12, 12)
    rois = make_rotated(6, 2, 40, seed=6).float()
    module = ROIAlignRotated((3, 2), 0.25, 2)
    assert torch.equal(module(x, rois), ops.roi_align_rotated(x, rois, (3, 2), 0.25, 2))
    half = module(x.half(), rois.half())
    assert half.dtype == torch.float16  # pooled in float32, as detectron2's module does
    assert torch.equal(
        half, ops.roi_align_rotated(x.half().float(), rois.half().float(), (3, 2), 0.25, 2).half()
    )
    for dtype in (torch.float16, torch.bfloat16):
        low = ops.roi_align_rotated(x.to(dtype), rois.to(dtype), 3, 0.25, 2)
        want = ops.roi_align_rotated(x.to(dtype).double(), rois.to(dtype).double(), 3, 0.25, 2)
        torch.testing.assert_close(low.double(), want, rtol=3e-2, atol=3e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.roi_align_rotated(x, rois, 3).dtype == torch.float32
