"""A generated corpus of bad inputs for every public op and a few module entry points.

``tests/test_bad_input.py`` pins ~90 exact messages by hand; this file instead *generates* cases so that no
(argument, kind of bad input) pair is forgotten. Each entry point has a small :class:`Spec`: one valid call
(valid tensors per argument and valid scalars), the kind of each tensor argument, invalid values for its
scalar arguments (thresholds out of range, unknown option strings) and the groups of arguments whose
lengths must agree. The mutation table :data:`MUTATIONS` then applies each class of bad input to each
tensor argument in turn:

* shape: wrong rank (unsqueeze / flatten), wrong size of the fixed dimension (e.g. 3 or 5 box columns),
  empty (0 rows), mismatched lengths between paired arguments;
* dtype: int64, int32, bool, complex64 for floating arguments; float32 and bool for integer ones;
* layout: strided (every other element of a bigger buffer), transposed (column-major), expanded
  (stride 0); PyTorch has no negative strides, so the "negative stride" class is a flipped *copy*
  (``.flip(0)``), checked as a value mutation;
* values: NaN, +inf, -inf in one coordinate, every coordinate scaled to 1e30 and to 1e-30, negative
  widths (``x2 < x1``; a negative ``w`` for rotated boxes);
* devices: the argument on CUDA and the rest on the CPU (not applicable without CUDA: counted, not run),
  and the argument on the meta device (runs everywhere; reaches the same device checks).

Every case must either return normally -- tensors only; for layout mutations the result equals the call
on a contiguous copy of the same values; for value mutations of ops with data-independent output shapes
the shapes of the valid call (NaN/inf propagation is documented in the op docstrings and README) -- or
raise ``ValueError``/``TypeError``/``RuntimeError``/``IndexError``/``NotImplementedError`` whose message
names the argument (or an alias from the spec: the kernels call the coders' ``proposals`` "reference").
A dtype error may instead name the op and say "dtype"/"floating". Anything else is a failure with the
case id. A per-case faulthandler watchdog turns a hang into a traceback and an exit, never a stuck CI.

Real bugs found by the corpus are listed in :data:`KNOWN_BUGS` (strict xfail: a fix must remove the
entry). The count of cases per outcome is printed by the last test (``bad-input corpus: ...``).
"""

from __future__ import annotations

import faulthandler
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import pytest
import torch

import pydet.ops as ops
from pydet.coders import BoxCoder
from pydet.layers import DepthwiseConv2d
from pydet.layers import paste_masks_in_image as paste_masks_detectron2
from pydet.matchers.torchvision import Matcher, SSDMatcher

HAS_CUDA = torch.cuda.is_available()
ALLOWED = (ValueError, TypeError, RuntimeError, IndexError, NotImplementedError)
HANG_SECONDS = 30  # far above any case's run time (milliseconds): only a real hang trips it

# Tensor kinds: what "a wrong fixed dimension" and "negative width" mean for the argument.
XYXY, ROT, ROIS, FLOAT, INT, MASK, IMAGE = "xyxy", "rot", "rois", "float", "int", "mask", "image"
ROT_ROIS = "rot_rois"
FLOATING = (XYXY, ROT, ROIS, ROT_ROIS, FLOAT, IMAGE)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def xyxy(*shape: int, seed: int = 0) -> torch.Tensor:
    """Valid xyxy boxes ``[*shape, 4]`` with positive sides."""
    xy = torch.rand(*shape, 2, generator=_g(seed)) * 50
    wh = torch.rand(*shape, 2, generator=_g(seed + 1)) * 30 + 1
    return torch.cat([xy, xy + wh], -1)


def rot(n: int, seed: int = 0) -> torch.Tensor:
    """Valid rotated boxes ``[n, 5]`` (cx, cy, w, h, angle in degrees)."""
    c = torch.rand(n, 2, generator=_g(seed)) * 50
    wh = torch.rand(n, 2, generator=_g(seed + 1)) * 30 + 1
    angle = torch.rand(n, 1, generator=_g(seed + 2)) * 180 - 90
    return torch.cat([c, wh, angle], -1)


def rois(n: int, batch: int, seed: int = 0) -> torch.Tensor:
    """Valid RoIs ``[n, 5]``: (batch index, x1, y1, x2, y2)."""
    index = torch.arange(n, dtype=torch.float32)[:, None] % batch
    return torch.cat([index, xyxy(n, seed=seed) / 4], 1)


def rotated_rois(n: int, batch: int, seed: int = 0) -> torch.Tensor:
    """Valid rotated RoIs ``[n, 6]``: (batch index, cx, cy, w, h, angle in degrees)."""
    index = torch.arange(n, dtype=torch.float32)[:, None] % batch
    return torch.cat([index, rot(n, seed=seed) / torch.tensor([4.0, 4, 4, 4, 1])], 1)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=_g(seed))


@dataclass
class Arg:
    kind: str
    make: Callable[[], torch.Tensor]
    fixed_dim: int | None = None  # the dimension whose size is prescribed (box columns, channels)


