"""torchvision 0.29's box formats: ``box_area(fmt=)``, ``box_iou(fmt=)`` and the rotated formats of
``box_convert`` and ``box_iou`` (xywhr, cxcywhr, xyxyxyxy). Bit-exactness against torchvision's own
code is in test_torchvision_parity.py; here: the reference formulas, geometry and gradients."""

import math

import pytest
import torch
from helpers import assert_same, box_arrays, random_boxes
from hypothesis import given

import pydet.ops as ops
from pydet.benchmarks import reference as R

AXIS_ALIGNED = ["xyxy", "xywh", "cxcywh"]
ROTATED = ["xywhr", "cxcywhr", "xyxyxyxy"]


def in_format(boxes_xyxy: torch.Tensor, fmt: str) -> torch.Tensor:
    return R.box_convert(boxes_xyxy, "xyxy", fmt)


def rotated_boxes(n: int, dtype=torch.float64, device="cpu", seed: int = 0) -> torch.Tensor:
    """cxcywhr boxes: centres in [0, 100), sides in [1, 50), angles in [-180, 180) degrees."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = 1 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 49
    r = torch.rand(n, 1, generator=g, dtype=torch.float64) * 360 - 180
    return torch.cat([c, wh, r], 1).to(dtype=dtype, device=device)


# ---- axis-aligned formats -----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays())
def test_box_area_format_equals_torchvision_formula(fmt, dtype, a, device):
    boxes = torch.as_tensor(a).reshape(-1, 4).to(dtype=dtype, device=device)
    assert_same(ops.box_area(boxes, fmt), R.box_area(boxes, fmt))


@pytest.mark.parametrize("fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(a=box_arrays(), b=box_arrays())
def test_box_iou_format_equals_torchvision_formula(fmt, dtype, a, b, device):
    """The corners x + w and cx -/+ w / 2 and the area w * h, as torchvision 0.29 computes them."""
    b1 = torch.as_tensor(a).reshape(-1, 4).to(dtype=dtype, device=device)
    b2 = torch.as_tensor(b).reshape(-1, 4).to(dtype=dtype, device=device)
    assert_same(ops.box_iou(b1, b2, fmt=fmt), R.box_iou(b1, b2, fmt))


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_iou_format_is_the_iou_of_the_converted_boxes(fmt, device):
    b1, b2 = (
        random_boxes(30, dtype=torch.float64, device=device),
        random_boxes(20, seed=1, dtype=torch.float64),
    )
    b2 = b2.to(device)
    expected = ops.box_iou(b1, b2)
    torch.testing.assert_close(ops.box_iou(in_format(b1, fmt), in_format(b2, fmt), fmt=fmt), expected)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_iou_format_batched_and_half(fmt, device):
    b1 = in_format(random_boxes(12, device=device), fmt).reshape(3, 4, 4)
    b2 = in_format(random_boxes(5, seed=2, device=device), fmt)
    out = ops.box_iou(b1, b2, fmt=fmt)
    assert out.shape == (3, 4, 5)
    assert_same(out[1], ops.box_iou(b1[1], b2, fmt=fmt))
    half = ops.box_iou(b1.half(), b2.half(), fmt=fmt)
    assert half.dtype == torch.float32


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_area_and_iou_format_gradients(fmt, device):
    b1 = in_format(random_boxes(6, dtype=torch.float64, device=device), fmt).requires_grad_()
    b2 = in_format(random_boxes(5, seed=3, dtype=torch.float64, device=device), fmt).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.box_area(x, fmt), (b1,))
    assert torch.autograd.gradcheck(lambda x, y: ops.box_iou(x, y, fmt=fmt), (b1, b2))


@pytest.mark.parametrize("fmt", AXIS_ALIGNED)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16])
def test_integer_boxes_with_a_format(fmt, dtype, device):
    """torchvision computes integer areas, and float32 corners for cxcywh (w / 2)."""
    b1 = (random_boxes(7, device=device) // 1).to(dtype)
    b2 = (random_boxes(6, seed=4, device=device) // 1).to(dtype)
    b1, b2 = in_format(b1, fmt).to(dtype), in_format(b2, fmt).to(dtype)
    area = ops.box_area(b1, fmt)
    assert area.dtype == (torch.int64 if dtype == torch.int64 else torch.int32)
    assert torch.equal(area.double(), R.box_area(b1.double(), fmt))
    iou = ops.box_iou(b1, b2, fmt=fmt)
    assert iou.dtype == torch.float32
    torch.testing.assert_close(iou, R.box_iou(b1.double(), b2.double(), fmt).float())


# ---- rotated formats: box_convert ----------------------------------------------------------------
@pytest.mark.parametrize("in_fmt", ROTATED)
@pytest.mark.parametrize("out_fmt", ROTATED)
def test_rotated_round_trips(in_fmt, out_fmt, device):
    center = rotated_boxes(50, device=device)
    boxes = ops.box_convert(center, "cxcywhr", in_fmt)
    there = ops.box_convert(boxes, in_fmt, out_fmt)
    assert there.shape == (50, 8 if out_fmt == "xyxyxyxy" else 5)
    back = ops.box_convert(there, out_fmt, "cxcywhr")
    # xyxyxyxy gives angles in (-180, 180]: compare angles modulo 360
    torch.testing.assert_close(back[:, :4], center[:, :4], rtol=0, atol=1e-9)
    turn = torch.remainder(back[:, 4] - center[:, 4] + 180, 360) - 180
    torch.testing.assert_close(turn, torch.zeros_like(turn), rtol=0, atol=1e-9)


def test_rotated_corners_geometry(device):
    """The corners are top-left, top-right, bottom-right, bottom-left of the box turned by r degrees
    counter-clockwise (image y pointing down) about its centre; their mean is the centre."""
    center = rotated_boxes(40, device=device)
    corners = ops.box_convert(center, "cxcywhr", "xyxyxyxy").reshape(40, 4, 2)
    torch.testing.assert_close(corners.mean(1), center[:, :2])
    cx, cy, w, h, r = center.unbind(-1)
    t = r * math.pi / 180
    local = torch.tensor(
        [[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], dtype=center.dtype, device=device
    )
    dx, dy = local[None, :, 0] * w[:, None], local[None, :, 1] * h[:, None]
    x = cx[:, None] + dx * torch.cos(t)[:, None] + dy * torch.sin(t)[:, None]
    y = cy[:, None] - dx * torch.sin(t)[:, None] + dy * torch.cos(t)[:, None]
    torch.testing.assert_close(corners, torch.stack([x, y], -1))


def test_zero_angle_matches_the_axis_aligned_formats(device):
    xyxy = random_boxes(20, dtype=torch.float64, device=device)
    center = torch.cat([R.box_convert(xyxy, "xyxy", "cxcywh"), torch.zeros(20, 1, dtype=torch.float64)], 1)
    corner = ops.box_convert(center, "cxcywhr", "xywhr")
    torch.testing.assert_close(corner[:, :4], R.box_convert(xyxy, "xyxy", "xywh"))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_rotated_integer_boxes_are_rounded_back(dtype, device):
    center = rotated_boxes(10, device=device).round()
    out = ops.box_convert(center.to(dtype), "cxcywhr", "xyxyxyxy")
    assert out.dtype == dtype
    expected = ops.box_convert(
        ops.box_convert(center, "cxcywhr", "xywhr").round(), "xywhr", "xyxyxyxy"
    ).round()
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1.0)


@pytest.mark.parametrize("in_fmt", ROTATED)
@pytest.mark.parametrize("out_fmt", ROTATED)
def test_rotated_gradcheck(in_fmt, out_fmt, device):
    boxes = ops.box_convert(rotated_boxes(4, device=device), "cxcywhr", in_fmt).requires_grad_()
    assert torch.autograd.gradcheck(lambda b: ops.box_convert(b, in_fmt, out_fmt), (boxes,))


def test_rotated_leading_dims_and_half(device):
    center = rotated_boxes(12, device=device).reshape(2, 6, 5)
    assert ops.box_convert(center, "cxcywhr", "xyxyxyxy").shape == (2, 6, 8)
    half = ops.box_convert(center.half(), "cxcywhr", "xywhr")
    assert half.dtype == torch.float16


@pytest.mark.parametrize(
    "boxes, in_fmt, out_fmt, error, match",
    [
        (torch.rand(3, 5), "cxcywhr", "xyxy", ValueError, "one format is rotated"),
        (torch.rand(3, 4), "xyxy", "cxcywhr", ValueError, "one format is rotated"),
        (torch.rand(3, 4), "cxcywhr", "xywhr", ValueError, r"boxes must have shape \[\.\.\., 5\]"),
        (torch.rand(3, 5), "xyxyxyxy", "xywhr", ValueError, r"boxes must have shape \[\.\.\., 8\]"),
        (torch.rand(3, 5), "cxcywha", "xywhr", ValueError, "in_fmt must be one of 'xyxy'.*'xyxyxyxy'"),
    ],
)
def test_rotated_convert_errors(boxes, in_fmt, out_fmt, error, match):
    with pytest.raises(error, match=match):
        ops.box_convert(boxes, in_fmt, out_fmt)


# ---- rotated formats: box_iou ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ROTATED)
def test_rotated_box_iou_is_box_iou_rotated(fmt, device):
    c1, c2 = rotated_boxes(9, device=device), rotated_boxes(7, seed=5, device=device)
    b1, b2 = ops.box_convert(c1, "cxcywhr", fmt), ops.box_convert(c2, "cxcywhr", fmt)
    # float32, as torchvision's box_iou_rotated returns for every dtype
    expected = ops.box_iou_rotated(
        ops.box_convert(b1, fmt, "cxcywhr"), ops.box_convert(b2, fmt, "cxcywhr")
    ).float()
    assert_same(ops.box_iou(b1, b2, fmt=fmt), expected)
    torch.testing.assert_close(ops.box_iou(b1, b2, fmt=fmt), ops.box_iou_rotated(c1, c2).float())


def test_rotated_box_iou_of_upright_boxes_is_box_iou(device):
    xyxy = random_boxes(15, dtype=torch.float64, device=device)
    center = torch.cat([R.box_convert(xyxy, "xyxy", "cxcywh"), torch.zeros(15, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(ops.box_iou(center, center, fmt="cxcywhr"), ops.box_iou(xyxy, xyxy).float())


@pytest.mark.parametrize(
    "b1, b2, fmt, error, match",
    [
        (
            torch.rand(2, 3, 5),
            torch.rand(2, 3, 5),
            "cxcywhr",
            ValueError,
            r"box_iou: boxes1 must have shape \[N, 5\]",
        ),
        (
            torch.rand(3, 5),
            torch.rand(3, 8),
            "xyxyxyxy",
            ValueError,
            r"box_iou: boxes1 must have shape \[N, 8\]",
        ),
        (torch.ones(3, 5, dtype=torch.int64), torch.ones(3, 5), "xywhr", TypeError, "box_iou: boxes1"),
        (torch.rand(3, 4), torch.rand(3, 4), "ltrb", ValueError, "box_iou: fmt must be one of"),
    ],
)
def test_rotated_box_iou_errors(b1, b2, fmt, error, match):
    with pytest.raises(error, match=match):
        ops.box_iou(b1, b2, fmt=fmt)


def test_rotated_box_iou_has_no_gradient():
    b = rotated_boxes(3).requires_grad_()
    out = ops.box_iou(b, b.detach(), fmt="cxcywhr")
    with pytest.raises(RuntimeError, match=r"rotated boxes .* has no gradient"):
        out.sum().backward()


def test_format_ops_under_compile_and_opcheck():
    b1 = in_format(random_boxes(8), "cxcywh")
    compiled = torch.compile(
        lambda a, b: ops.box_iou(a, b, fmt="cxcywh") + ops.box_area(a, "cxcywh")[:, None]
    )
    assert_same(compiled(b1, b1), ops.box_iou(b1, b1, fmt="cxcywh") + ops.box_area(b1, "cxcywh")[:, None])
    c = rotated_boxes(6)
    torch.library.opcheck(torch.ops.pydet.box_convert, (c.requires_grad_(), "cxcywhr", "xyxyxyxy"))
    torch.library.opcheck(torch.ops.pydet.box_iou, (c.detach(), c.detach(), "xywhr"))
    torch.library.opcheck(torch.ops.pydet.box_iou, (b1, b1, "xywh"))
    torch.library.opcheck(torch.ops.pydet.box_area, (b1, "cxcywh"))
