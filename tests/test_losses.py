"""IoU losses against torchvision's formulas: values, reductions, gradients."""

import pytest
import torch
from helpers import assert_same, box_arrays, random_boxes, ulp_tolerance
from hypothesis import given

import pydet.ops as ops
from pydet.benchmarks import reference as R

LOSSES = ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]
REDUCTIONS = ["none", "mean", "sum"]


def tolerance(name, dtype, reduction):
    if reduction != "none":  # pydet sums in float64; the reference sums in the input dtype
        return dict(
            rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-5 if dtype == torch.float32 else 1e-12
        )
    return ulp_tolerance(dtype) if "complete" in name else {}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays(min_n=0, special=False))
def test_loss_equals_torchvision_formula(name, reduction, dtype, a, device):
    b1 = torch.as_tensor(a, dtype=torch.float64).reshape(-1, 4).to(dtype=dtype, device=device)
    b2 = b1.roll(1, 0)
    ours, ref = getattr(ops, name)(b1, b2, reduction), getattr(R, name)(b1, b2, reduction)
    assert_same(ours, ref, **tolerance(name, dtype, reduction))


@pytest.mark.parametrize("name", LOSSES)
def test_mean_of_empty_is_zero(name, device):
    e = torch.zeros(0, 4, device=device)
    assert getattr(ops, name)(e, e, "mean").item() == 0.0
    assert getattr(ops, name)(e, e, "sum").item() == 0.0
    assert getattr(ops, name)(e, e).shape == (0,)


@pytest.mark.parametrize("name", LOSSES)
def test_single_box_and_broadcast(name, device):
    b = random_boxes(5, device=device)
    assert getattr(ops, name)(b[0], b[1]).shape == ()
    assert_same(
        getattr(ops, name)(b, b[0]), getattr(R, name)(b, b[0]), **tolerance(name, torch.float32, "none")
    )


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradients_equal_autograd_of_reference(name, reduction, device):
    b1 = random_boxes(9, dtype=torch.float64, device=device, seed=2)
    b2 = random_boxes(9, dtype=torch.float64, device=device, seed=3)
    b2[0] = b1[0]
    b2[1, 2:] = b1[1, 2:]
    grads = []
    for f in (getattr(ops, name), getattr(R, name)):
        x, y = b1.clone().requires_grad_(), b2.clone().requires_grad_()
        out = f(x, y, reduction)
        g = torch.linspace(-1, 1, out.numel(), dtype=torch.float64, device=device).reshape(out.shape)
        grads.append(torch.autograd.grad(out, (x, y), g))
    for ours, ref in zip(*grads, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["generalized_box_iou_loss", "distance_box_iou_loss"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(name, reduction, device):
    b1 = random_boxes(5, dtype=torch.float64, device=device, seed=5).requires_grad_()
    b2 = random_boxes(5, dtype=torch.float64, device=device, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: getattr(ops, name)(x, y, reduction), (b1, b2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loss(dtype, device):
    b1, b2 = (
        random_boxes(20, dtype=dtype, device=device),
        random_boxes(20, dtype=dtype, device=device, seed=8),
    )
    out = ops.generalized_box_iou_loss(b1, b2, "mean")
    assert out.dtype == torch.float32  # torchvision's _upcast_non_float
    torch.testing.assert_close(
        out.float(), R.generalized_box_iou_loss(b1.float(), b2.float(), "mean"), rtol=1e-2, atol=1e-2
    )
