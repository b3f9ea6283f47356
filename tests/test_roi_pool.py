"""roi_pool, ps_roi_pool and ps_roi_align against plain float64 references (torchvision's algorithms
written as loops), with their edge cases, gradients, dtypes, autocast and bad input. torchvision's own
kernels are compared bit for bit in test_torchvision_parity.py."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_roi_align import _axis, _bilinear, _taps, make_rois

import pydet.ops as ops
from pydet.layers import PSRoIAlign, PSRoIPool, RoIPool

FLT_MAX = 3.4028234663852886e38


def _round(v):
    """C's round: half away from zero (Python's round is half to even)."""
    a = abs(v)
    r = math.floor(a)
    if a - r >= 0.5:
        r += 1
    return math.copysign(r, v)


def _bins(first, last, scale, pooled, extra, limit):
    """[(begin, end)] pixel bounds of each bin of one axis, as torchvision computes them."""
    start, end = int(_round(first * scale)), int(_round(last * scale))
    size = max(end - start + extra, 1)
    bin_size = size / pooled
    clip = lambda v: min(max(v + start, 0), limit)  # noqa: E731
    return [(clip(math.floor(p * bin_size)), clip(math.ceil((p + 1) * bin_size))) for p in range(pooled)]


def reference_roi_pool(x, rois, pooled):
    """roi_pool in float64 (spatial scale folded into the rois); differentiable in x."""
    ph_n, pw_n = pooled
    _, c, h, w = x.shape
    out = []
    for roi in rois.tolist():
        b = int(roi[0])
        ys, xs = _bins(roi[2], roi[4], 1.0, ph_n, 1, h), _bins(roi[1], roi[3], 1.0, pw_n, 1, w)
        bins = []
        for y0, y1 in ys:
            for x0, x1 in xs:
                if y1 <= y0 or x1 <= x0:
                    bins.append(x.new_zeros(c))
                    continue
                best = x[b, :, y0:y1, x0:x1].flatten(1).max(1).values
                bins.append(best.clamp(min=-FLT_MAX))
        out.append(torch.stack(bins, 1).reshape(c, ph_n, pw_n))
    return torch.stack(out) if out else x.new_zeros(0, c, ph_n, pw_n)


def reference_ps_roi_pool(x, rois, pooled):
    ph_n, pw_n = pooled
    _, c, h, w = x.shape
    c_out = c // (ph_n * pw_n)
    out = []
    for roi in rois.tolist():
        b = int(roi[0])
        ys, xs = _bins(roi[2], roi[4], 1.0, ph_n, 0, h - 1), _bins(roi[1], roi[3], 1.0, pw_n, 0, w - 1)
        bins = []
        for co in range(c_out):
            for ph, (y0, y1) in enumerate(ys):
                for pw, (x0, x1) in enumerate(xs):
                    channel = (co * ph_n + ph) * pw_n + pw
                    empty = y1 <= y0 or x1 <= x0
                    total = x.new_zeros(())
                    for v in x[b, channel, y0:y1, x0:x1].flatten():  # row-major, one by one
                        total = total + v
                    bins.append(x.new_zeros(()) if empty else total / ((y1 - y0) * (x1 - x0)))
        out.append(torch.stack(bins).reshape(c_out, ph_n, pw_n))
    return torch.stack(out) if out else x.new_zeros(0, c_out, ph_n, pw_n)


def reference_ps_roi_align(x, rois, pooled, scale, ratio):
    ph_n, pw_n = pooled
    _, c, h, w = x.shape
    c_out = c // (ph_n * pw_n)
    out = []
    for roi in rois.tolist():
        b = int(roi[0])
        ys, yb, gy = _axis(roi[2], roi[4], scale, True, ph_n, ratio)
        xs, xb, gx = _axis(roi[1], roi[3], scale, True, pw_n, ratio)
        count = gy * gx  # no floor of 1, as torchvision's ps_roi_align
        bins = []
        for co in range(c_out):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    plane = x[b, (co * ph_n + ph) * pw_n + pw]
                    total = x.new_zeros(())
                    for iy in range(max(gy, 0)):
                        ty = _taps(ys + ph * yb + (iy + 0.5) * yb / gy, h)
                        for ix in range(max(gx, 0)):
                            tx = _taps(xs + pw * xb + (ix + 0.5) * xb / gx, w)
                            if ty is None or tx is None:
                                continue
                            total = total + _bilinear(plane, ty, tx)
                    bins.append(total / count if count else total * math.nan)
        out.append(torch.stack(bins).reshape(c_out, ph_n, pw_n))
    return torch.stack(out) if out else x.new_zeros(0, c_out, ph_n, pw_n)


def _run(name, x, rois, pooled, scale, ratio):
    """The op and its reference (which takes the spatial scale folded into the rois where it rounds)."""
    if name == "roi_pool":
        scaled = torch.cat([rois[:, :1], rois[:, 1:] * scale], 1)
        return ops.roi_pool(x, rois, pooled, scale), reference_roi_pool(x, scaled, pooled)
    if name == "ps_roi_pool":
        scaled = torch.cat([rois[:, :1], rois[:, 1:] * scale], 1)
        return ops.ps_roi_pool(x, rois, pooled, scale), reference_ps_roi_pool(x, scaled, pooled)
    return ops.ps_roi_align(x, rois, pooled, scale, ratio), reference_ps_roi_align(
        x, rois, pooled, scale, ratio
    )


OPS = ["roi_pool", "ps_roi_pool", "ps_roi_align"]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("ratio", [-1, 2])
def test_matches_reference_float64(name, ratio):
    x = torch.randn(2, 12, 11, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_()
    rois = make_rois(10, 2, 24, seed=ratio + 7)
    got, want = _run(name, x, rois, (2, 3), 0.5, ratio)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    g = torch.randn_like(got)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], rtol=1e-12, atol=1e-12
    )


@st.composite
def pool_cases(draw):
    n = draw(st.integers(1, 2))
    pooled = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    c = pooled[0] * pooled[1] * draw(st.integers(1, 2))
    h, w = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    coordinate = st.one_of(
        st.floats(-20, 30, allow_nan=False),
        st.sampled_from([0.0, 0.5, 1.5, -0.5, 2.5, float(w), float(h), 1e-30]),
        st.integers(-5, 12).map(float),
    )
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        x1, y1 = draw(coordinate), draw(coordinate)
        x2 = x1 + draw(st.one_of(st.floats(-3, 20), st.just(0.0), st.sampled_from([0.5, 1.0, 2.5])))
        y2 = y1 + draw(st.one_of(st.floats(-3, 20), st.just(0.0), st.sampled_from([0.5, 1.0, 2.5])))
        rows.append([float(draw(st.integers(0, n - 1))), x1, y1, x2, y2])
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 2.0]))
    ratio = draw(st.sampled_from([-1, 0, 1, 2]))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    ties = draw(st.booleans())
    return draw(st.sampled_from(OPS)), n, c, h, w, rows, pooled, scale, ratio, layout, ties


@settings(max_examples=150, deadline=None)
@given(pool_cases())
def test_property_matches_reference(case):
    name, n, c, h, w, rows, pooled, scale, ratio, layout, ties = case
    g = torch.Generator().manual_seed(len(rows))
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g)
    if ties:  # few distinct values: roi_pool's first maximum wins
        x = x.round()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.stack([x, x], -1)[..., 0]
    rois = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
    x.requires_grad_()
    got, want = _run(name, x, rois, pooled, scale, ratio)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    if got.numel() and not (ties and name == "roi_pool") and not want.isnan().any():
        gr = torch.randn_like(got)
        gx = torch.autograd.grad(got, x, gr)[0]
        wx = torch.autograd.grad(want, x, gr, allow_unused=True)[0] if want.requires_grad else None
        torch.testing.assert_close(gx, torch.zeros_like(x) if wx is None else wx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", OPS)
def test_gradcheck(name):
    x = torch.randn(2, 8, 7, 6, dtype=torch.float64, requires_grad=True)
    rois = make_rois(5, 2, 8, seed=4)
    fns = {
        "roi_pool": lambda t: ops.roi_pool(t, rois, (2, 2), 1.0),
        "ps_roi_pool": lambda t: ops.ps_roi_pool(t, rois, (2, 2), 1.0),
        "ps_roi_align": lambda t: ops.ps_roi_align(t, rois, (2, 2), 1.0, 2),
    }
    torch.autograd.gradcheck(fns[name], (x,))


def test_results_do_not_depend_on_threads():
    x = torch.randn(2, 49 * 4, 30, 40, requires_grad=True)
    rois = make_rois(300, 2, 120, seed=5).float()
    results = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for fn in (ops.roi_pool, ops.ps_roi_pool, lambda *a: ops.ps_roi_align(*a, 2)):
                out = fn(x, rois, 7, 0.25)
                results.append((out, torch.autograd.grad(out, x, torch.ones_like(out))[0]))
        finally:
            torch.set_num_threads(previous)
    for (a, ga), (b, gb) in zip(results[:3], results[3:], strict=True):
        assert torch.equal(a, b) and torch.equal(ga, gb)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lower_precision_close_to_float64(dtype):
    x = torch.randn(2, 8, 10, 12, generator=torch.Generator().manual_seed(2))
    rois = make_rois(9, 2, 40, seed=3)
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    for fn in (ops.roi_pool, ops.ps_roi_pool, ops.ps_roi_align):
        low = fn(x.to(dtype), rois.to(dtype), 2, 0.25)
        want = fn(x.to(dtype).double(), rois.to(dtype).double(), 2, 0.25)
        assert low.dtype == dtype
        torch.testing.assert_close(low.double(), want, rtol=tol, atol=tol, equal_nan=True)


def test_outputs_and_index_tensors():
    x = torch.randn(1, 8, 6, 6)
    rois = torch.tensor([[0.0, 0, 0, 5, 5], [0, 10, 10, 12, 12]])
    out, argmax = torch.ops.pydet.roi_pool(x, rois, 1.0, 2, 2)
    assert argmax.dtype == torch.int32 and argmax.shape == out.shape
    plane = x[0].flatten(1)
    assert torch.equal(out[0].flatten(1), plane.gather(1, argmax[0].flatten(1).long()))
    assert (argmax[1] == -1).all() and (out[1] == 0).all()  # outside the image: empty bins
    for op in (torch.ops.pydet.ps_roi_pool, torch.ops.pydet.ps_roi_align):
        args = (x, rois, 1.0, 2, 2) + ((2,) if op is torch.ops.pydet.ps_roi_align else ())
        out, mapping = op(*args)
        assert out.shape == (2, 2, 2, 2) and mapping.dtype == torch.int32
        assert mapping[0].flatten().tolist() == list(range(8)) and torch.equal(mapping[0], mapping[1])


def test_float64_maximum_starts_at_minus_flt_max():
    """torchvision's running maximum starts at -FLT_MAX, also in float64: lower bins pool to it."""
    x = torch.full((1, 1, 4, 4), -1e300, dtype=torch.float64)
    out, argmax = torch.ops.pydet.roi_pool(
        x, torch.tensor([[0.0, 0, 0, 3, 3]], dtype=torch.float64), 1.0, 1, 1
    )
    assert out.item() == -FLT_MAX and argmax.item() == -1


