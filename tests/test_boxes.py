"""box_area, box_convert, clip_boxes_to_image and remove_small_boxes against the reference formulas."""

import pytest
import torch
from helpers import assert_same, box_arrays, random_boxes
from hypothesis import given
from hypothesis import strategies as st

import pydet.ops as ops
from pydet.benchmarks import reference as R

FORMATS = ["xyxy", "xywh", "cxcywh"]


def as_tensor(array, dtype, device):
    return torch.as_tensor(array, dtype=torch.float64).reshape(-1, 4).to(dtype=dtype, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays())
def test_box_area(dtype, a, device):
    boxes = as_tensor(a, dtype, device)
    assert_same(ops.box_area(boxes), R.box_area(boxes))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_box_area_of_half_boxes_is_float32(dtype, device):
    """torchvision up-casts: 300 x 300 px = 90000 would overflow float16."""
    boxes = torch.tensor([[0.0, 0.0, 300.0, 300.0]], dtype=dtype, device=device)
    area = ops.box_area(boxes)
    assert area.dtype == torch.float32 and area.item() == 90000.0


@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays())
def test_box_convert(in_fmt, out_fmt, dtype, a, device):
    boxes = as_tensor(a, dtype, device)
    assert_same(ops.box_convert(boxes, in_fmt, out_fmt), R.box_convert(boxes, in_fmt, out_fmt))


@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_box_convert_round_trip_and_half(in_fmt, out_fmt, device):
    boxes = random_boxes(100, dtype=torch.float64, device=device)
    back = ops.box_convert(ops.box_convert(boxes, in_fmt, out_fmt), out_fmt, in_fmt)
    torch.testing.assert_close(back, boxes, rtol=1e-12, atol=1e-12)
    half = boxes.half()  # computed in float16 step by step, as torchvision does
    assert_same(ops.box_convert(half, in_fmt, out_fmt), R.box_convert(half, in_fmt, out_fmt))


def test_box_convert_keeps_leading_dims_and_copies(device):
    boxes = random_boxes(24, device=device).reshape(2, 3, 4, 4)
    out = ops.box_convert(boxes, "xyxy", "cxcywh")
    assert out.shape == boxes.shape
    same = ops.box_convert(boxes, "xyxy", "xyxy")
    assert same.data_ptr() != boxes.data_ptr() and torch.equal(same, boxes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays(), h=st.integers(0, 2000), w=st.integers(0, 2000))
def test_clip_boxes_to_image(dtype, a, h, w, device):
    boxes = as_tensor(a, dtype, device)
    assert_same(ops.clip_boxes_to_image(boxes, (h, w)), R.clip_boxes_to_image(boxes, (h, w)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays(), min_size=st.sampled_from([0.0, 1e-3, 1.0, 10.0, 100.0]))
def test_remove_small_boxes(dtype, a, min_size, device):
    boxes = as_tensor(a, dtype, device)
    assert_same(ops.remove_small_boxes(boxes, min_size), R.remove_small_boxes(boxes, min_size))


def test_remove_small_boxes_many_chunks(device):
    boxes = random_boxes(100_000, device=device)
    assert_same(ops.remove_small_boxes(boxes, 20.0), R.remove_small_boxes(boxes, 20.0))


@pytest.mark.parametrize("op", ["box_area", "box_convert", "clip", "remove_small"])
def test_empty_and_non_contiguous(op, device):
    call = {
        "box_area": ops.box_area,
        "box_convert": lambda b: ops.box_convert(b, "cxcywh", "xywh"),
        "clip": lambda b: ops.clip_boxes_to_image(b, (50, 60)),
        "remove_small": lambda b: ops.remove_small_boxes(b, 10.0),
    }[op]
    empty = call(torch.zeros(0, 4, device=device))
    assert empty.shape[0] == 0
    base = random_boxes(40, device=device)
    for x in (base.t().contiguous().t(), base[5:6].expand(40, 4), torch.stack([base, base], 2)[..., 0]):
        assert_same(call(x), call(x.contiguous()))


# ---- gradients -------------------------------------------------------------------------------
def test_gradients(device):
    boxes = random_boxes(6, dtype=torch.float64, device=device).requires_grad_()
    assert torch.autograd.gradcheck(ops.box_area, (boxes,))
    for fi in FORMATS:
        for fo in FORMATS:
            assert torch.autograd.gradcheck(lambda b, fi=fi, fo=fo: ops.box_convert(b, fi, fo), (boxes,))
    assert torch.autograd.gradcheck(lambda b: ops.clip_boxes_to_image(b, (40, 60)), (boxes,))


def test_clip_gradient_at_the_bounds_matches_torch(device):
    """torch.clamp passes the gradient at the bounds; clamped-away coordinates get none."""
    boxes = torch.tensor([[0.0, -5, 60, 30], [-1, 10, 70, 40]], dtype=torch.float64, device=device)
    g = torch.randn(2, 4, dtype=torch.float64, device=device)
    ours = torch.autograd.grad(ops.clip_boxes_to_image(boxes.requires_grad_(), (40, 60)), boxes, g)[0]
    ref = torch.autograd.grad(R.clip_boxes_to_image(boxes, (40, 60)), boxes, g)[0]
    assert_same(ours, ref)


@pytest.mark.cuda
@pytest.mark.cuda
def test_cuda_equals_cpu():
    boxes = random_boxes(1000)
    pairs = [
        (ops.box_area, (boxes,)),
        (ops.box_convert, (boxes, "xywh", "cxcywh")),
        (ops.clip_boxes_to_image, (boxes, (50, 70))),
        (ops.remove_small_boxes, (boxes, 25.0)),
    ]
    for f, args in pairs:
        cuda_args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
        assert_same(f(*cuda_args).cpu(), f(*args))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_integer_boxes_clip_and_remove_small(dtype, device):
    """torchvision clamps and compares integer boxes in their dtype."""
    boxes = (random_boxes(40, scale=300.0, device=device) // 1).to(dtype)
    clipped = ops.clip_boxes_to_image(boxes, (120, 90))
    assert clipped.dtype == dtype
    assert torch.equal(clipped, R.clip_boxes_to_image(boxes, (120, 90)))
    assert_same(ops.remove_small_boxes(boxes, 30.5), R.remove_small_boxes(boxes, 30.5))
