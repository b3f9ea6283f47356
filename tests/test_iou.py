"""The IoU family against the reference formulas (pydet.benchmarks.reference): values, dtypes, layouts,
adversarial inputs, gradients and batch dimensions."""

import re

import pytest
import torch
from helpers import FLOAT_DTYPES, assert_same, box_arrays, random_boxes, ulp_tolerance
from hypothesis import given
from hypothesis import strategies as st

import pydet.ops as ops
from pydet.benchmarks import reference as R

PAIRWISE = ["box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"]
ALIGNED = [name + "_aligned" for name in PAIRWISE]


def tolerance(name: str, dtype: torch.dtype) -> dict:
    # atan is the only step that is not correctly rounded: complete IoU may differ in the last ulps.
    return ulp_tolerance(dtype) if "complete" in name else {}


def as_tensor(array, dtype, device):
    return torch.as_tensor(array, dtype=torch.float64).reshape(-1, 4).to(dtype=dtype, device=device)


# ---- values ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PAIRWISE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays(), b=box_arrays())
def test_pairwise_equals_reference_formula(name, dtype, a, b, device):
    b1, b2 = as_tensor(a, dtype, device), as_tensor(b, dtype, device)
    assert_same(getattr(ops, name)(b1, b2), getattr(R, name)(b1, b2), **tolerance(name, dtype))


@pytest.mark.parametrize("name", ALIGNED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays(min_n=1))
def test_aligned_equals_reference_formula(name, dtype, a, device):
    b1 = as_tensor(a, dtype, device)
    b2 = b1.flip(0)
    assert_same(getattr(ops, name)(b1, b2), getattr(R, name)(b1, b2), **tolerance(name, dtype))


@pytest.mark.parametrize("name", PAIRWISE)
def test_aligned_is_the_diagonal_of_pairwise(name, device):
    b1, b2 = random_boxes(50, device=device, seed=1), random_boxes(50, device=device, seed=2)
    assert_same(getattr(ops, name + "_aligned")(b1, b2), getattr(ops, name)(b1, b2).diagonal())


@pytest.mark.parametrize("name", PAIRWISE + [n + "_aligned" for n in PAIRWISE])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_and_returned_in_float32(name, dtype, device):
    """torchvision up-casts float16/bfloat16 boxes (its _upcast) and returns float32; so do the
    aligned forms, the diagonals of the pairwise functions. box_iou and generalized_box_iou round
    their corner differences to the half dtype first, as torchvision does (bit for bit against
    torchvision in test_torchvision_parity.py); the others compute in float32 throughout."""
    b1, b2 = (
        random_boxes(17, dtype=dtype, device=device),
        random_boxes(17, dtype=dtype, device=device, seed=3),
    )
    out = getattr(ops, name)(b1, b2)
    assert out.dtype == torch.float32
    in_float32 = getattr(ops, name)(b1.float(), b2.float())
    if name.removesuffix("_aligned") in ("box_iou", "generalized_box_iou"):
        torch.testing.assert_close(
            out, in_float32, rtol=4 * torch.finfo(dtype).eps, atol=torch.finfo(dtype).eps
        )
    else:
        assert_same(out, in_float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bbox_overlaps_keeps_the_half_dtype(dtype, device):
    """mmdet's bbox_overlaps returns the boxes' dtype."""
    b1, b2 = random_boxes(7, dtype=dtype, device=device), random_boxes(5, dtype=dtype, device=device, seed=3)
    out = ops.bbox_overlaps(b1, b2)
    assert out.dtype == dtype
    assert_same(out, ops.bbox_overlaps(b1.float(), b2.float()).to(dtype))


@pytest.mark.parametrize("name", PAIRWISE)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.int8])
def test_integer_boxes_follow_torchvision(name, dtype, device):
    """torchvision takes pixel coordinates as integers: integer arithmetic (int8/int16/uint8 up-cast to
    int32 after the corner differences, which uint8 therefore wraps as in torchvision), then true
    division into float32; box_area stays integral. The aligned forms are the diagonals of the
    pairwise ones."""
    g = torch.Generator().manual_seed(11)
    xy = torch.randint(0, 60, (2, 40, 2), generator=g)
    wh = torch.randint(0, 60, (2, 40, 2), generator=g)  # zero sizes included
    b1, b2 = (torch.cat([xy[i], xy[i] + wh[i]], -1).to(dtype).to(device) for i in range(2))
    wide = (b1.int(), b2.int()) if dtype in (torch.int16, torch.int8) else (b1, b2)
    out = getattr(ops, name)(b1, b2[:25])
    assert out.dtype == torch.float32
    assert_same(out, getattr(R, name)(wide[0], wide[1][:25]))
    assert_same(getattr(ops, name + "_aligned")(b1, b2), getattr(ops, name)(b1, b2).diagonal())
    area = ops.box_area(b1)
    assert area.dtype == (torch.int64 if dtype == torch.int64 else torch.int32)
    assert torch.equal(area, R.box_area(wide[0]))


