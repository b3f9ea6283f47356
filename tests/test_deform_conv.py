"""deform_conv2d (torchvision's, v1 and v2) against a plain float64 reference, with its edge cases,
gradients, dtypes, layouts, modules and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pydet.ops as ops
from pydet.layers import DeformConv, DeformConv2d, ModulatedDeformConv


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def reference(
    input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None, dtype=torch.float64
):
    """torchvision's deform_conv2d in tensor operations of ``dtype`` (float64 unless asked; its sampling
    operations are torchvision's, in its order), differentiable in every argument.

    Tap k = (i, j) of offset group o at output pixel (y, x) samples at (y s - p + i d + dy, x s - p + j d
    + dx) bilinearly (corners outside the input read 0; the sample is 0 unless -1 < y < H and
    -1 < x < W); the columns, times the mask, are multiplied by the weight. As torchvision, a sample
    on the -1 border contributes nothing, yet its offsets' gradient is the derivative of the
    bilinear formula there (its corners inside the input)."""
    (sh, sw), (ph, pw), (dh, dw) = ((v, v) if isinstance(v, int) else v for v in (stride, padding, dilation))
    x = input.to(dtype)
    n, c, h, w = x.shape
    oc, cw, kh, kw = weight.shape
    groups, taps = c // cw, kh * kw
    og = offset.shape[1] // (2 * taps)
    oh, ow = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
    off = offset.to(dtype).reshape(n, og, taps, 2, oh, ow)
    i = torch.arange(kh, dtype=dtype).repeat_interleave(kw).view(1, 1, taps, 1, 1)
    j = torch.arange(kw, dtype=dtype).repeat(kh).view(1, 1, taps, 1, 1)
    ys = (torch.arange(oh, dtype=dtype) * sh - ph).view(1, 1, 1, oh, 1) + i * dh + off[:, :, :, 0]
    xs = (torch.arange(ow, dtype=dtype) * sw - pw).view(1, 1, 1, 1, ow) + j * dw + off[:, :, :, 1]
    inside = (ys > -1) & (ys < h) & (xs > -1) & (xs < w)
    y0, x0 = ys.detach().floor(), xs.detach().floor()
    fy, fx = ys - y0, xs - x0
    planes = x.reshape(n, og, c // og, h * w)

    def bilinear(source):
        total = 0
        for dy, dx, weight_ in (
            (0, 0, (1 - fy) * (1 - fx)),
            (0, 1, (1 - fy) * fx),
            (1, 0, fy * (1 - fx)),
            (1, 1, fy * fx),
        ):
            yy, xx = y0 + dy, x0 + dx
            valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            index = torch.where(valid, yy * w + xx, 0).long().reshape(n, og, 1, -1)
            values = torch.gather(source, 3, index.expand(-1, -1, c // og, -1)).reshape(
                n, og, c // og, taps, oh, ow
            )
            total = total + torch.where(valid.unsqueeze(2), weight_.unsqueeze(2) * values, 0)
        return total

    sampled = bilinear(planes)
    border = bilinear(planes.detach())  # the offsets' gradient outside, without the input's
    cols = torch.where(inside.unsqueeze(2), sampled, border - border.detach())
    if mask is not None:
        cols = cols * mask.to(dtype).reshape(n, og, 1, taps, oh, ow)
    cols = cols.reshape(n, groups, cw * taps, oh * ow)
    out = torch.einsum("gok,ngkp->ngop", weight.to(dtype).reshape(groups, oc // groups, cw * taps), cols)
    out = out.reshape(n, oc, oh, ow)
    return out if bias is None else out + bias.to(dtype).view(1, -1, 1, 1)


def make_case(
    n, c, h, w, oc, k, groups, offset_groups, stride, padding, dilation, use_mask, seed=0, scale=2.0
):
    g = torch.Generator().manual_seed(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    oh, ow = _out_size(h, kh, stride, padding, dilation), _out_size(w, kw, stride, padding, dilation)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(oc, c // groups, kh, kw, generator=g, dtype=torch.float64)
    bias = torch.randn(oc, generator=g, dtype=torch.float64)
    offset = torch.randn(n, 2 * offset_groups * kh * kw, oh, ow, generator=g, dtype=torch.float64) * scale
    mask = (
        torch.rand(n, offset_groups * kh * kw, oh, ow, generator=g, dtype=torch.float64) if use_mask else None
    )
    return x, offset, weight, bias, mask


CASES = [
    # n, c, h, w, oc, k, groups, offset_groups, stride, padding, dilation, use_mask
    (2, 4, 6, 7, 6, 3, 1, 1, 1, 1, 1, False),
    (2, 4, 6, 7, 6, 3, 1, 1, 1, 1, 1, True),
    (1, 6, 5, 5, 4, 3, 2, 3, 2, 0, 1, True),
    (1, 20, 4, 5, 4, 2, 2, 1, 1, 0, 1, True),
    (2, 8, 9, 8, 6, (3, 2), 2, 4, 1, 2, 2, False),
    (1, 36, 7, 6, 3, 1, 1, 2, 2, 1, 1, True),
]


def assert_matches_reference(inputs, stride, padding, dilation, tol):
    """Values within tol and the five gradients (four without a mask) within 100 tol."""
    x, offset, weight, bias, mask = inputs
    tensors = [t.requires_grad_() for t in inputs if t is not None]
    got = ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    want = reference(x, offset, weight, bias, stride, padding, dilation, mask)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, tensors, g), torch.autograd.grad(want, tensors, g), strict=True):
        torch.testing.assert_close(a, b, rtol=100 * tol, atol=100 * tol)


@pytest.mark.parametrize("case", CASES)
def test_matches_reference_float64(case):
    assert_matches_reference(make_case(*case), *case[8:11], tol=1e-12)


@st.composite
def conv_cases(draw):
    groups, offset_groups = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2, 4]))
    c = math.lcm(groups, offset_groups) * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride, padding, dilation = draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    h = draw(st.integers(max(1, dilation * (k[0] - 1) + 1 - 2 * padding), 7))
    w = draw(st.integers(max(1, dilation * (k[1] - 1) + 1 - 2 * padding), 7))
    oc = groups * draw(st.integers(1, 2))
    # integer offsets put samples exactly on pixels and on the -1 and H borders
    scale = draw(st.sampled_from([0.0, 1.0, 3.0, 20.0]))
    return (
        draw(st.integers(1, 2)),
        c,
        h,
        w,
        oc,
        k,
        groups,
        offset_groups,
        stride,
        padding,
        dilation,
        draw(st.booleans()),
        draw(st.integers(0, 1000)),
        scale,
        draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_property_matches_reference(case):
    *shape, seed, scale, integral = case
    x, offset, weight, bias, mask = make_case(*shape, seed=seed, scale=scale)
    if integral:
        offset = offset.round()
    assert_matches_reference((x, offset, weight, bias, mask), *shape[8:11], tol=1e-11)


def test_gradcheck():
    x, offset, weight, bias, mask = make_case(1, 4, 5, 6, 4, 3, 2, 2, 1, 1, 1, True, seed=3, scale=0.7)
    tensors = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    assert torch.autograd.gradcheck(
        lambda x, o, w, b, m: ops.deform_conv2d(x, o, w, b, 1, 1, 1, m), tensors, nondet_tol=0.0
    )


def test_columns_are_exact_in_float32():
    """With a 1x1 identity weight, the output is the sampled columns: the float32 reference's bits
    (torchvision's operations in its order, no fused multiply-add)."""
    x, offset, _, _, mask = (
        t.float() if t is not None else None
        for t in make_case(2, 5, 9, 8, 5, 1, 1, 1, 1, 0, 1, True, seed=5, scale=3.0)
    )
    identity = torch.eye(5).view(5, 5, 1, 1)
    got = ops.deform_conv2d(x, offset, identity, None, mask=mask)
    assert torch.equal(got, reference(x, offset, identity, mask=mask, dtype=torch.float32))


def test_special_values():
    x, offset, weight, bias, mask = make_case(1, 3, 6, 6, 2, 3, 1, 1, 1, 1, 1, True, seed=7)
    offset[0, 0, 1, 1] = math.nan  # tap 0's dy at pixel (1, 1)
    offset[0, 3, 2, 2] = math.inf  # tap 1's dx at pixel (2, 2)
    offset[0, 4, 3, 3] = 1e30  # tap 2's dy at pixel (3, 3): far outside
    tensors = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    out = ops.deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask)
    assert out[0, :, 1, 1].isnan().all()  # a NaN coordinate samples NaN
    assert out.isnan().sum() == 2
    finite = torch.ones_like(out, dtype=torch.bool)
    finite[0, :, 1, 1] = False
    clean = offset.detach().clone()
    clean[0, 0, 1, 1] = 0
    # an infinite or huge coordinate samples 0: as if the tap's mask were 0
    mask0 = mask.detach().clone()
    mask0[0, 1, 2, 2] = mask0[0, 2, 3, 3] = 0
    want = reference(x.detach(), clean, weight.detach(), bias.detach(), 1, 1, 1, mask0)
    torch.testing.assert_close(out.detach()[finite], want[finite], rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out[finite].sum(), tensors)
    assert grads[3].isfinite().all()
    # the NaN column times a zero gradient: NaN in the weight's gradient of that tap (as in any GEMM)
    # and in the mask's gradient there
    assert grads[2][:, :, 0, 0].isnan().all() and grads[2].isnan().sum() == grads[2][:, :, 0, 0].numel()
    assert grads[4][0, 0, 1, 1].isnan() and grads[4].isnan().sum() == 1
    # x = inf: the dy gradient is NaN (inf x 0 in the bilinear derivative, as torchvision computes it
    # on x86-64), the dx gradient 0
    assert grads[1][0, 2, 2, 2].isnan() and grads[1][0, 3, 2, 2] == 0


