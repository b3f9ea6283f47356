"""Argument checks of the fake (meta) kernels.

They raise the same exception types and messages as the C++ checks in ``csrc/common/checks.cpp``,
so a bad call fails identically in eager mode, under ``torch.compile`` and under ``torch.export``
(``tests/test_bad_input.py`` holds the two sides to that).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
REDUCTIONS = ("none", "mean", "sum")
OVERLAP_MODES = ("iou", "iof", "giou")
METRICS = (
    "iou",
    "giou",
    "diou",
    "ciou",
    "giou_loss",
    "diou_loss",
    "ciou_loss",
    "mm_iou",
    "mm_iof",
    "mm_giou",
)
ANY_RANK = 1 << 62


def shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_floating(t: torch.Tensor, op: str, arg: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"pydet.{op}: {arg} must be a floating-point tensor (float32, float64, float16 or bfloat16), "
            f"got {dtype_name(t.dtype)}"
        )


def check_integer(t: torch.Tensor, op: str, arg: str, what: str) -> None:
    """An integer tensor (any width, not bool); ``what`` says what its values are."""
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"pydet.{op}: {arg} must be an integer tensor ({what}), got {dtype_name(t.dtype)}")


def check_boxes(t: torch.Tensor, op: str, arg: str, expected: str, min_rank: int, max_rank: int) -> None:
    if not (min_rank <= t.dim() <= max_rank and t.shape[-1] == 4):
        raise ValueError(f"pydet.{op}: {arg} must have shape {expected}, got {shape_str(t.shape)}")
    check_floating(t, op, arg)


def check_same_device(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str, op: str) -> None:
    if a.device != b.device:
        raise ValueError(
            f"pydet.{op}: {a_name} and {b_name} must be on the same device, got {a.device} and {b.device}"
        )


def check_choice(value: str, choices: Sequence[str], op: str, arg: str) -> None:
    if value not in choices:
        options = ", ".join(f"'{c}'" for c in choices)
        raise ValueError(f"pydet.{op}: {arg} must be one of {options}, got '{value}'")


def check_pairwise(op: str, boxes1, n1: str, boxes2, n2: str, batched: bool) -> None:
    if batched:
        check_boxes(boxes1, op, n1, "[..., M, 4]", 2, ANY_RANK)
        check_boxes(boxes2, op, n2, "[..., N, 4]", 2, ANY_RANK)
        if boxes1.shape[:-2] != boxes2.shape[:-2]:
            raise ValueError(
                f"pydet.{op}: the batch dimensions of {n1} {shape_str(boxes1.shape)} and {n2} "
                f"{shape_str(boxes2.shape)} must match"
            )
    else:
        check_boxes(boxes1, op, n1, "[N, 4]", 2, 2)
        check_boxes(boxes2, op, n2, "[M, 4]", 2, 2)
    check_same_device(boxes1, n1, boxes2, n2, op)


def broadcast_leading(op: str, boxes1, n1: str, boxes2, n2: str) -> list[int]:
    """Checks an aligned pair of box tensors; returns the broadcast shape of their leading dims."""
    check_boxes(boxes1, op, n1, "[..., 4]", 1, ANY_RANK)
    check_boxes(boxes2, op, n2, "[..., 4]", 1, ANY_RANK)
    check_same_device(boxes1, n1, boxes2, n2, op)
    a, b = list(boxes1.shape[:-1]), list(boxes2.shape[:-1])
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    out = []
    for da, db in zip(a, b, strict=True):
        if da != db and da != 1 and db != 1:
            raise ValueError(
                f"pydet.{op}: the leading dimensions of {n1} {shape_str(boxes1.shape)} and {n2} "
                f"{shape_str(boxes2.shape)} must be equal or broadcastable"
            )
        out.append(db if da == 1 else da)
    return out
