"""Bad arguments raise a Python exception that names the argument and what was expected -- the same
exception and message in eager mode (C++ checks) and under fake tensors (torch.compile/export)."""

import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import pydet.ops as ops

b = torch.rand(5, 4) * 10
b3 = b.reshape(1, 5, 4)


CASES = [
    # (call, exception, message fragment)
    (lambda: ops.box_iou(torch.rand(5, 3), b), ValueError, "boxes1 must have shape [N, 4], got [5, 3]"),
    (lambda: ops.box_iou(b, torch.rand(4)), ValueError, "boxes2 must have shape [M, 4], got [4]"),
    (lambda: ops.box_iou(b3, b), ValueError, "boxes1 must have shape [N, 4], got [1, 5, 4]"),
    (
        lambda: ops.box_iou(b.long(), b),
        TypeError,
        "boxes1 must be a floating-point tensor (float32, float64, float16 or bfloat16), got int64",
    ),
    (lambda: ops.generalized_box_iou(b, b.int()), TypeError, "boxes2 must be a floating-point tensor"),
    (lambda: ops.distance_box_iou(b, b.bool()), TypeError, "got bool"),
    (lambda: ops.complete_box_iou(b.to(torch.complex64), b), TypeError, "got complex64"),
    (
        lambda: ops.box_iou_aligned(b, torch.rand(3, 4)),
        ValueError,
        "leading dimensions of boxes1 [5, 4] and boxes2 [3, 4] must be equal or broadcastable",
    ),
    (
        lambda: ops.box_area(torch.rand(5, 5)),
        ValueError,
        "pydet.box_area: boxes must have shape [..., 4], got [5, 5]",
    ),
    (lambda: ops.box_area(torch.rand(())), ValueError, "boxes must have shape [..., 4], got []"),
    (lambda: ops.box_area(b.long()), TypeError, "pydet.box_area: boxes must be a floating-point tensor"),
    (
        lambda: ops.box_convert(b, "xyxy", "ltrb"),
        ValueError,
        "out_fmt must be one of 'xyxy', 'xywh', 'cxcywh', got 'ltrb'",
    ),
    (
        lambda: ops.box_convert(b, "XYXY", "xywh"),
        ValueError,
        "in_fmt must be one of 'xyxy', 'xywh', 'cxcywh', got 'XYXY'",
    ),
    (
        lambda: ops.box_convert(torch.rand(5, 2), "xyxy", "xywh"),
        ValueError,
        "boxes must have shape [..., 4], got [5, 2]",
    ),
    (
        lambda: ops.clip_boxes_to_image(b, (-1, 10)),
        ValueError,
        "size must be (height, width) with both >= 0, got [-1, 10]",
    ),
    (lambda: ops.clip_boxes_to_image(b.long(), (10, 10)), TypeError, "boxes must be a floating-point tensor"),
    (
        lambda: ops.remove_small_boxes(b3, 1.0),
        ValueError,
        "pydet.remove_small_boxes: boxes must have shape [N, 4], got [1, 5, 4]",
    ),
    (
        lambda: ops.bbox_overlaps(b, b, mode="dice"),
        ValueError,
        "mode must be one of 'iou', 'iof', 'giou', got 'dice'",
    ),
    (lambda: ops.bbox_overlaps(b, b, offset=2), ValueError, "offset must be 0 or 1, got 2"),
    (
        lambda: ops.bbox_overlaps(b3, b3.expand(2, 5, 4)),
        ValueError,
        "the batch dimensions of bboxes1 [1, 5, 4] and bboxes2 [2, 5, 4] must match",
    ),
    (
        lambda: ops.bbox_overlaps(b, b[:3], is_aligned=True),
        ValueError,
        "with is_aligned=True, bboxes1 [5, 4] and bboxes2 [3, 4] must have the same shape",
    ),
    (lambda: ops.bbox_overlaps(torch.rand(4), b), ValueError, "bboxes1 must have shape [..., M, 4], got [4]"),
    (
        lambda: ops.generalized_box_iou_loss(b, b, "avg"),
        ValueError,
        "reduction must be one of 'none', 'mean', 'sum', got 'avg'",
    ),
    (lambda: ops.distance_box_iou_loss(b, b[:2]), ValueError, "must be equal or broadcastable"),
    (
        lambda: ops.complete_box_iou_loss(b.half(), b.long()),
        TypeError,
        "boxes2 must be a floating-point tensor",
    ),
    (
        lambda: torch.ops.pydet._pairwise_box_metric_backward(torch.ones(5, 5), b, b, "nope", 0.0, 0.0),
        ValueError,
        "metric must be one of",
    ),
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_eager_error_names_the_argument(index):
    call, exc, message = CASES[index]
    with pytest.raises(exc, match=re.escape(message)):
        call()


@pytest.mark.parametrize("index", range(len(CASES)))
def test_fake_kernels_raise_the_same_error(index):
    """Under fake tensors (what torch.compile/export trace with) the same exception and message."""
    call, exc, _ = CASES[index]
    with pytest.raises(exc) as eager:
        call()
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(exc) as fake:
        call()
    assert str(fake.value).splitlines()[0] == str(eager.value).splitlines()[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices")
def test_mismatched_devices():
    with pytest.raises(
        ValueError, match=re.escape("boxes1 and boxes2 must be on the same device, got cuda:0 and cpu")
    ):
        ops.box_iou(b.cuda(), b)


def test_mismatched_devices_meta():
    """A meta and a CPU tensor exercise the same device check without a GPU."""
    with pytest.raises(
        ValueError, match=re.escape("boxes1 and boxes2 must be on the same device, got meta and cpu")
    ):
        ops.box_iou(b.to("meta"), b)