def test_empty_and_threads():
    x, offset, weight, bias, _ = make_case(0, 4, 6, 7, 6, 3, 1, 1, 1, 1, 1, False)
    assert ops.deform_conv2d(x, offset, weight, bias, padding=1).shape == (0, 6, 6, 7)
    x, offset, weight, bias, _ = make_case(2, 4, 6, 7, 6, 3, 1, 1, 1, 1, 1, False)
    out = ops.deform_conv2d(x, offset, weight[:0], bias[:0], padding=1)
    assert out.shape == (2, 0, 6, 7)
    x = torch.randn(2, 64, 30, 40, requires_grad=True)
    offset = (torch.randn(2, 18, 30, 40) * 3).requires_grad_()
    weight = (torch.randn(32, 64, 3, 3) * 0.05).requires_grad_()
    mask = torch.rand(2, 9, 30, 40, requires_grad=True)
    results = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = ops.deform_conv2d(x, offset, weight, None, 1, 1, 1, mask)
            results.append((out, *torch.autograd.grad(out, (x, offset, weight, mask), torch.ones_like(out))))
        finally:
            torch.set_num_threads(previous)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_layouts_and_dtypes():
    x, offset, weight, bias, mask = (
        t.float() for t in make_case(2, 16, 9, 10, 8, 3, 2, 4, 1, 1, 1, True, seed=9)
    )
    want = ops.deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask)
    assert torch.equal(
        ops.deform_conv2d(
            x.contiguous(memory_format=torch.channels_last), offset, weight, bias, 1, 1, 1, mask
        ),
        want,
    )
    wide = torch.randn(2, 16, 9, 20)[..., ::2]
    wide.copy_(x)
    assert torch.equal(
        ops.deform_conv2d(
            wide, offset.transpose(2, 3).contiguous().transpose(2, 3), weight, bias, 1, 1, 1, mask
        ),
        want,
    )
    for dtype in (torch.float16, torch.bfloat16):
        args = [t.to(dtype) for t in (x, offset, weight, bias, mask)]
        low = ops.deform_conv2d(*args[:4], 1, 1, 1, args[4])
        assert low.dtype == dtype  # computed in float32, rounded once
        assert torch.equal(
            low, ops.deform_conv2d(*(a.float() for a in args[:4]), 1, 1, 1, args[4].float()).to(dtype)
        )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask).dtype == torch.float32


