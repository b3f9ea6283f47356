"""depthwise_conv2d against the float64 reference F.conv2d(groups=C) + activation: the three paths of the
CPU kernel (the plane path for wide stride-1 3x3/5x5 planes, the row path for 3x3 "same" convolutions
on rows that fit one vector with their padding, channel blocks for everything else,
including channel counts that are not a multiple of the vector width), all three gradients, dtypes,
layouts, thread counts, and hypothesis over the geometry."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pydet.ops as ops
from pydet.benchmarks import reference as R
from pydet.ops.conv import ACTIVATIONS


def reference(x, w, b, stride, padding, dilation, activation):
    """The float64 reference: ATen's grouped convolution, then the activation."""
    return R.depthwise_conv2d(
        x.double(), w.double(), None if b is None else b.double(), stride, padding, dilation, activation
    )


def check(n, c, h, w, k, stride, padding, dilation, activation, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    kh, kw = (k, k) if isinstance(k, int) else k
    wt = torch.randn(c, 1, kh, kw, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = ops.depthwise_conv2d(x, wt, b, stride, padding, dilation, activation)
    r = reference(x, wt, b, stride, padding, dilation, activation)
    torch.testing.assert_close(y, r, rtol=1e-12, atol=1e-12)
    grad = torch.randn(r.shape, generator=g, dtype=torch.float64)
    inputs = (x, wt) if b is None else (x, wt, b)
    for got, want in zip(
        torch.autograd.grad(y, inputs, grad), torch.autograd.grad(r, inputs, grad), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize(
    "k, stride, padding, dilation",
    [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 1), (5, 2, 2, 1), (3, 1, 2, 2), (5, 2, 4, 2), (3, 1, 0, 1)],
)
def test_channel_blocks_match_reference(k, stride, padding, dilation, activation):
    check(2, 3, 13, 11, k, stride, padding, dilation, activation)
    check(1, 21, 6, 5, k, stride, padding, dilation, activation)  # a full block of 16 and a partial one


@pytest.mark.parametrize("activation", ["none", "relu6", "silu"])
@pytest.mark.parametrize("k, padding, dilation", [(3, 1, 1), (3, 0, 1), (5, 2, 1), (5, 3, 2), (3, 2, 2)])
def test_plane_path_matches_reference(k, padding, dilation, activation):
    check(2, 3, 9, 40, k, 1, padding, dilation, activation)


@pytest.mark.parametrize("activation", ["none", "relu6", "hardswish"])
@pytest.mark.parametrize("h", [1, 2, 14])
@pytest.mark.parametrize("w", [9, 13, 14])
def test_row_path_matches_reference(w, h, activation):
    """3x3 "same" convolutions on rows of 9-14 float32 pixels take the row path (one vector per padded
    row); float64 rows of 5-6 pixels too (gradients checked there)."""
    g = torch.Generator().manual_seed(w * 100 + h)
    x = torch.randn(3, 5, h, w, generator=g)
    wt, b = torch.randn(5, 1, 3, 3, generator=g), torch.randn(5, generator=g)
    y = ops.depthwise_conv2d(x, wt, b, 1, 1, 1, activation)
    torch.testing.assert_close(y.double(), reference(x, wt, b, 1, 1, 1, activation), rtol=1e-5, atol=1e-5)
    check(2, 3, h, w - 8 if w > 10 else 5, 3, 1, 1, 1, activation)


@pytest.mark.parametrize(
    "k, stride, padding, dilation",
    [(1, 1, 0, 1), (4, 2, 3, 1), ((3, 5), 1, (1, 2), 1), (3, 3, 1, 1), (3, (1, 2), 1, (2, 1)), (7, 1, 3, 1)],
)
def test_general_path_matches_reference(k, stride, padding, dilation):
    check(2, 3, 12, 14, k, stride, padding, dilation, "relu6")


def test_without_bias_and_single_pixel_planes():
    check(3, 4, 1, 1, 3, 1, 1, 1, "silu", bias=False)
    check(1, 2, 5, 5, 5, 2, 0, 1, "none", bias=False)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 2),
    c=st.integers(1, 4),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.sampled_from([1, 2, 3, 5]),
    stride=st.integers(1, 3),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 2),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
)
def test_hypothesis_geometry(n, c, h, w, k, stride, padding, dilation, activation):
    if h + 2 * padding < dilation * (k - 1) + 1 or w + 2 * padding < dilation * (k - 1) + 1:
        with pytest.raises(ValueError, match="the output would be empty"):
            ops.depthwise_conv2d(
                torch.rand(n, c, h, w), torch.rand(c, 1, k, k), None, stride, padding, dilation
            )
        return
    check(n, c, h, w, k, stride, padding, dilation, activation, seed=h * 13 + w)