@dataclass
class Spec:
    name: str
    call: Callable[[dict], object]
    tensors: dict[str, Arg]
    scalars: dict[str, list] = field(default_factory=dict)  # name -> invalid values (each must raise)
    groups: list[list[tuple[str, int]]] = field(default_factory=list)  # (arg, dim) that must agree
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # other names the messages use
    static_shape: bool = True  # output shapes depend on input shapes only (not on values)
    skip: frozenset[str] = frozenset()  # mutations that do not apply to this entry point
    casts: frozenset[str] = frozenset()  # arguments documented to be converted (any dtype accepted)
    integers: frozenset[str] = frozenset()  # floating arguments that also take integer dtypes (torchvision)
    # (arg, mutation) -> a fragment of a documented message that does not name the argument
    documented: dict[tuple[str, str], str] = field(default_factory=dict)


def box(*shape, seed=0):
    return Arg(XYXY, lambda: xyxy(*shape, seed=seed), -1)


def rbox(n, seed=0):
    return Arg(ROT, lambda: rot(n, seed=seed), -1)


def vec(*shape, seed=0, fixed=None):
    return Arg(FLOAT, lambda: rand(*shape, seed=seed), fixed)


def ints(values):
    return Arg(INT, lambda: torch.tensor(values, dtype=torch.int64))


# ---- the specs ----------------------------------------------------------------------------------
THRESHOLD_BAD = [-0.1, float("nan")]


def _pairwise(name, fn, eps=False, fmt=False):
    scalars = {"fmt": ["XYWH", "ltrb"]} if fmt else {}
    return Spec(
        name,
        lambda a: fn(
            a["boxes1"],
            a["boxes2"],
            **({"eps": a["eps"]} if eps else {}),
            **({"fmt": a["fmt"]} if fmt else {}),
        ),
        {"boxes1": box(5), "boxes2": box(3, seed=7)},
        scalars,
        integers=frozenset({"boxes1", "boxes2"}),
    )


def _aligned(name, fn, eps=False):
    return Spec(
        name,
        lambda a: fn(a["boxes1"], a["boxes2"], **({"eps": a["eps"]} if eps else {})),
        {"boxes1": box(5), "boxes2": box(5, seed=7)},
        {},
        groups=[[("boxes1", 0), ("boxes2", 0)]],
        integers=frozenset({"boxes1", "boxes2"}),
    )


def _loss(name, fn):
    return Spec(
        name,
        lambda a: fn(a["boxes1"], a["boxes2"], a["reduction"], a["eps"]),
        {"boxes1": box(5), "boxes2": box(5, seed=7)},
        {"reduction": ["avg", "NONE", ""]},
        groups=[[("boxes1", 0), ("boxes2", 0)]],
        integers=frozenset({"boxes1", "boxes2"}),
    )


def _overlap_max(a):
    return ops.box_overlap_max(
        a["gt"], a["anchors"], a.get("num_gt"), a["mode"], a["anchors_first"], a["eps"], a.get("ignored")
    )


@cache
def tiny_detector():
    """The cheapest detector there is: SSDLite320 at width 0.25, eval mode, fixed weights."""
    import pydet.models

    torch.manual_seed(0)
    return pydet.models.ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.25).eval()


@cache
def depthwise_module():
    """One module for every case: a fresh one per call would have fresh random weights."""
    torch.manual_seed(0)
    return DepthwiseConv2d(3, 3, padding=1, activation="relu6")


