"""paste_masks_in_image (torchvision's and detectron2's conventions) and masks_to_boxes against the
libraries' eager code (pydet.benchmarks.reference), with edge cases and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pydet.benchmarks.reference as R
import pydet.ops as ops
from pydet.layers import paste_masks_in_image as paste_detectron2


def _masks_and_boxes(n, m=28, size=(120, 160), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, 1, m, m, generator=g, dtype=dtype)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([size[1], size[0]]) * 0.8
    wh = 1 + torch.rand(n, 2, generator=g) * 60
    return masks, torch.cat([xy, xy + wh], 1).to(dtype)


@pytest.mark.parametrize("padding", [0, 1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torchvision_paste_matches_eager(padding, dtype):
    masks, boxes = _masks_and_boxes(12, seed=padding, dtype=dtype)
    got = ops.paste_masks_in_image(masks, boxes, (120, 160), padding)
    want = R.paste_masks_in_image(masks, boxes, (120, 160), padding)
    assert got.shape == want.shape == (12, 1, 120, 160) and got.dtype == dtype
    # ATen's resize rounds differently on FMA-capable CPUs: equal within float rounding, same support
    torch.testing.assert_close(got, want, rtol=0, atol=16 * torch.finfo(dtype).eps)
    assert torch.equal(got != 0, want != 0)


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0, -1.0])
def test_detectron2_paste_matches_eager(threshold):
    masks, boxes = _masks_and_boxes(12, seed=4)
    boxes[3] = torch.tensor([10.0, 10.0, 10.0, 30.0])  # zero width: NaN samples, nothing pasted
    got = paste_detectron2(masks[:, 0], boxes, (120, 160), threshold)
    want = R.paste_masks_in_image_detectron2(masks[:, 0], boxes, (120, 160), threshold)
    assert got.dtype == want.dtype and got.shape == want.shape
    differ = (got.int() - want.int()).abs()
    # values within float rounding: a pixel may flip only where the value sits on the threshold
    assert differ.max() <= (1 if threshold < 0 else 0) or differ.float().mean() < 1e-4


@st.composite
def paste_cases(draw):
    n = draw(st.integers(0, 4))
    m = draw(st.integers(1, 6))
    h, w = draw(st.integers(0, 20)), draw(st.integers(0, 20))
    coordinate = st.one_of(st.floats(-10, 25, allow_nan=False), st.integers(-3, 22).map(float))
    boxes = []
    for _ in range(n):
        x1, y1 = draw(coordinate), draw(coordinate)
        boxes.append([x1, y1, x1 + draw(st.floats(0, 15)), y1 + draw(st.floats(0, 15))])
    return n, m, h, w, boxes, draw(st.integers(0, 2))


@settings(max_examples=120, deadline=None)
@given(paste_cases())
def test_property_torchvision_paste(case):
    n, m, h, w, rows, padding = case
    masks = torch.rand(n, 1, m, m, generator=torch.Generator().manual_seed(n + m), dtype=torch.float64)
    boxes = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    got = ops.paste_masks_in_image(masks, boxes, (h, w), padding)
    for i in range(n):
        try:
            want = R.paste_masks_in_image(masks[i : i + 1], boxes[i : i + 1], (h, w), padding)
        except (
            RuntimeError
        ):  # torchvision's slicing fails for boxes wholly beyond an edge: pydet pastes nothing
            assert not got[i].any()
            continue
        torch.testing.assert_close(got[i : i + 1], want, rtol=0, atol=1e-15)


def test_degenerate_boxes_and_sizes():
    masks, boxes = _masks_and_boxes(4)
    boxes[0] = torch.tensor([math.nan, 1, 5, 5])
    boxes[1] = torch.tensor([500.0, 10, 560, 40])  # beyond the right edge
    boxes[2] = torch.tensor([-50.0, -60, -20, -30])  # above and left of the image
    for out in (
        ops.paste_masks_in_image(masks, boxes, (120, 160)),
        paste_detectron2(masks[:, 0], boxes, (120, 160)),
    ):
        assert not out[:3].any() and out[3].any()
    assert ops.paste_masks_in_image(masks[:0], boxes[:0], (5, 7)).shape == (0, 1, 5, 7)
    assert ops.paste_masks_in_image(masks, boxes, (0, 7)).shape == (4, 1, 0, 7)
    assert paste_detectron2(masks[:0, 0], boxes[:0], (5, 7)).dtype == torch.bool
    huge = torch.tensor([[-1e30, -1e30, 1e30, 1e30]])
    assert ops.paste_masks_in_image(masks[:1], huge, (6, 6)).shape == (1, 1, 6, 6)
    assert paste_detectron2(masks[:1, 0], huge, (6, 6)).shape == (1, 6, 6)


def test_detectron2_integer_masks_and_boxes_object():
    masks, boxes = _masks_and_boxes(3, seed=2)
    binary = masks[:, 0] > 0.5

    class Boxes:
        tensor = boxes

    got = paste_detectron2(binary, Boxes(), (120, 160))
    assert torch.equal(got, paste_detectron2(binary.float(), boxes, (120, 160)))


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32, torch.float16, torch.float32])
def test_masks_to_boxes_matches_torchvision(dtype):
    g = torch.Generator().manual_seed(3)
    masks = torch.zeros(6, 37, 53, dtype=dtype)
    for i, (y0, x0, y1, x1) in enumerate([(3, 4, 10, 20), (0, 0, 37, 53), (36, 52, 37, 53), (5, 5, 6, 30)]):
        masks[i, y0:y1, x0:x1] = (torch.rand(y1 - y0, x1 - x0, generator=g) > 0.3).to(dtype)
        masks[i, y0, x0] = masks[i, y1 - 1, x1 - 1] = 1
    # masks 4 and 5 stay empty
    got = ops.masks_to_boxes(masks)
    assert got.dtype == torch.float32
    assert torch.equal(got, R.masks_to_boxes(masks))
    assert torch.equal(got[4:], torch.zeros(2, 4))
    assert ops.masks_to_boxes(masks[:0]).shape == (0, 4)
    nan = torch.zeros(1, 4, 4)
    nan[0, 2, 1] = math.nan
    assert ops.masks_to_boxes(nan).tolist() == [[1.0, 2.0, 1.0, 2.0]]  # NaN is nonzero, as in masks.bool()


def test_argument_errors():
    masks, boxes = _masks_and_boxes(2)
    with pytest.raises(ValueError, match=r"pydet.paste_masks_in_image: masks must have shape \[N, 1, M, M\]"):
        ops.paste_masks_in_image(masks[:, 0], boxes, (10, 10))
    with pytest.raises(ValueError, match=r"pydet.paste_masks_in_image: boxes must have shape \[N, 4\]"):
        ops.paste_masks_in_image(masks, boxes[:1], (10, 10))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        ops.paste_masks_in_image(masks, boxes, (10, 10), -1)
    with pytest.raises(ValueError, match=r"the image size must be >= 0"):
        ops.paste_masks_in_image(masks, boxes, (-1, 10))
    with pytest.raises(TypeError, match="masks must be a floating-point tensor"):
        ops.paste_masks_in_image(masks.int(), boxes, (10, 10))
    with pytest.raises(
        ValueError, match=r"paste_masks_in_image_detectron2: masks must have shape \[N, M, M\]"
    ):
        paste_detectron2(masks, boxes, (10, 10))
    with pytest.raises(ValueError, match=r"pydet.masks_to_boxes: masks must have shape \[N, H, W\]"):
        ops.masks_to_boxes(masks)
