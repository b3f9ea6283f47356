"""sigmoid_focal_loss against torchvision's formula (pydet.benchmarks.reference): values on adversarial logits,
every reduction and dtype, gradients for inputs and targets, autocast, torchvision itself if present."""

import numpy as np
import pytest
import torch
from helpers import assert_same
from hypothesis import given
from hypothesis import strategies as st

import pydet.ops as ops
from pydet.benchmarks import reference as R

REDUCTIONS = ["none", "mean", "sum"]
PARAMS = [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.0), (0.25, 1.5), (0.0, 0.5)]


@st.composite
def logits_and_targets(draw):
    n = draw(st.integers(0, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(0, draw(st.sampled_from([0.1, 3.0, 30.0, 300.0])), n)
    specials = np.array([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, np.inf, -np.inf, np.nan, 88.0, -88.0, 17.0])
    if n and draw(st.booleans()):
        k = rng.integers(0, n, size=max(1, n // 4))
        x[k] = rng.choice(specials, size=k.shape)
    kind = draw(st.sampled_from(["hard", "soft"]))
    t = (rng.random(n) < 0.2).astype(np.float64) if kind == "hard" else rng.random(n)
    return x, t


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("alpha", "gamma"), PARAMS)
@given(data=logits_and_targets())
def test_float64_equals_reference(reduction, alpha, gamma, data, device):
    x, t = (torch.as_tensor(a, device=device) for a in data)
    ours = ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    ref = R.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    # the last-ulp differences of exp/log1p are scaled by the loss (and by n in a sum)
    finite = ref[ref.isfinite()].abs()
    scale = 1 + (finite.max().item() if finite.numel() else 0.0)
    assert_same(ours, ref, rtol=1e-12, atol=1e-12 * max(1, x.numel()) * scale)


@pytest.mark.parametrize(("alpha", "gamma"), PARAMS)
def test_float32_matches_the_float32_formula(alpha, gamma, device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(20_000, generator=g) * 8).to(device)
    t = (torch.rand(20_000, generator=g) < 0.3).float().to(device)
    ours = ops.sigmoid_focal_loss(x, t, alpha, gamma)
    assert_same(ours, R.sigmoid_focal_loss(x, t, alpha, gamma), atol=2e-6, rtol=2e-5)
    exact = R.sigmoid_focal_loss(x.double(), t.double(), alpha, gamma, "sum")
    torch.testing.assert_close(
        ops.sigmoid_focal_loss(x, t, alpha, gamma, "sum").double(), exact, rtol=1e-5, atol=1e-3
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_computed_in_float32(dtype, device):
    x = torch.randn(64, 5, device=device).to(dtype)
    t = (torch.rand(64, 5, device=device) < 0.5).to(dtype)
    ours = ops.sigmoid_focal_loss(x, t)
    assert ours.dtype == dtype
    assert_same(ours, ops.sigmoid_focal_loss(x.float(), t.float()).to(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 1.0), (0.4, 1.5), (0.25, 0.0)])
def test_gradcheck_inputs_and_targets(reduction, alpha, gamma, device):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 3).to(device).requires_grad_()
    t = torch.rand(6, 4, generator=g, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: ops.sigmoid_focal_loss(a, b, alpha, gamma, reduction), (x, t)
    )


def test_gradients_equal_autograd_of_the_reference(device):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(500, 3, generator=g, dtype=torch.float64) * 10).to(device).requires_grad_()
    t = (torch.rand(500, 3, generator=g, dtype=torch.float64) < 0.2).double().to(device)
    for reduction in REDUCTIONS:
        (ours,) = torch.autograd.grad(ops.sigmoid_focal_loss(x, t, reduction=reduction).sum(), x)
        (ref,) = torch.autograd.grad(R.sigmoid_focal_loss(x, t, reduction=reduction).sum(), x)
        assert_same(ours, ref, rtol=1e-12, atol=1e-15)


def test_non_contiguous_and_empty(device):
    x = torch.randn(8, 6, device=device)
    t = (torch.rand(6, 8, device=device) < 0.3).float()
    assert_same(ops.sigmoid_focal_loss(x.t(), t), ops.sigmoid_focal_loss(x.t().contiguous(), t))
    assert_same(
        ops.sigmoid_focal_loss(x[:, ::2], t.t()[:, ::2]),
        R.sigmoid_focal_loss(x[:, ::2], t.t()[:, ::2]),
        atol=2e-6,
        rtol=2e-5,
    )
    e = torch.zeros(0, 80, device=device)
    assert ops.sigmoid_focal_loss(e, e).shape == (0, 80)
    assert ops.sigmoid_focal_loss(e, e, reduction="mean").item() == 0.0
    assert ops.sigmoid_focal_loss(e, e, reduction="sum").item() == 0.0


def test_autocast_runs_in_float32():
    x, t = torch.randn(16, 4), (torch.rand(16, 4) < 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.sigmoid_focal_loss(x.bfloat16(), t)
    assert out.dtype == torch.float32


def test_same_result_for_any_thread_count():
    x = torch.randn(300_000) * 4
    t = (torch.rand(300_000) < 0.1).float()
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(ops.sigmoid_focal_loss(x, t, reduction="sum"))
    finally:
        torch.set_num_threads(threads)
    assert_same(results[0], results[1])


@pytest.mark.parametrize("alpha", [-1.0, 0.25])
@pytest.mark.parametrize("soft", [False, True])
def test_gamma_zero_is_the_weighted_bce_bit_for_bit(alpha, soft):
    """torchvision's focal loss at gamma = 0 is alpha_t * BCE with ATen's BCE, so loss <= BCE holds
    exactly; pydet computes that case with the same ATen call (1,001 elements: a vector tail too)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1001, 97, generator=g) * 6
    t = torch.rand(1001, 97, generator=g) if soft else (torch.rand(1001, 97, generator=g) < 0.3).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    expected = bce if alpha < 0 else (alpha * t + (1 - alpha) * (1 - t)) * bce
    loss = ops.sigmoid_focal_loss(x, t, alpha=alpha, gamma=0.0)
    assert_same(loss, expected)
    assert bool((loss <= bce).all())
