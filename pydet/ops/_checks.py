"""Argument checks of the Python fake kernels, which only the ops whose output length depends on
the data have (``remove_small_boxes`` and the greedy and soft NMS ops; every other op's C++ front end
is registered for Meta and checks once for every mode).

They raise the same exception types and messages as the C++ checks in ``csrc/common/checks.cpp``
and the NMS front ends (``csrc/ops/nms.h``, ``soft_nms.h``, ``nms_rotated.h``), so a bad call fails
identically in eager mode, under ``torch.compile`` and under ``torch.export``
(``tests/test_bad_input.py`` holds the two sides to that).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


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


def check_boxes(
    t: torch.Tensor, op: str, arg: str, expected: str, min_rank: int, max_rank: int, integers: bool = False
) -> None:
    """``integers``: integer dtypes are accepted too (C++'s ``BoxDtypes::kFloatingOrInteger``)."""
    if not (min_rank <= t.dim() <= max_rank and t.shape[-1] == 4):
        raise ValueError(f"pydet.{op}: {arg} must have shape {expected}, got {shape_str(t.shape)}")
    if not integers:
        check_floating(t, op, arg)
    elif t.dtype not in FLOAT_DTYPES and (
        t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool
    ):
        raise TypeError(
            f"pydet.{op}: {arg} must be a floating-point or integer tensor (float32, float64, float16, bfloat16 "
            f"or int8 to int64), got {dtype_name(t.dtype)}"
        )


def check_same_device(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str, op: str) -> None:
    if a.device != b.device:
        raise ValueError(
            f"pydet.{op}: {a_name} and {b_name} must be on the same device, got {a.device} and {b.device}"
        )


def check_choice(value: str, choices: Sequence[str], op: str, arg: str) -> None:
    if value not in choices:
        options = ", ".join(f"'{c}'" for c in choices)
        raise ValueError(f"pydet.{op}: {arg} must be one of {options}, got '{value}'")