def test_integer_boxes_in_losses_are_float32(device):
    """torchvision's IoU losses up-cast every non-float32/64 input to float32 (_upcast_non_float)."""
    b1, b2 = random_boxes(9, device=device) * 100, random_boxes(9, device=device, seed=3) * 100
    for name in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"):
        got = getattr(ops, name)(b1.long(), b2.int(), "sum")
        assert got.dtype == torch.float32
        assert_same(got, getattr(ops, name)(b1.long().float(), b2.int().float(), "sum"))


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_non_numeric_boxes_are_rejected(dtype):
    b = random_boxes(3).to(dtype)
    with pytest.raises(
        TypeError, match=re.escape("pydet.box_iou: boxes1 must be a floating-point or integer tensor")
    ):
        ops.box_iou(b, random_boxes(2))
    with pytest.raises(
        TypeError, match=re.escape("pydet.bbox_overlaps: bboxes1 must be a floating-point tensor")
    ):
        ops.bbox_overlaps(random_boxes(3).long(), random_boxes(2).long())


@pytest.mark.parametrize("name", PAIRWISE)
def test_batched_boxes_broadcast_like_torchvision(name, device):
    """torchvision 0.29: [..., N, 4] x [..., M, 4] -> [..., N, M], the batch dimensions broadcast;
    each slice equals the unbatched call, and gradients sum over the broadcast dimensions."""
    b1 = random_boxes(2 * 5, device=device, seed=1).view(2, 1, 5, 4)
    b2 = random_boxes(3 * 7, device=device, seed=2).view(3, 7, 4)
    out = getattr(ops, name)(b1, b2)
    assert out.shape == (2, 3, 5, 7)
    for i in range(2):
        for j in range(3):
            assert_same(out[i, j], getattr(ops, name)(b1[i, 0], b2[j]))
    if name != "complete_box_iou":  # CIoU's alpha is a constant by design: no gradcheck (see below)
        x = b1.double().requires_grad_()
        y = b2.double().requires_grad_()
        assert torch.autograd.gradcheck(lambda p, q: getattr(ops, name)(p, q), (x, y))
    ints = getattr(ops, name)((b1 * 100).long(), (b2 * 100).long())
    assert ints.shape == (2, 3, 5, 7) and ints.dtype == torch.float32


def test_mixed_dtypes_promote(device):
    b1 = random_boxes(5, dtype=torch.float32, device=device)
    b2 = random_boxes(6, dtype=torch.float64, device=device)
    out = ops.box_iou(b1, b2)
    assert out.dtype == torch.float64
    assert_same(out, ops.box_iou(b1.double(), b2))


def test_known_values(device):
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]], device=device)
    b = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]], device=device)
    torch.testing.assert_close(ops.box_iou(a, b), torch.tensor([[1.0, 0.0], [25 / 175, 0.0]], device=device))
    # GIoU of disjoint boxes: 0 - (900 - 200) / 900
    assert ops.generalized_box_iou(a, b)[0, 1].item() == pytest.approx(-700 / 900)


def test_degenerate_pairs_follow_torchvision(device):
    """torchvision gives 0/0 = NaN for two non-overlapping zero-area boxes; mmdet clamps to 0."""
    z = torch.tensor([[1.0, 1, 1, 1]], device=device)
    w = torch.tensor([[5.0, 5, 5, 5]], device=device)
    assert torch.isnan(ops.box_iou(z, w)).all()
    assert torch.isnan(ops.generalized_box_iou(z, w)).all()
    assert ops.bbox_overlaps(z, w).item() == 0.0
    nan_box = torch.tensor([[float("nan"), 0, 1, 1]], device=device)
    assert torch.isnan(ops.box_iou(nan_box, w)).all()