def test_empty_degenerate_and_non_finite():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    for fn in (ops.roi_pool, ops.ps_roi_pool, ops.ps_roi_align):
        assert fn(x, torch.zeros(0, 5), 2).shape[0] == 0
        assert fn(x[:, :, :0], torch.tensor([[1.0, 1, 1, 5, 5]]), 2).isfinite().all()  # no pixels
        bad = torch.tensor([[0.0, math.nan, 1, 4, 4], [0, 1, 1, math.inf, 4], [0, 1, 1, 5, 6]])
        out = fn(x, bad, 2)
        assert out[:2].isnan().all() and out[2].isfinite().all()
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
        (alone,) = torch.autograd.grad(fn(x, bad[2:], 2).sum(), x)
        assert torch.equal(grad, alone)
        huge = torch.tensor([[0.0, -1e30, -1e30, 1e30, 1e30], [0, 2, 2, 2e9, 2e9]])
        assert fn(x, huge, 2).isfinite().all()
    # ps_roi_align's divisor has no floor of 1: a zero-width RoI with an adaptive grid is 0 / 0
    assert ops.ps_roi_align(x, torch.tensor([[0.0, 2, 2, 2, 6]]), 2).isnan().all()


def test_argument_errors():
    x = torch.randn(1, 8, 4, 4)
    rois = torch.tensor([[0.0, 0, 0, 2, 2]])
    with pytest.raises(ValueError, match=r"pydet.ps_roi_pool: the input's channels \(8\) must be a multiple"):
        ops.ps_roi_pool(x, rois, 3)
    with pytest.raises(
        ValueError, match=r"pydet.ps_roi_align: the input's channels \(8\) must be a multiple"
    ):
        ops.ps_roi_align(x, rois, (1, 3))
    with pytest.raises(ValueError, match=r"pydet.roi_pool: rois\[0, 0\] must be an integer batch index"):
        ops.roi_pool(x, rois + torch.tensor([[1.0, 0, 0, 0, 0]]), 2)
    with pytest.raises(TypeError, match=r"pydet.roi_pool: rois must have input's dtype"):
        ops.roi_pool(x, rois.double(), 2)
    with pytest.raises(ValueError, match=r"boxes\[0\] must have shape \[L, 4\]"):
        ops.ps_roi_pool(x, [rois], 2)
    out, argmax = torch.ops.pydet.roi_pool(x, rois, 1.0, 2, 2)
    grad = torch.ones_like(out)
    with pytest.raises(ValueError, match=r"pydet._roi_pool_backward: argmax \(flat index 0\) must be -1 or"):
        torch.ops.pydet._roi_pool_backward(grad, rois, argmax + 100, 1.0, 2, 2, 1, 8, 4, 4)
    with pytest.raises(TypeError, match=r"pydet._roi_pool_backward: argmax must be an int32 tensor"):
        torch.ops.pydet._roi_pool_backward(grad, rois, argmax.long(), 1.0, 2, 2, 1, 8, 4, 4)
    with pytest.raises(
        ValueError, match=r"pydet._ps_roi_pool_backward: channel_mapping must have the output's"
    ):
        torch.ops.pydet._ps_roi_pool_backward(grad[:, :2], rois, argmax, 1.0, 2, 2, 1, 8, 4, 4)


