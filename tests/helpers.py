"""Shared test helpers: box generators (plain and hypothesis) and comparison utilities."""

from __future__ import annotations

import os

import numpy as np
import torch
from hypothesis import strategies as st

import pydet

HAS_CUDA = torch.cuda.is_available() and bool(pydet.build_info()["cuda"])

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def random_boxes(
    n: int, *, scale: float = 100.0, dtype=torch.float32, device="cpu", seed: int = 0
) -> torch.Tensor:
    """xyxy boxes with corners in [0, scale) and sides in [0, scale / 2)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale / 2
    return torch.cat([xy, xy + wh], 1).to(dtype=dtype, device=device)


# ---- hypothesis -------------------------------------------------------------------------------
_SCALES = {"normal": 1000.0, "tiny": 1e-30, "huge": 1e30, "unit": 1.0}


@st.composite
def box_arrays(draw, min_n: int = 0, max_n: int = 24, special: bool = True) -> np.ndarray:
    """float64 [n, 4] xyxy boxes mixing regimes: ordinary, tiny (1e-30) and huge (1e30) coordinates,
    duplicated boxes, zero-area and inverted boxes, and (when ``special``) NaN/inf coordinates."""
    n = draw(st.integers(min_n, max_n))
    scale = _SCALES[draw(st.sampled_from(sorted(_SCALES)))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    xy = rng.uniform(-0.25, 1.0, size=(n, 2)) * scale
    wh = rng.uniform(0.0, 0.5, size=(n, 2)) * scale
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if n:
        if draw(st.booleans()):  # duplicates: draw rows from a small pool
            boxes = boxes[rng.integers(0, max(1, n // 3), size=n)]
        if draw(st.booleans()):  # zero-area and inverted boxes
            k = rng.integers(0, n, size=max(1, n // 4))
            boxes[k, 2] = boxes[k, 0] - rng.choice([0.0, 1.0], size=k.shape) * scale * 0.1
        if draw(st.booleans()):  # integer-valued coordinates make exact ties of edges likely
            boxes = np.round(boxes / max(scale, 1.0) * 8) * max(scale, 1.0) / 8
        if special and draw(st.booleans()):
            k = rng.integers(0, n, size=max(1, n // 5))
            c = rng.integers(0, 4, size=k.shape)
            boxes[k, c] = rng.choice([np.nan, np.inf, -np.inf], size=k.shape)
    # -0.0 -> +0.0: PyTorch's own max/min return either zero on a (-0.0, +0.0) tie depending on the
    # SIMD lane, so a signed-zero tie has no single reference answer to compare against.
    return boxes + 0.0


def assert_same(
    actual: torch.Tensor, expected: torch.Tensor, *, atol: float = 0.0, rtol: float = 0.0
) -> None:
    """Equal values (bit-exact by default), NaN where the reference has NaN, same shape and dtype."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True)


def ulp_tolerance(dtype: torch.dtype) -> dict:
    """Tolerance for formulas that go through atan (the only non-correctly-rounded step)."""
    eps = torch.finfo(dtype).eps
    return dict(atol=8 * eps, rtol=8 * eps)


def import_torchvision():
    """torchvision for comparison tests, or None when it is not installed.

    A torchvision wheel built for another torch (e.g. a CUDA build next to a CPU torch) imports
    its Python code but cannot load its C++ ops; the models only need ``torchvision::nms``, so it
    is defined here on pydet's ``nms`` (same convention) and the models become usable.

    With ``PYDET_REQUIRE_TORCHVISION=1`` (CI's torchvision environment) a missing torchvision or one
    without its C++ ops raises instead: there every comparison must run against torchvision's code.
    """
    required = os.environ.get("PYDET_REQUIRE_TORCHVISION") == "1"
    try:
        import torchvision
    except ImportError:
        if required:
            raise
        return None
    except RuntimeError:  # "operator torchvision::nms does not exist"
        if required:
            raise
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl("nms", lambda b, s, t: torch.ops.pydet.nms(b, s, t), "CompositeExplicitAutograd")
        _TORCHVISION_SHIM.append(lib)
        import torchvision
        import torchvision.extension

        torchvision.extension._has_ops = lambda: True
    return torchvision


_TORCHVISION_SHIM: list = []  # keeps the shim library alive