def test_gradcheck_all_three_gradients():
    g = torch.Generator().manual_seed(3)
    for stride, activation in ((1, "silu"), (2, "hardswish"), (3, "none")):
        x = torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(3, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda x, w, b, s=stride, a=activation: ops.depthwise_conv2d(x, w, b, s, 1, 1, a), (x, w, b)
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reduced_precision_dtypes(dtype):
    x = torch.randn(2, 8, 20, 20).to(dtype)
    w = torch.randn(8, 1, 3, 3).to(dtype)
    b = torch.randn(8).to(dtype)
    y = ops.depthwise_conv2d(x, w, b, 1, 1, 1, "relu6")
    assert y.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(y.double(), reference(x, w, b, 1, 1, 1, "relu6"), rtol=tol, atol=tol)


def test_layouts_give_nchw_results():
    x = torch.randn(2, 6, 10, 9)
    w = torch.randn(6, 1, 3, 3)
    want = ops.depthwise_conv2d(x, w, None, 1, 1)
    for variant in (x.to(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3)):
        got = ops.depthwise_conv2d(variant, w, None, 1, 1)
        assert got.is_contiguous()
        assert torch.equal(got, want)
    # expanded (stride-0) batch
    one = x[:1].expand(3, -1, -1, -1)
    assert torch.equal(ops.depthwise_conv2d(one, w, None, 1, 1), want[:1].expand(3, -1, -1, -1))


def test_nan_and_inf_propagate_like_aten():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    x[0, 0, 2, 3] = float("nan")
    x[0, 1, 4, 1] = float("inf")
    w = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.1
    for activation in ("none", "relu", "relu6", "silu", "hardswish"):
        got = ops.depthwise_conv2d(x, w, None, 1, 1, 1, activation)
        want = reference(x, w, None, 1, 1, 1, activation)
        torch.testing.assert_close(got, want, equal_nan=True)


def test_results_do_not_depend_on_thread_count():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 16, 23, 19, generator=g, requires_grad=True)
    w = torch.randn(16, 1, 3, 3, generator=g, requires_grad=True)
    grad = torch.randn(4, 16, 12, 10, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            y = ops.depthwise_conv2d(x, w, None, 2, 1, 1, "silu")
            results.append((y, *torch.autograd.grad(y, (x, w), grad)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_empty_batch_has_zero_gradients():
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = ops.depthwise_conv2d(x, w, b, 1, 1)
    assert y.shape == (0, 3, 8, 8)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_compile_fullgraph():
    x = torch.randn(2, 4, 9, 9)
    w = torch.randn(4, 1, 3, 3)

    def f(x, w):
        return ops.depthwise_conv2d(x, w, None, 2, 1, 1, "relu") * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, w), f(x, w))


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_in_the_active_autocast_dtype(device, dtype):
    """Like conv2d: the dtype the autocast region asks for, not a fixed one per device."""
    x = torch.randn(1, 4, 8, 8, device=device)
    w = torch.randn(4, 1, 3, 3, device=device)
    b = torch.randn(4, device=device)
    with torch.autocast(device, dtype=dtype):
        got = ops.depthwise_conv2d(x, w, b, 1, 1, 1, "relu")
        assert got.dtype == torch.nn.functional.conv2d(x, w, b, 1, 1, 1, 4).dtype == dtype
    expected = ops.depthwise_conv2d(x.to(dtype), w.to(dtype), b.to(dtype), 1, 1, 1, "relu")
    assert torch.equal(got, expected)
    compiled = torch.compile(
        lambda x: ops.depthwise_conv2d(x, w, b, 1, 1), fullgraph=True, backend="aot_eager"
    )
    with torch.autocast(device, dtype=dtype):
        assert compiled(x).dtype == dtype


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, 17, 15, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 8, 9, 8, generator=g, dtype=torch.float64)
    want = reference(x, w, b, 2, 1, 1, "hardswish")
    want_grads = torch.autograd.grad(want, (x, w, b), grad)
    xc, wc, bc = (t.detach().to("cuda", dtype).requires_grad_() for t in (x, w, b))
    got = ops.depthwise_conv2d(xc, wc, bc, 2, 1, 1, "hardswish")
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)
    for a, b_ in zip(torch.autograd.grad(got, (xc, wc, bc), grad.to("cuda", dtype)), want_grads, strict=True):
        torch.testing.assert_close(a.double().cpu(), b_, rtol=tol * 10, atol=tol * 10)