def test_autocast_computes_in_float32_and_returns_input_dtype():
    x = torch.randn(1, 8, 9, 9)
    rois = torch.tensor([[0.0, 1, 1, 7, 6]])
    for fn in (ops.roi_pool, ops.ps_roi_pool, ops.ps_roi_align):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fn(x, rois, 2).dtype == torch.float32
            half = fn(x.half(), rois.half(), 2)
        assert half.dtype == torch.float16
        assert torch.equal(half, fn(x.half().float(), rois.half().float(), 2).half())


def test_modules_take_lists_of_boxes():
    x = torch.randn(3, 8, 12, 12)
    boxes = [make_rois(4, 1, 40, seed=s)[:, 1:].float() for s in range(3)]
    rois = torch.cat([torch.cat([torch.full((4, 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    assert torch.equal(RoIPool(3, 0.25)(x, boxes), ops.roi_pool(x, rois, 3, 0.25))
    assert torch.equal(PSRoIPool(2, 0.25)(x, boxes), ops.ps_roi_pool(x, rois, 2, 0.25))
    module = PSRoIAlign(2, 0.25, 2)
    assert torch.equal(module(x, boxes), ops.ps_roi_align(x, rois, 2, 0.25, 2))
    assert "sampling_ratio=2" in repr(module) and "output_size=(3, 3)" in repr(RoIPool(3, 1.0))