def test_bad_input():
    x, offset, weight, bias, mask = make_case(1, 4, 6, 6, 4, 3, 2, 2, 1, 1, 1, True)
    with pytest.raises(
        ValueError,
        match=r"pydet.deform_conv2d: offset must have shape \[N, 2 KH KW x offset_groups, OH, OW\]",
    ):
        ops.deform_conv2d(x, offset[:, :, :5], weight, bias, 1, 1, 1, mask)
    with pytest.raises(
        ValueError, match=r"pydet.deform_conv2d: mask must have shape \[N, KH KW x offset_groups"
    ):
        ops.deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask[:, :9])
    with pytest.raises(
        ValueError, match=r"pydet.deform_conv2d: weight must have shape \[OC, C / groups, KH, KW\]"
    ):
        ops.deform_conv2d(x, offset, torch.randn(4, 3, 3, 3, dtype=torch.float64), bias, 1, 1, 1, mask)
    with pytest.raises(ValueError, match=r"pydet.deform_conv2d: bias must have shape \[OC\] = \[4\]"):
        ops.deform_conv2d(x, offset, weight, bias[:3], 1, 1, 1, mask)
    with pytest.raises(ValueError, match=r"pydet.deform_conv2d: stride must be >= 1"):
        ops.deform_conv2d(x, offset, weight, bias, 0, 1, 1, mask)
    with pytest.raises(ValueError, match=r"pydet.deform_conv2d: the output would be empty"):
        ops.deform_conv2d(x[..., :1, :1], offset, weight, bias, 1, 0, 1, mask)
    with pytest.raises(
        TypeError, match=r"pydet.deform_conv2d: offset must have input's dtype \(float64\), got float32"
    ):
        ops.deform_conv2d(x, offset.float(), weight, bias, 1, 1, 1, mask)
    with pytest.raises(ValueError, match=r"pydet.deform_conv2d: input must have shape \[N, C, H, W\]"):
        ops.deform_conv2d(x[0], offset, weight, bias, 1, 1, 1, mask)


