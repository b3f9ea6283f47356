"""Native baselines: ``bench/*_reference.cpp`` (torchvision's CPU NMS, roi_align and deform_conv2d
kernels and mmcv's soft-NMS, written the way those libraries write them), compiled with the system C++ compiler on first
use, cached under ``~/.cache/pydet`` and called through ctypes. ``library()`` is None when the source
tree or a compiler is missing; the benchmarks then fall back to the plain-torch references (NMS) or
leave the baseline out (roi_align, deform_conv2d)."""

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

_SOURCES = ("nms_reference.cpp", "roi_align_reference.cpp", "deform_conv_reference.cpp")


def _sources() -> list[pathlib.Path] | None:
    from pydet import _build_config

    folder = os.environ.get("PYDET_BENCH_DIR") or str(pathlib.Path(_build_config.SOURCE_DIR) / "bench")
    paths = [pathlib.Path(folder) / name for name in _SOURCES]
    return paths if all(p.exists() for p in paths) else None


@functools.cache
def library() -> ctypes.CDLL | None:
    sources = _sources()
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if sources is None or cxx is None:
        return None
    digest = hashlib.sha256(b"".join(src.read_bytes() for src in sources)).hexdigest()[:16]
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "pydet"
    lib = cache / f"references-{digest}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
        cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", *map(str, sources), "-o", str(tmp)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
        os.replace(tmp, lib)
    dll = ctypes.CDLL(str(lib))
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    dll.greedy_nms.argtypes = [ptr, ptr, i64, ctypes.c_double, ptr]
    dll.greedy_nms.restype = i64
    dll.soft_nms.argtypes = [ptr, ptr, i64, f32, f32, f32, ctypes.c_int, ptr, ptr]
    dll.soft_nms.restype = i64
    roi_args = [ptr, ptr, i64, i64, i64, i64, i64, i64, f32, i64, ctypes.c_bool, ptr]
    dll.roi_align_forward.argtypes = roi_args
    dll.roi_align_backward.argtypes = roi_args
    dll.deform_im2col.argtypes = [ptr, ptr, ptr, ptr, ctypes.c_bool, ptr]
    dll.deform_col2im.argtypes = [ptr, ptr, ptr, ptr, ctypes.c_bool, ptr]
    dll.deform_col2im_coord.argtypes = [ptr, ptr, ptr, ptr, ptr, ctypes.c_bool, ptr, ptr]
    return dll


def _f32(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float32).contiguous()


def greedy_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's CPU NMS kernel (float32)."""
    lib = library()
    b, s = _f32(boxes), _f32(scores)
    keep = torch.empty(len(s), dtype=torch.int64)
    k = lib.greedy_nms(b.data_ptr(), s.data_ptr(), len(s), iou_threshold, keep.data_ptr())
    return keep[:k].to(boxes.device)


def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method="linear"):
    """mmcv's CPU soft-NMS kernel (float32)."""
    lib = library()
    b, s = _f32(boxes), _f32(scores)
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


