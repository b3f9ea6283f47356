"""Native baselines: ``bench/nms_reference.cpp`` (torchvision's CPU NMS kernel and mmcv's soft-NMS,
written the way those libraries write them), compiled with the system C++ compiler on first use,
cached under ``~/.cache/pydet`` and called through ctypes. ``library()`` is None when the source
tree or a compiler is missing; the benchmarks then fall back to the plain-torch references."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess

import torch
from torch import Tensor

_SOURCE = "nms_reference.cpp"


def _source() -> pathlib.Path | None:
    from pydet import _build_config

    folder = os.environ.get("PYDET_BENCH_DIR") or str(pathlib.Path(_build_config.SOURCE_DIR) / "bench")
    path = pathlib.Path(folder) / _SOURCE
    return path if path.exists() else None


@functools.cache
def library() -> ctypes.CDLL | None:
    src = _source()
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if src is None or cxx is None:
        return None
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "pydet"
    lib = cache / f"nms_reference-{digest}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
        cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", str(src), "-o", str(tmp)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
        os.replace(tmp, lib)
    dll = ctypes.CDLL(str(lib))
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    dll.greedy_nms.argtypes = [ptr, ptr, i64, ctypes.c_double, ptr]
    dll.greedy_nms.restype = i64
    dll.soft_nms.argtypes = [ptr, ptr, i64, f32, f32, f32, ctypes.c_int, ptr, ptr]
    dll.soft_nms.restype = i64
    return dll


def greedy_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's CPU NMS kernel (float32)."""
    lib = library()
    b = boxes.detach().to("cpu", torch.float32).contiguous()
    s = scores.detach().to("cpu", torch.float32).contiguous()
    keep = torch.empty(len(s), dtype=torch.int64)
    k = lib.greedy_nms(b.data_ptr(), s.data_ptr(), len(s), iou_threshold, keep.data_ptr())
    return keep[:k].to(boxes.device)


def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method="linear"):
    """mmcv's CPU soft-NMS kernel (float32)."""
    lib = library()
    b = boxes.detach().to("cpu", torch.float32).contiguous()
    s = scores.detach().to("cpu", torch.float32).contiguous()
    dets = torch.empty(len(s), 5)
    keep = torch.empty(len(s), dtype=torch.int64)
    code = {"naive": 0, "linear": 1, "gaussian": 2}[method]
    k = lib.soft_nms(
        b.data_ptr(),
        s.data_ptr(),
        len(s),
        iou_threshold,
        sigma,
        min_score,
        code,
        dets.data_ptr(),
        keep.data_ptr(),
    )
    return dets[:k], keep[:k]