def test_modules():
    torch.manual_seed(0)
    tv = DeformConv2d(8, 6, 3, stride=2, padding=1, groups=2)
    assert set(tv.state_dict()) == {"weight", "bias"} and tv.weight.shape == (6, 4, 3, 3)
    x = torch.randn(2, 8, 11, 9)
    offset = torch.randn(2, 18, 6, 5)
    assert torch.equal(tv(x, offset), ops.deform_conv2d(x, offset, tv.weight, tv.bias, 2, 1, 1))
    mask = torch.rand(2, 9, 6, 5)
    assert torch.equal(tv(x, offset, mask), ops.deform_conv2d(x, offset, tv.weight, tv.bias, 2, 1, 1, mask))

    d2 = DeformConv(
        8,
        6,
        3,
        padding=1,
        groups=2,
        deformable_groups=2,
        norm=torch.nn.BatchNorm2d(6).eval(),
        activation=torch.relu,
    )
    assert set(d2.state_dict()) == {
        "weight",
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    }
    offset = torch.randn(2, 36, 11, 9)
    want = torch.relu(d2.norm(ops.deform_conv2d(x, offset, d2.weight, None, 1, 1, 1)))
    assert torch.equal(d2(x, offset), want)

    m2 = ModulatedDeformConv(8, 6, 3, padding=1, deformable_groups=1, bias=True)
    assert set(m2.state_dict()) == {"weight", "bias"}
    offset, mask = torch.randn(2, 18, 11, 9), torch.rand(2, 9, 11, 9)
    assert torch.equal(m2(x, offset, mask), ops.deform_conv2d(x, offset, m2.weight, m2.bias, 1, 1, 1, mask))
    assert d2(x[:0], torch.zeros(0, 36, 11, 9)).shape == (0, 6, 11, 9)  # detectron2's empty-input path
    with pytest.raises(
        ValueError, match=r"pydet.DeformConv: in_channels \(7\) must be divisible by groups \(2\)"
    ):
        DeformConv(7, 6, 3, groups=2)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES[1:4])
def test_cuda_matches_cpu(case, dtype):
    """The CUDA kernels against the CPU's: the same columns, GEMMs and atomics in other orders."""
    inputs = [t.to(dtype) if t is not None else None for t in make_case(*case, seed=11)]
    stride, padding, dilation = case[8:11]
    results = []
    for device in ("cpu", "cuda"):
        leaves = [t.to(device).requires_grad_() if t is not None else None for t in inputs]
        out = ops.deform_conv2d(*leaves[:4], stride, padding, dilation, leaves[4])
        wrt = [t for t in leaves if t is not None]
        grad = torch.ones_like(out)
        results.append([out, *torch.autograd.grad(out, wrt, grad)])
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=tol, atol=tol)