# ---- layouts and shapes ----------------------------------------------------------------------
@pytest.mark.parametrize("name", PAIRWISE)
def test_non_contiguous_and_expanded_inputs(name, device):
    base = random_boxes(40, device=device)
    wide = torch.zeros(40, 8, device=device)
    wide[:, ::2] = base
    strided = wide[:, ::2]  # column stride 2
    transposed = base.t().contiguous().t()  # column-major
    expanded = base[3:4].expand(40, 4)  # row stride 0
    f = getattr(ops, name)
    for x in (strided, transposed, expanded):
        assert not x.is_contiguous()
        assert_same(f(x, base), f(x.contiguous(), base))
        assert_same(f(base, x), f(base, x.contiguous()))


@pytest.mark.parametrize("name", PAIRWISE)
def test_empty_inputs(name, device):
    f = getattr(ops, name)
    e, b = torch.zeros(0, 4, device=device), random_boxes(3, device=device)
    assert f(e, b).shape == (0, 3)
    assert f(b, e).shape == (3, 0)
    assert f(e, e).shape == (0, 0)
    assert getattr(ops, name + "_aligned")(e, e).shape == (0,)


def test_aligned_broadcasts_leading_dims(device):
    b1 = random_boxes(6, device=device).reshape(2, 3, 4)
    b2 = random_boxes(3, device=device, seed=5)
    out = ops.generalized_box_iou_aligned(b1, b2)
    assert out.shape == (2, 3)
    assert_same(out, R.generalized_box_iou_aligned(b1, b2))


# ---- mmdet bbox_overlaps -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["iou", "iof", "giou"])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays(), b=box_arrays(), eps=st.sampled_from([1e-6, 1e-3, 0.0]))
def test_bbox_overlaps_equals_mmdet_formula(mode, offset, dtype, a, b, eps, device):
    b1, b2 = as_tensor(a, dtype, device), as_tensor(b, dtype, device)
    assert_same(
        ops.bbox_overlaps(b1, b2, mode, False, eps, offset), R.bbox_overlaps(b1, b2, mode, False, eps, offset)
    )
    n = min(len(b1), len(b2))
    assert_same(
        ops.bbox_overlaps(b1[:n], b2[:n], mode, True, eps, offset),
        R.bbox_overlaps(b1[:n], b2[:n], mode, True, eps, offset),
    )


@pytest.mark.parametrize("mode", ["iou", "iof", "giou"])
def test_bbox_overlaps_batch_dims(mode, device):
    b1 = random_boxes(2 * 3 * 5, device=device).reshape(2, 3, 5, 4)
    b2 = random_boxes(2 * 3 * 7, device=device, seed=9).reshape(2, 3, 7, 4)
    out = ops.bbox_overlaps(b1, b2, mode)
    assert out.shape == (2, 3, 5, 7)
    assert_same(out, R.bbox_overlaps(b1, b2, mode))
    aligned = ops.bbox_overlaps(b1, b1.flip(-2), mode, is_aligned=True)
    assert aligned.shape == (2, 3, 5)
    assert_same(aligned, R.bbox_overlaps(b1, b1.flip(-2), mode, is_aligned=True))
    assert ops.bbox_overlaps(b1[:, :, :0], b2, mode).shape == (2, 3, 0, 7)


def test_bbox_overlaps_documented_example(device):
    """The example from mmdet's bbox_overlaps docstring."""
    bboxes1 = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [32, 32, 38, 42]], device=device)
    bboxes2 = torch.tensor([[0.0, 0, 10, 20], [0, 10, 10, 19], [10, 10, 20, 20]], device=device)
    expected = torch.tensor([[0.5000, 0.0000, 0.0000], [0.0000, 0.0000, 1.0000], [0.0000, 0.0000, 0.0000]])
    torch.testing.assert_close(ops.bbox_overlaps(bboxes1, bboxes2).cpu(), expected)
    torch.testing.assert_close(
        ops.bbox_overlaps(bboxes1, bboxes2, is_aligned=True).cpu(), torch.tensor([0.5, 0, 0])
    )
    empty = torch.empty(0, 4, device=device)
    assert ops.bbox_overlaps(empty, torch.rand(10, 4, device=device)).shape == (0, 10)


# ---- gradients -------------------------------------------------------------------------------
def grads(f, b1, b2, *args):
    x, y = b1.clone().requires_grad_(), b2.clone().requires_grad_()
    out = f(x, y, *args)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype).to(out.device)
    return torch.autograd.grad(out, (x, y), g)


