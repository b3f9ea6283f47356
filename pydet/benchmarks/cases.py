"""The workloads ``pydet bench`` and ``bench/`` time: each pairs a pydet operator with the
plain-PyTorch formula it replaces (``pydet.reference``, the formula torchvision/mmdet use) and, when
torchvision is importable, torchvision's own implementation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import pydet.ops as ops
from pydet import reference as R


@dataclass
class Case:
    name: str  # e.g. "box_iou"
    size: str  # human-readable size, e.g. "1000x100000"
    family: str
    make: Callable[[str], tuple]  # device -> inputs
    pydet: Callable
    reference: Callable
    torchvision: Callable | None = None  # called with the same inputs; None: no counterpart
    quick: bool = True  # part of --quick
    memory_bound: bool = True  # report the floor: bytes read + written at the copy bandwidth

    @property
    def id(self) -> str:
        return f"{self.name}[{self.size}]"


def random_boxes(
    n: int, device: str, seed: int, image: float = 1000.0, max_side: float = 200.0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * image
    wh = torch.rand(n, 2, generator=g) * max_side + 1
    return torch.cat([xy, xy + wh], 1).to(device)


def _tv():
    try:
        import torchvision.ops as tvops
    except Exception:  # torchvision missing or built for another torch
        return None
    return tvops


def _with_grad(loss_fn):
    """Forward + backward of a loss, as a training step runs it."""

    def run(b1, b2):
        x = b1.detach().requires_grad_()
        loss = loss_fn(x, b2)
        loss.backward()
        return x.grad

    return run


def box_cases() -> list[Case]:
    tv = _tv()
    cases: list[Case] = []

    def pair(m, n):
        return lambda d: (random_boxes(m, d, 1), random_boxes(n, d, 2))

    for m, n, quick in ((100, 20_000, True), (1000, 100_000, False)):
        cases.append(
            Case("box_iou", f"{m}x{n}", "boxes", pair(m, n), ops.box_iou, R.box_iou, tv and tv.box_iou, quick)
        )
    for name in ("generalized_box_iou", "distance_box_iou", "complete_box_iou"):
        cases.append(
            Case(
                name,
                "100x20000",
                "boxes",
                pair(100, 20_000),
                getattr(ops, name),
                getattr(R, name),
                tv and getattr(tv, name),
                quick=name == "generalized_box_iou",
            )
        )
    cases.append(
        Case(
            "bbox_overlaps(giou)",
            "8x100x5000",
            "boxes",
            lambda d: (
                random_boxes(800, d, 3).reshape(8, 100, 4),
                random_boxes(40_000, d, 4).reshape(8, 5000, 4),
            ),
            lambda a, b: ops.bbox_overlaps(a, b, "giou"),
            lambda a, b: R.bbox_overlaps(a, b, "giou"),
            quick=False,
        )
    )
    cases.append(
        Case(
            "generalized_box_iou_aligned",
            "1000000",
            "boxes",
            pair(1_000_000, 1_000_000),
            ops.generalized_box_iou_aligned,
            R.generalized_box_iou_aligned,
            quick=False,
        )
    )
    for name in ("generalized_box_iou_loss", "complete_box_iou_loss"):
        cases.append(
            Case(
                name + " fwd+bwd",
                "100000",
                "boxes",
                pair(100_000, 100_000),
                _with_grad(lambda x, y, name=name: getattr(ops, name)(x, y, "mean")),
                _with_grad(lambda x, y, name=name: getattr(R, name)(x, y, "mean")),
                tv and _with_grad(lambda x, y, name=name: getattr(tv, name)(x, y, "mean")),
                quick=name == "generalized_box_iou_loss",
                memory_bound=False,
            )
        )
    one = lambda d: (random_boxes(1_000_000, d, 5),)  # noqa: E731
    cases += [
        Case("box_area", "1000000", "boxes", one, ops.box_area, R.box_area, tv and tv.box_area),
        Case(
            "box_convert(cxcywh->xyxy)",
            "1000000",
            "boxes",
            one,
            lambda b: ops.box_convert(b, "cxcywh", "xyxy"),
            lambda b: R.box_convert(b, "cxcywh", "xyxy"),
            tv and (lambda b: tv.box_convert(b, "cxcywh", "xyxy")),
        ),
        Case(
            "clip_boxes_to_image",
            "1000000",
            "boxes",
            one,
            lambda b: ops.clip_boxes_to_image(b, (800, 1333)),
            lambda b: R.clip_boxes_to_image(b, (800, 1333)),
            tv and (lambda b: tv.clip_boxes_to_image(b, (800, 1333))),
            quick=False,
        ),
        Case(
            "remove_small_boxes",
            "1000000",
            "boxes",
            one,
            lambda b: ops.remove_small_boxes(b, 50.0),
            lambda b: R.remove_small_boxes(b, 50.0),
            tv and (lambda b: tv.remove_small_boxes(b, 50.0)),
            quick=False,
        ),
    ]
    return cases


def all_cases() -> list[Case]:
    return box_cases()