SPECS: list[Spec] = [
    Spec(
        "box_area",
        lambda a: ops.box_area(a["boxes"], a["fmt"]),
        {"boxes": box(5)},
        {"fmt": ["XYXY", "xywhr"]},
        integers=frozenset({"boxes"}),
    ),
    Spec(
        "box_convert",
        lambda a: ops.box_convert(a["boxes"], a["in_fmt"], a["out_fmt"]),
        {"boxes": box(5)},
        {"in_fmt": ["XYXY", "ltrb", ""], "out_fmt": ["xyxy ", "ltrb"]},
        integers=frozenset({"boxes"}),
    ),
    Spec(
        "clip_boxes_to_image",
        lambda a: ops.clip_boxes_to_image(a["boxes"], a["size"]),
        {"boxes": box(5)},
        {"size": [(-1, 10), (10, -1)]},
        integers=frozenset({"boxes"}),
    ),
    Spec(
        "remove_small_boxes",
        lambda a: ops.remove_small_boxes(a["boxes"], a["min_size"]),
        {"boxes": box(5)},
        static_shape=False,
        integers=frozenset({"boxes"}),
    ),
    _pairwise("box_iou", ops.box_iou, fmt=True),
    _pairwise("generalized_box_iou", ops.generalized_box_iou),
    _pairwise("distance_box_iou", ops.distance_box_iou, eps=True),
    _pairwise("complete_box_iou", ops.complete_box_iou, eps=True),
    _aligned("box_iou_aligned", ops.box_iou_aligned),
    _aligned("generalized_box_iou_aligned", ops.generalized_box_iou_aligned),
    _aligned("distance_box_iou_aligned", ops.distance_box_iou_aligned, eps=True),
    _aligned("complete_box_iou_aligned", ops.complete_box_iou_aligned, eps=True),
    _loss("generalized_box_iou_loss", ops.generalized_box_iou_loss),
    _loss("distance_box_iou_loss", ops.distance_box_iou_loss),
    _loss("complete_box_iou_loss", ops.complete_box_iou_loss),
    Spec(
        "bbox_overlaps",
        lambda a: ops.bbox_overlaps(a["bboxes1"], a["bboxes2"], a["mode"], False, a["eps"], a["offset"]),
        {"bboxes1": box(5), "bboxes2": box(3, seed=7)},
        {"mode": ["dice", "IOU"], "offset": [2, -1]},
    ),
    Spec(
        "bbox_overlaps[aligned]",
        lambda a: ops.bbox_overlaps(a["bboxes1"], a["bboxes2"], a["mode"], True, a["eps"], a["offset"]),
        {"bboxes1": box(5), "bboxes2": box(5, seed=7)},
        {"mode": ["dice"], "offset": [2]},
        groups=[[("bboxes1", 0), ("bboxes2", 0)]],
    ),
    Spec(
        "nms",
        lambda a: ops.nms(a["boxes"], a["scores"], a["iou_threshold"]),
        {"boxes": box(6), "scores": vec(6)},
        {"iou_threshold": THRESHOLD_BAD},
        groups=[[("boxes", 0), ("scores", 0)]],
        static_shape=False,
    ),
    Spec(
        "batched_nms",
        lambda a: ops.batched_nms(a["boxes"], a["scores"], a["idxs"], a["iou_threshold"]),
        {"boxes": box(6), "scores": vec(6), "idxs": ints([0, 1, 0, 1, 2, 0])},
        {"iou_threshold": THRESHOLD_BAD},
        groups=[[("boxes", 0), ("scores", 0), ("idxs", 0)]],
        static_shape=False,
    ),
    Spec(
        "nms_rotated",
        lambda a: ops.nms_rotated(a["boxes"], a["scores"], a["iou_threshold"]),
        {"boxes": rbox(6), "scores": vec(6)},
        {"iou_threshold": THRESHOLD_BAD},
        groups=[[("boxes", 0), ("scores", 0)]],
        static_shape=False,
    ),
    Spec(
        "batched_nms_rotated",
        lambda a: ops.batched_nms_rotated(a["boxes"], a["scores"], a["idxs"], a["iou_threshold"]),
        {"boxes": rbox(6), "scores": vec(6), "idxs": ints([0, 1, 0, 1, 2, 0])},
        {"iou_threshold": THRESHOLD_BAD},
        groups=[[("boxes", 0), ("scores", 0), ("idxs", 0)]],
        static_shape=False,
    ),
    Spec(
        "box_iou_rotated",
        lambda a: ops.box_iou_rotated(a["boxes1"], a["boxes2"]),
        {"boxes1": rbox(4), "boxes2": rbox(3, seed=5)},
    ),
    Spec(
        "soft_nms",
        lambda a: ops.soft_nms(
            a["boxes"], a["scores"], a["iou_threshold"], a["sigma"], a["min_score"], a["method"], a["offset"]
        ),
        {"boxes": box(6), "scores": vec(6)},
        {
            "iou_threshold": THRESHOLD_BAD,
            "sigma": [0.0, -1.0, float("nan")],
            "method": ["hard", "Linear"],
            "offset": [3, -1],
        },
        groups=[[("boxes", 0), ("scores", 0)]],
        static_shape=False,
    ),
    Spec(
        "multiclass_nms",
        lambda a: ops.multiclass_nms(
            a["boxes"],
            a["scores"],
            a["score_threshold"],
            a["iou_threshold"],
            a["topk_per_class"],
            a["max_detections"],
            False,
            a["background_class"],
            a["box_format"],
        ),
        {"boxes": box(2, 6), "scores": vec(2, 6, 3)},
        {
            "score_threshold": [float("nan")],
            "iou_threshold": THRESHOLD_BAD,
            "topk_per_class": [0, -2],
            "max_detections": [-1],
            "background_class": [3, -1],
            "box_format": ["xywh", "XYXY"],
        },
        groups=[[("boxes", 0), ("scores", 0)], [("boxes", 1), ("scores", 1)]],
    ),
    Spec(
        "multiclass_nms[labels]",
        lambda a: ops.multiclass_nms(
            a["boxes"], a["scores"], 0.1, 0.5, -1, 4, labels=a["labels"], num_classes=a["num_classes"]
        ),
        {"boxes": box(2, 6), "scores": vec(2, 6), "labels": ints([[0, 2, -1, 1, 1, 0], [2, 2, 0, 1, -1, 1]])},
        {"num_classes": [0, 2, None]},
        groups=[[("boxes", 0), ("scores", 0), ("labels", 0)], [("boxes", 1), ("scores", 1), ("labels", 1)]],
    ),
    Spec(
        "topk_per_level",
        lambda a: ops.topk_per_level(a["scores"], a["k"], a["score_threshold"], a["level_sizes"]),
        {"scores": vec(2, 6, 3)},
        {"k": [-1], "score_threshold": [float("nan")], "level_sizes": [[4, 3], [8, -2], [7]]},
    ),
    Spec(
        "anchor_grid",
        lambda a: ops.anchor_grid(
            [a["base_anchors[0]"]], [a["shifts_x[0]"]], [a["shifts_y[0]"]], a["scales"]
        ),
        {
            "base_anchors[0]": Arg(XYXY, lambda: xyxy(3) - 20, -1),
            "shifts_x[0]": vec(4),
            "shifts_y[0]": vec(2, seed=3),
        },
        {"scales": [[1.0], [1.0, 2.0, 3.0]]},
        # The kernels say "base_anchors/shifts" in the dtype message.
        # and "base_anchors[0] and every other tensor" in the device message.
        aliases={
            "shifts_x[0]": ("shifts", "every other tensor"),
            "shifts_y[0]": ("shifts", "every other tensor"),
            "base_anchors[0]": ("base_anchors",),
        },
    ),
    Spec(
        "box_encode",
        lambda a: ops.box_encode(a["reference"], a["targets"], a["coding"], a["weights"]),
        {"reference": box(5), "targets": box(5, seed=7)},
        {"coding": ["yolo", "TORCHVISION"], "weights": [(1.0, 0.0, 1.0, 1.0), (1.0, math.nan, 1.0, 1.0)]},
        groups=[[("reference", 0), ("targets", 0)]],
    ),
    Spec(
        "box_encode[target_index]",
        lambda a: ops.box_encode(a["reference"], a["targets"], "mmdet", target_index=a["target_index"]),
        {"reference": box(5), "targets": box(3, seed=7), "target_index": ints([0, -1, 2, 1, 0])},
        groups=[[("reference", 0), ("target_index", 0)]],
    ),
    Spec(
        "box_decode",
        lambda a: ops.box_decode(
            a["reference"], a["deltas"], a["coding"], wh_clip=a["wh_clip"], max_shape=a["max_shape"]
        ),
        {"reference": box(5), "deltas": vec(5, 8, fixed=-1)},
        {"coding": ["yolo"], "wh_clip": [(2.5, 1.5)], "max_shape": [(-1.0, 10.0)]},
        groups=[[("reference", 0), ("deltas", 0)]],
    ),
    Spec(
        "box_decode[index]",
        lambda a: ops.box_decode(
            a["reference"], a["deltas"], "torchvision", max_shape=(40.0, 50.0), index=a["index"]
        ),
        {"reference": box(5), "deltas": vec(5, 8, fixed=-1), "index": ints([4, -1, 0, 4])},
        groups=[[("reference", 0), ("deltas", 0)]],
    ),
    Spec(
        "box_overlap_max",
        _overlap_max,
        {"gt": box(3), "anchors": box(6, seed=7)},
        {"mode": ["giou", "IOU"]},
    ),
    Spec(
        "box_overlap_max[batched]",
        _overlap_max,
        {
            "gt": box(2, 3),
            "anchors": box(6, seed=7),
            "num_gt": ints([3, 1]),
            "ignored": Arg(MASK, lambda: rand(2, 6) > 0.7),
        },
        {"mode": ["giou"]},
        groups=[[("gt", 0), ("num_gt", 0), ("ignored", 0)], [("anchors", 0), ("ignored", 1)]],
    ),
    Spec(
        "box_overlap_ties",
        lambda a: ops.box_overlap_ties(a["gt"], a["anchors"], a["gt_best"], 0.0, None, a["mode"]),
        {"gt": box(3), "anchors": box(6, seed=7), "gt_best": vec(3)},
        {"mode": ["giou"]},
        groups=[[("gt", 0), ("gt_best", 0)]],
    ),
    Spec(
        "depthwise_conv2d",
        lambda a: ops.depthwise_conv2d(
            a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], a["activation"]
        ),
        {"input": vec(1, 3, 8, 8, fixed=1), "weight": vec(3, 1, 3, 3, fixed=1), "bias": vec(3)},
        {
            "stride": [0, (1, 0), -1],
            "padding": [-1],
            "dilation": [0],
            "activation": ["gelu", "ReLU"],
        },
        groups=[[("input", 1), ("weight", 0), ("bias", 0)]],
    ),
    Spec(
        "deform_conv2d",
        lambda a: ops.deform_conv2d(
            a["input"],
            a["offset"],
            a["weight"],
            a["bias"],
            a["stride"],
            a["padding"],
            a["dilation"],
            a["mask"],
        ),
        {
            "input": vec(1, 4, 6, 6, fixed=1),
            "offset": vec(1, 18, 6, 6, fixed=1),
            "weight": vec(2, 4, 3, 3, fixed=1),
            "bias": vec(2),
            "mask": vec(1, 9, 6, 6, fixed=1),
        },
        {"stride": [0, (1, 0), -1], "padding": [-1], "dilation": [0]},
        groups=[[("input", 0), ("offset", 0), ("mask", 0)], [("weight", 0), ("bias", 0)]],
    ),
    Spec(
        "sigmoid_focal_loss",
        lambda a: ops.sigmoid_focal_loss(a["inputs"], a["targets"], a["alpha"], a["gamma"], a["reduction"]),
        {"inputs": vec(4, 3), "targets": vec(4, 3, seed=1)},
        {"alpha": [1.5, float("nan")], "gamma": [-1.0, float("inf")], "reduction": ["avg"]},
        groups=[[("inputs", 0), ("targets", 0)], [("inputs", 1), ("targets", 1)]],
    ),
    Spec(
        "roi_align",
        lambda a: ops.roi_align(
            a["input"], a["boxes"], a["output_size"], a["spatial_scale"], a["sampling_ratio"], a["aligned"]
        ),
        {"input": vec(2, 3, 12, 10), "boxes": Arg(ROIS, lambda: rois(5, 2), -1)},
        {"output_size": [0, (3, -1)], "sampling_ratio": [2**31]},
        aliases={"boxes": ("rois",)},
    ),
    Spec(
        "roi_align[list]",
        lambda a: ops.roi_align(a["input"], [a["boxes[0]"], a["boxes[1]"]], 3, 0.5, -1, True),
        {"input": vec(2, 3, 12, 10), "boxes[0]": box(4), "boxes[1]": box(2, seed=3)},
        aliases={"boxes[0]": ("rois",), "boxes[1]": ("rois",)},
    ),
    Spec(
        "roi_pool",
        lambda a: ops.roi_pool(a["input"], a["boxes"], a["output_size"], a["spatial_scale"]),
        {"input": vec(2, 3, 12, 10), "boxes": Arg(ROIS, lambda: rois(5, 2), -1)},
        {"output_size": [0, (3, -1)]},
        aliases={"boxes": ("rois",)},
    ),
    Spec(
        "ps_roi_pool",
        lambda a: ops.ps_roi_pool(a["input"], a["boxes"], a["output_size"], a["spatial_scale"]),
        {"input": vec(2, 12, 12, 10), "boxes": Arg(ROIS, lambda: rois(5, 2), -1)},
        {"output_size": [0, 3, (2, -2)]},
        aliases={"boxes": ("rois",)},
    ),
    Spec(
        "ps_roi_align",
        lambda a: ops.ps_roi_align(a["input"], a["boxes"], a["output_size"], 0.5, a["sampling_ratio"]),
        {"input": vec(2, 12, 12, 10), "boxes": Arg(ROIS, lambda: rois(5, 2), -1)},
        {"output_size": [0, (5, 1)], "sampling_ratio": [2**31]},
        aliases={"boxes": ("rois",)},
    ),
    Spec(
        "roi_align_rotated",
        lambda a: ops.roi_align_rotated(a["input"], a["rois"], a["output_size"], 0.5, a["sampling_ratio"]),
        {"input": vec(2, 3, 12, 10), "rois": Arg(ROT_ROIS, lambda: rotated_rois(5, 2), -1)},
        {"output_size": [0, (3, -1)], "sampling_ratio": [2**31]},
    ),
    Spec(
        "paste_masks_in_image",
        lambda a: ops.paste_masks_in_image(a["masks"], a["boxes"], (20, 30), a["padding"]),
        {"masks": vec(3, 1, 6, 6, fixed=1), "boxes": box(3)},
        {"padding": [-1]},
        groups=[[("masks", 0), ("boxes", 0)]],
    ),
    Spec(
        "paste_masks_in_image_detectron2",
        lambda a: paste_masks_detectron2(a["masks"], a["boxes"], (20, 30), 0.5),
        {"masks": vec(3, 6, 6), "boxes": box(3)},
        groups=[[("masks", 0), ("boxes", 0)]],
        casts=frozenset({"masks"}),
    ),
    Spec(
        "masks_to_boxes",
        lambda a: ops.masks_to_boxes(a["masks"]),
        {"masks": Arg(MASK, lambda: rand(3, 5, 6) > 0.5)},
        casts=frozenset({"masks"}),
    ),
    Spec(
        "multi_scale_roi_align",
        lambda a: ops.multi_scale_roi_align(
            [a["features[0]"], a["features[1]"]], a["rois"], a["levels"], [0.5, 0.25], a["output_size"]
        ),
        {
            "features[0]": vec(2, 3, 12, 10),
            "features[1]": vec(2, 3, 6, 5, seed=1),
            "rois": Arg(ROIS, lambda: rois(5, 2), -1),
            "levels": ints([0, 1, 1, 0, 1]),
        },
        groups=[[("rois", 0), ("levels", 0)]],
    ),
    # ---- module entry points: they forward to the ops, whose messages use the kernels' names ----
    Spec(
        "BoxCoder.encode_single",
        lambda a: BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(a["reference_boxes"], a["proposals"]),
        {"reference_boxes": box(5), "proposals": box(5, seed=7)},
        groups=[[("reference_boxes", 0), ("proposals", 0)]],
        aliases={"reference_boxes": ("targets",), "proposals": ("reference",)},
    ),
    Spec(
        "BoxCoder.decode_single",
        lambda a: BoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(a["rel_codes"], a["boxes"]),
        {"rel_codes": vec(5, 4, fixed=-1), "boxes": box(5, seed=7)},
        groups=[[("rel_codes", 0), ("boxes", 0)]],
        aliases={"rel_codes": ("deltas",), "boxes": ("reference",)},
        # torchvision's decode_single converts the reference boxes to rel_codes' dtype (docstring).
        casts=frozenset({"boxes"}),
    ),
    Spec(
        "Matcher.match_boxes",
        lambda a: Matcher(0.5, 0.4, allow_low_quality_matches=True).match_boxes(a["gt"], a["anchors"]),
        {"gt": box(3), "anchors": box(6, seed=7)},
        # torchvision's own messages for a single image without ground truth or anchors (docstring).
        documented={
            ("gt", "empty"): "No ground-truth boxes available",
            ("anchors", "empty"): "No proposal boxes available",
        },
    ),
    Spec(
        "SSDMatcher.match_boxes[batched]",
        lambda a: SSDMatcher(0.5).match_boxes(a["gt"], a["anchors"], a["num_gt"]),
        {"gt": box(2, 3), "anchors": box(6, seed=7), "num_gt": ints([3, 1])},
        groups=[[("gt", 0), ("num_gt", 0)]],
    ),
    Spec(
        "Matcher.__call__",
        lambda a: Matcher(0.5, 0.4, allow_low_quality_matches=True)(a["match_quality_matrix"]),
        {"match_quality_matrix": vec(3, 6)},
        # Like torchvision, any real dtype of quality is compared with the thresholds as is.
        casts=frozenset({"match_quality_matrix"}),
        documented={("match_quality_matrix", "empty"): "No ground-truth boxes available"},
    ),
    Spec(
        "DepthwiseConv2d.forward",
        lambda a: depthwise_module()(a["x"]),
        {"x": vec(1, 3, 8, 8, fixed=1)},
        aliases={"x": ("input",)},
    ),
    # The detector cases run a whole (tiny) network: only the classes that reach new code.
    Spec(
        "SSD.predict_batch",
        lambda a: tiny_detector().predict_batch(a["batch"]),
        {"batch": Arg(IMAGE, lambda: rand(1, 3, 64, 64), 1)},
        skip=frozenset({"ninf", "tiny", "flip", "expanded", "int32", "complex64"}),
    ),
    Spec(
        "SSD.forward",
        lambda a: tiny_detector()([a["images[0]"]]),
        {"images[0]": Arg(IMAGE, lambda: rand(3, 48, 64), 0)},
        static_shape=False,
        skip=frozenset({"ninf", "tiny", "flip", "expanded", "int32", "complex64", "transposed"}),
    ),
]
# The valid value of every scalar argument (a spec's ``call`` reads the ones it takes).
SCALAR_DEFAULTS = {
    "eps": 1e-7,
    "reduction": "none",
    "iou_threshold": 0.5,
    "mode": "iou",
    "anchors_first": False,
    "in_fmt": "xyxy",
    "fmt": "xyxy",
    "out_fmt": "cxcywh",
    "size": (40, 60),
    "min_size": 1.0,
    "offset": 0,
    "sigma": 0.5,
    "min_score": 1e-3,
    "method": "linear",
    "score_threshold": 0.05,
    "topk_per_class": 1000,
    "max_detections": 10,
    "background_class": None,
    "box_format": "xyxy",
    "num_classes": 3,
    "k": 4,
    "level_sizes": [4, 2],
    "scales": [],
    "coding": "torchvision",
    "weights": (1.0, 1.0, 1.0, 1.0),
    "wh_clip": (-math.inf, math.inf),
    "max_shape": None,
    "stride": 1,
    "padding": 1,
    "dilation": 1,
    "activation": "relu",
    "alpha": 0.25,
    "gamma": 2.0,
    "output_size": (3, 2),
    "spatial_scale": 0.5,
    "sampling_ratio": 2,
    "aligned": False,
}
SPEC_BY_NAME = {s.name: s for s in SPECS}