def boxes_with_ties(device):
    b1, b2 = (
        random_boxes(7, dtype=torch.float64, device=device),
        random_boxes(7, dtype=torch.float64, device=device, seed=4),
    )
    b2[0] = b1[0]  # identical boxes: every max/min ties
    b2[1, :2] = b1[1, :2]  # shared corner
    b2[2] = b1[2] + torch.tensor([30.0, 30, 30, 30], dtype=torch.float64, device=device)  # disjoint
    return b1, b2


@pytest.mark.parametrize("name", PAIRWISE + ALIGNED)
def test_gradients_equal_autograd_of_reference(name, device):
    """Including ties, where PyTorch splits the gradient of max/min evenly."""
    b1, b2 = boxes_with_ties(device)
    for ours, ref in zip(grads(getattr(ops, name), b1, b2), grads(getattr(R, name), b1, b2), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["iou", "iof", "giou"])
@pytest.mark.parametrize("is_aligned", [False, True])
def test_bbox_overlaps_gradients(mode, is_aligned, device):
    b1, b2 = boxes_with_ties(device)
    for ours, ref in zip(
        grads(ops.bbox_overlaps, b1, b2, mode, is_aligned, 1e-6, 1),
        grads(R.bbox_overlaps, b1, b2, mode, is_aligned, 1e-6, 1),
        strict=True,
    ):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


# complete_* treats alpha as a constant (torch.no_grad in torchvision), so its gradient is by design
# not the numerical derivative; it is checked against autograd of the reference formula above.
@pytest.mark.parametrize("name", [n for n in PAIRWISE + ALIGNED if "complete" not in n])
def test_gradcheck(name, device):
    b1 = random_boxes(4, dtype=torch.float64, device=device, seed=11).requires_grad_()
    b2 = random_boxes(4, dtype=torch.float64, device=device, seed=12).requires_grad_()
    assert torch.autograd.gradcheck(getattr(ops, name), (b1, b2))


def test_gradient_of_float32_inputs_is_float32(device):
    b1 = random_boxes(5, device=device).requires_grad_()
    b2 = random_boxes(6, dtype=torch.float64, device=device).requires_grad_()
    ops.box_iou(b1, b2).sum().backward()
    assert b1.grad.dtype == torch.float32 and b2.grad.dtype == torch.float64


# ---- autocast, determinism ---------------------------------------------------------------------
def test_autocast_runs_in_float32():
    b1, b2 = random_boxes(5, dtype=torch.bfloat16), random_boxes(6, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.box_iou(b1, b2)
        area = ops.box_area(b1)
    assert out.dtype == torch.float32 and area.dtype == torch.float32
    assert_same(out, ops.box_iou(b1.float(), b2.float()))


def test_results_do_not_depend_on_thread_count():
    b1, b2 = random_boxes(300), random_boxes(20000, seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = [ops.complete_box_iou(b1, b2), ops.generalized_box_iou_loss(b2, b2.flip(0), "sum")]
        single += grads(ops.distance_box_iou, b1[:50], b2[:3000])
        torch.set_num_threads(max(2, threads))
        multi = [ops.complete_box_iou(b1, b2), ops.generalized_box_iou_loss(b2, b2.flip(0), "sum")]
        multi += grads(ops.distance_box_iou, b1[:50], b2[:3000])
    finally:
        torch.set_num_threads(threads)
    for s, m in zip(single, multi, strict=True):
        assert torch.equal(s, m)


@pytest.mark.cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", PAIRWISE + ALIGNED)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cuda_equals_cpu(name, dtype):
    b1, b2 = random_boxes(300, dtype=dtype), random_boxes(500, dtype=dtype, seed=3)
    if "aligned" in name:
        b2 = b2[:300]
    cpu = getattr(ops, name)(b1, b2)
    cuda = getattr(ops, name)(b1.cuda(), b2.cuda()).cpu()
    assert_same(cuda, cpu, **tolerance(name, dtype))


@pytest.mark.slow
def test_64bit_indexing_output_larger_than_2_pow_31():
    """M * N > 2^31 output elements (8.6 GB): every index in the kernel must be 64-bit."""
    m = n = 46400
    b1, b2 = random_boxes(m, seed=1), random_boxes(n, seed=2)
    out = ops.box_iou(b1, b2)
    assert out.numel() > 2**31
    assert_same(out[-1], R.box_iou(b1[-1:], b2)[0])
    assert_same(out[-3:, -7:], R.box_iou(b1[-3:], b2[-7:]))