def roi_align(input: Tensor, rois: Tensor, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """torchvision's CPU roi_align kernel (float32, one thread)."""
    x, r = _f32(input), _f32(rois)
    _, c, h, w = x.shape
    out = torch.empty(len(r), c, *output_size)
    shape = (len(r), c, h, w, *output_size)
    library().roi_align_forward(
        x.data_ptr(), r.data_ptr(), *shape, spatial_scale, sampling_ratio, aligned, out.data_ptr()
    )
    return out


def roi_align_backward(
    grad: Tensor, rois: Tensor, input_shape, spatial_scale=1.0, sampling_ratio=-1, aligned=False
):
    """torchvision's CPU roi_align backward kernel: the gradient of the input (float32, one thread)."""
    g, r = _f32(grad), _f32(rois)
    n, c, h, w = input_shape
    grad_input = torch.zeros(n, c, h, w)
    shape = (len(r), c, h, w, *g.shape[2:])
    library().roi_align_backward(
        g.data_ptr(), r.data_ptr(), *shape, spatial_scale, sampling_ratio, aligned, grad_input.data_ptr()
    )
    return grad_input


class DeformConv2d:
    """torchvision's CPU deform_conv2d (float32): its im2col, col2im and col2im_coord kernels (one
    thread, bench/deform_conv_reference.cpp) with the GEMMs through torch.mm, as torchvision calls
    ATen's addmm, for all images at once (torchvision's n_parallel_imgs for up to 32 images)."""

    def __init__(self, input, offset, weight, stride, padding, dilation, mask):
        self.x, self.offset, self.weight = _f32(input), _f32(offset), _f32(weight)
        self.use_mask = mask is not None
        self.mask = _f32(mask) if self.use_mask else torch.zeros(1)
        n, c, h, w = self.x.shape
        oc, cw, kh, kw = self.weight.shape
        self.groups, self.taps = c // cw, kh * kw
        oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
        ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
        offset_groups = self.offset.shape[1] // (2 * self.taps)
        sizes = (
            n,
            c,
            h,
            w,
            kh,
            kw,
            stride,
            stride,
            padding,
            padding,
            dilation,
            dilation,
            oh,
            ow,
            offset_groups,
        )
        self.sizes = torch.tensor(sizes, dtype=torch.int64)
        self.out_shape = (n, oc, oh, ow)

    def _columns(self) -> Tensor:
        n, _, oh, ow = self.out_shape
        cols = torch.empty(self.x.shape[1] * self.taps, n * oh * ow)
        library().deform_im2col(
            self.x.data_ptr(),
            self.offset.data_ptr(),
            self.mask.data_ptr(),
            self.sizes.data_ptr(),
            self.use_mask,
            cols.data_ptr(),
        )
        return cols

    def _weight_groups(self) -> Tensor:
        return self.weight.reshape(self.groups, self.weight.shape[0] // self.groups, -1)

    def forward(self, bias: Tensor | None) -> Tensor:
        n, oc, oh, ow = self.out_shape
        cols = self._columns().reshape(self.groups, -1, n * oh * ow)
        out = torch.bmm(self._weight_groups(), cols).reshape(oc, n, oh, ow).transpose(0, 1)
        return out + _f32(bias).view(1, -1, 1, 1) if bias is not None else out.contiguous()

    def backward(self, grad: Tensor) -> tuple[Tensor, ...]:
        """The gradients of input, offset, weight and mask (None without one) of ``out`` given ``grad``."""
        n, oc, oh, ow = self.out_shape
        g = _f32(grad).transpose(0, 1).reshape(self.groups, oc // self.groups, n * oh * ow)
        weights = self._weight_groups()
        grad_cols = torch.bmm(weights.transpose(1, 2), g).reshape(-1, n * oh * ow)
        grad_input = torch.zeros_like(self.x)
        grad_offset = torch.zeros_like(self.offset)
        grad_mask = torch.zeros_like(self.mask)
        lib = library()
        lib.deform_col2im(
            grad_cols.data_ptr(),
            self.offset.data_ptr(),
            self.mask.data_ptr(),
            self.sizes.data_ptr(),
            self.use_mask,
            grad_input.data_ptr(),
        )
        lib.deform_col2im_coord(
            grad_cols.data_ptr(),
            self.x.data_ptr(),
            self.offset.data_ptr(),
            self.mask.data_ptr(),
            self.sizes.data_ptr(),
            self.use_mask,
            grad_offset.data_ptr(),
            grad_mask.data_ptr(),
        )
        cols = self._columns().reshape(self.groups, -1, n * oh * ow)
        grad_weight = torch.bmm(g, cols.transpose(1, 2)).reshape(self.weight.shape)
        return grad_input, grad_offset, grad_weight, grad_mask if self.use_mask else None