# ---- the mutation table -------------------------------------------------------------------------
def _first(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = value
    return t


def _fixed_dim(t: torch.Tensor, arg: Arg, delta: int) -> torch.Tensor | None:
    if arg.fixed_dim is None:
        return None
    d = arg.fixed_dim
    if delta < 0:
        return t.narrow(d, 0, t.shape[d] - 1).contiguous()
    return torch.cat([t, t.narrow(d, 0, 1)], d)


def _neg_width(t: torch.Tensor, arg: Arg) -> torch.Tensor | None:
    if arg.kind == XYXY:  # swap x1 and x2: x2 < x1 wherever the box had a positive width
        return t[..., [2, 1, 0, 3]].contiguous()
    if arg.kind == ROT:
        return t * torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0])
    if arg.kind == ROIS:  # x2 < x1 after the batch index
        return t[..., [0, 3, 2, 1, 4]].contiguous()
    if arg.kind == ROT_ROIS:
        return t * torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0, 1.0])
    return None


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values, every other element of a buffer twice as big (stride 2 in the last dim)."""
    return torch.stack([t, torch.zeros_like(t)], -1)[..., 0]


def _transposed(t: torch.Tensor) -> torch.Tensor | None:
    return t.mT.contiguous().mT if t.dim() >= 2 else None


def _expanded(t: torch.Tensor) -> torch.Tensor | None:
    return t[:1].expand(t.shape) if t.dim() >= 1 and t.shape[0] > 1 else None


def _as(dtype):
    return lambda t, arg: t.to(dtype) if arg.kind in FLOATING else None


# name -> (class, mutate(tensor, arg) -> tensor or None when it does not apply)
MUTATIONS: dict[str, tuple[str, Callable]] = {
    "rank_up": ("shape", lambda t, arg: t.unsqueeze(0)),
    "rank_down": ("shape", lambda t, arg: t.flatten() if t.dim() > 1 else t[0]),
    "fixed_dim_minus": ("shape", lambda t, arg: _fixed_dim(t, arg, -1)),
    "fixed_dim_plus": ("shape", lambda t, arg: _fixed_dim(t, arg, +1)),
    "empty": ("shape", lambda t, arg: t[:0]),
    "int64": ("dtype", _as(torch.int64)),
    "int32": ("dtype", _as(torch.int32)),
    "bool": ("dtype", lambda t, arg: t.bool() if arg.kind != MASK else t.float()),
    "complex64": ("dtype", _as(torch.complex64)),
    "float_index": ("dtype", lambda t, arg: t.float() if arg.kind == INT else None),
    "strided": ("layout", lambda t, arg: _strided(t)),
    "transposed": ("layout", lambda t, arg: _transposed(t)),
    "expanded": ("layout", lambda t, arg: _expanded(t)),
    # PyTorch has no negative strides: a flipped copy stands in for the reversed view.
    "flip": ("value", lambda t, arg: t.flip(0) if arg.kind in FLOATING and t.dim() else None),
    "nan": ("value", lambda t, arg: _first(t, math.nan) if arg.kind in FLOATING else None),
    "pinf": ("value", lambda t, arg: _first(t, math.inf) if arg.kind in FLOATING else None),
    "ninf": ("value", lambda t, arg: _first(t, -math.inf) if arg.kind in FLOATING else None),
    "huge": ("value", lambda t, arg: t * 1e30 if arg.kind in (XYXY, ROT, ROIS, ROT_ROIS, FLOAT) else None),
    "tiny": ("value", lambda t, arg: t * 1e-30 if arg.kind in (XYXY, ROT, ROIS, ROT_ROIS, FLOAT) else None),
    "neg_width": ("value", _neg_width),
    "device": ("device", lambda t, arg: t.cuda() if HAS_CUDA else t),
    # Without a GPU, a meta tensor among CPU ones reaches the same device checks (fake kernels).
    "meta_device": ("device", lambda t, arg: t.to("meta")),
}


def _mismatched_length(spec: Spec, name: str) -> torch.Tensor | None:
    """Drops the last entry of ``name`` along the dimension a group pairs it on (first group only)."""
    for group in spec.groups:
        for arg_name, dim in group:
            if arg_name == name:
                t = spec.tensors[name].make()
                return t.narrow(dim, 0, t.shape[dim] - 1)
    return None


# ---- case generation ----------------------------------------------------------------------------
# Known bugs: case id -> reason (xfail, strict, so a fix turns the suite red until this entry goes).
# The twelve the corpus found when it was written (SSDMatcher with no anchors, BoxCoder.decode_single
# and Matcher.__call__ blaming the wrong argument, SSD.predict_batch without dtype/device/empty checks,
# detectors without a device check) are fixed.
KNOWN_BUGS: dict[str, str] = {}

COUNTS: Counter = Counter()


def _cases():
    params = []
    for spec in SPECS:
        for name, arg in spec.tensors.items():
            for mut, (_, fn) in MUTATIONS.items():
                if mut in spec.skip:
                    continue
                if mut == "device" and not HAS_CUDA:
                    COUNTS["not applicable (no CUDA)"] += 1  # collected with the cuda mark, skipped
                elif fn(arg.make(), arg) is None:
                    continue
                params.append((spec.name, "tensor", name, mut))
            if _mismatched_length(spec, name) is not None:
                params.append((spec.name, "tensor", name, "mismatched_length"))
        for name, values in spec.scalars.items():
            for i, _ in enumerate(values):
                params.append((spec.name, "scalar", name, f"bad{i}"))
    out = []
    for case in params:
        case_id = "-".join(case[:1] + case[2:])
        marks = [pytest.mark.xfail(reason=KNOWN_BUGS[case_id], strict=True)] if case_id in KNOWN_BUGS else []
        if case[-1] == "device":
            marks.append(pytest.mark.cuda)
        out.append(pytest.param(*case, id=case_id, marks=marks))
    return out


CASES = _cases()

# decode_single's documented cast of complex reference boxes drops the imaginary part (torch warns).
pytestmark = pytest.mark.filterwarnings("ignore:Casting complex values to real:UserWarning")


def _valid_args(spec: Spec) -> dict:
    args = dict(SCALAR_DEFAULTS)
    args.update({k: a.make() for k, a in spec.tensors.items()})
    return args


def _tensors(result) -> list[torch.Tensor]:
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    out = []
    for item in items:
        if isinstance(item, dict):
            out.extend(item.values())
        else:
            out.append(item)
    assert all(isinstance(t, torch.Tensor) for t in out), f"non-tensor output {type(result)}"
    return out


def _call(spec: Spec, args: dict):
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    try:
        return spec.call(args)
    finally:
        faulthandler.cancel_dump_traceback_later()


def _names_argument(spec: Spec, name: str, mutation: str, message: str, cls: str) -> bool:
    if spec.documented.get((name, mutation), "\0") in message:
        return True
    names = [name, *spec.aliases.get(name, ())]
    if cls == "shape":  # a size that disagrees with a paired argument: naming either one is right
        for group in spec.groups:
            if any(arg == name for arg, _ in group):
                names += [arg for arg, _ in group]
    if any(n in message for n in names):
        return True
    op = spec.name.split("[")[0].split(".")[-1]
    return cls == "dtype" and op in message and ("dtype" in message or "floating" in message)


def summary_line() -> str:
    counts = Counter({"failures": 0, **COUNTS})
    tried = sum(v for k, v in counts.items() if not k.startswith("not applicable"))
    parts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return f"bad-input corpus: {tried} cases tried ({parts})"


@pytest.mark.parametrize(("op", "where", "arg", "mutation"), CASES)
def test_bad_input(op, where, arg, mutation, record_property):
    spec = SPEC_BY_NAME[op]
    args = _valid_args(spec)
    if where == "scalar":
        cls = "scalar"
        args[arg] = spec.scalars[arg][int(mutation.removeprefix("bad"))]
    elif mutation == "mismatched_length":
        cls = "shape"
        args[arg] = _mismatched_length(spec, arg)
    else:
        cls, fn = MUTATIONS[mutation]
        args[arg] = fn(args[arg], spec.tensors[arg])
    record_property("case", f"{op} {arg}={mutation}")
    # Counted as a failure (or a known bug) until the case passes.
    bad = "known bugs (xfail)" if f"{op}-{arg}-{mutation}" in KNOWN_BUGS else "failures"
    COUNTS[bad] += 1
    try:
        result = _call(spec, args)
    except ALLOWED as e:
        message = str(e).splitlines()[0] if str(e) else ""
        assert _names_argument(spec, arg, mutation, str(e), cls), (
            f"{op}: {arg}={mutation} raised {type(e).__name__} without naming {arg!r}: {message}"
        )
        COUNTS[bad] -= 1
        COUNTS["raised clear errors"] += 1
        return
    # It returned: an invalid scalar or a wrong dtype of a floating argument must not be accepted.
    assert cls != "scalar", f"{op}: invalid {arg}={args[arg]!r} was accepted"
    integer_ok = arg in spec.integers and mutation in ("int64", "int32")
    assert not (
        cls == "dtype" and spec.tensors[arg].kind in FLOATING and arg not in spec.casts and not integer_ok
    ), f"{op}: {arg} of dtype {args[arg].dtype} was accepted"
    outputs = _tensors(result)
    if cls == "layout":  # same values, other strides: the same result as the contiguous call
        expected = _tensors(_call(spec, {**args, arg: args[arg].contiguous()}))
        for got, want in zip(outputs, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    elif cls == "value" and spec.static_shape:  # NaN/inf propagate as documented; shapes are static
        expected = _tensors(_call(spec, _valid_args(spec)))
        assert [t.shape for t in outputs] == [t.shape for t in expected]
    COUNTS[bad] -= 1
    COUNTS["returned documented results"] += 1


def test_corpus_summary(record_property, capsys):
    """Runs last (pytest keeps the file's order): the count of the cases above, shown even without -s."""
    line = summary_line()
    record_property("summary", line)
    with capsys.disabled():
        print("\n" + line)
