"""Concurrency: every public op (``pydet.ops.__all__``), the cached anchor generators, a matcher's fused
path and the backward kernels, called from 8 Python threads at once under several
``torch.set_num_threads`` settings, give results bit-identical to a single-threaded run; the grid
caches stay correct while many threads fill and evict them at the same time."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable

import pytest
import torch
from helpers import random_boxes

import pydet.ops as ops
from pydet.anchors import GridCache
from pydet.anchors import detectron2 as d2_anchors
from pydet.anchors import mmdet as mm_anchors
from pydet.anchors import torchvision as tv_anchors
from pydet.matchers import torchvision as tv_matchers

N_THREADS = 8
ROUNDS = 3
THREAD_COUNTS = (1, 2, 4)


# ---- inputs ----------------------------------------------------------------------------------------
def _inputs() -> dict[str, torch.Tensor]:
    """Seeded inputs, large enough that every kernel splits its work into several parallel_for tasks
    (grains are 4K-16K elements), small enough that 8 threads x 3 rounds x 3 settings stay fast."""
    g = torch.Generator().manual_seed(1234)
    t: dict[str, torch.Tensor] = {}
    t["boxes"] = random_boxes(20000, scale=1000.0, seed=1)  # elementwise ops: > 2 grains of 8192
    t["boxes_b"] = random_boxes(20000, scale=1000.0, seed=2)
    t["rows"] = random_boxes(300, scale=1000.0, seed=3)  # pairwise: 300 x 2000 = 600K pairs
    t["cols"] = random_boxes(2000, scale=1000.0, seed=4)
    t["batched1"] = torch.stack([random_boxes(200, scale=1000.0, seed=5 + b) for b in range(2)])
    t["batched2"] = torch.stack([random_boxes(1000, scale=1000.0, seed=9 + b) for b in range(2)])
    # nms: 2000 clustered boxes so that suppression actually happens
    t["nms_boxes"] = random_boxes(2000, scale=300.0, seed=6)
    t["nms_scores"] = torch.rand(2000, generator=g)
    t["nms_idxs"] = torch.randint(0, 10, (2000,), generator=g)
    rot = torch.cat([torch.rand(1500, 2, generator=g) * 300, torch.rand(1500, 2, generator=g) * 60 + 5], 1)
    t["rot_boxes"] = torch.cat([rot, torch.rand(1500, 1, generator=g) * 180 - 90], 1)
    t["rot_scores"] = torch.rand(1500, generator=g)
    t["rot_idxs"] = torch.randint(0, 5, (1500,), generator=g)
    t["rot_rows"] = t["rot_boxes"][:100]
    t["rot_cols"] = t["rot_boxes"][100:1100]
    # multiclass_nms: 2 images x 3000 anchors x 8 classes
    t["mc_boxes"] = torch.stack([random_boxes(3000, scale=600.0, seed=20 + b) for b in range(2)])
    t["mc_scores"] = torch.rand(2, 3000, 8, generator=g)
    t["mc_labels"] = torch.randint(-1, 8, (2, 3000), generator=g)
    # topk_per_level: 2 images x 120K anchors x 5 classes in 3 levels (parallel chunks and merges)
    t["level_logits"] = (torch.randn(2, 120_000, 5, generator=g) * 8).round() / 8 - 2
    t["soft_boxes"] = random_boxes(800, scale=300.0, seed=7)
    t["soft_scores"] = torch.rand(800, generator=g)
    # coders
    t["deltas"] = torch.randn(20000, 4, generator=g) * 0.5
    t["gt"] = random_boxes(40, scale=1000.0, seed=8)
    t["target_index"] = torch.randint(-1, 40, (20000,), generator=g)
    t["gt_batched"] = torch.stack([random_boxes(30, scale=1000.0, seed=30 + b) for b in range(3)])
    t["num_gt"] = torch.tensor([30, 12, 0])
    # focal loss: 100K logits
    t["logits"] = torch.randn(1000, 100, generator=g) * 3
    t["targets"] = (torch.rand(1000, 100, generator=g) < 0.05).float()
    # depthwise conv
    t["conv_in"] = torch.randn(2, 32, 40, 40, generator=g, dtype=torch.float64).float()
    t["conv_w"] = torch.randn(32, 1, 3, 3, generator=g)
    t["conv_b"] = torch.randn(32, generator=g)
    # roi_align: 2 images x 16 channels, 300 RoIs (several planes per parallel task)
    t["roi_in"] = torch.randn(2, 16, 40, 60, generator=g)
    t["deform_offset"] = torch.randn(2, 18, 40, 60, generator=g) * 2
    t["deform_mask"] = torch.rand(2, 9, 40, 60, generator=g)
    t["deform_w"] = torch.randn(8, 16, 3, 3, generator=g) * 0.1
    t["rois"] = torch.cat(
        [torch.randint(0, 2, (300, 1), generator=g).float(), random_boxes(300, scale=200.0, seed=40)], 1
    )
    t["roi_levels"] = torch.randint(0, 2, (300,), generator=g)
    t["masks"] = torch.rand(60, 1, 28, 28, generator=g)
    r = t["rois"]
    t["rotated_rois"] = torch.cat(
        [
            r[:, :1],
            (r[:, 1:3] + r[:, 3:5]) / 2,
            (r[:, 3:5] - r[:, 1:3]).abs(),
            torch.rand(300, 1, generator=g) * 180,
        ],
        1,
    )
    # anchor_grid: 3 levels, ~20K rows
    t["ag_base"] = torch.randn(9, 4, generator=g) * 40
    return t


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def _workloads(t: dict[str, torch.Tensor]) -> dict[str, Callable[[], object]]:
    """Name -> zero-argument call. Calls only read the shared inputs (and the shared generators' caches)."""
    b, b2, r, c = t["boxes"], t["boxes_b"], t["rows"], t["cols"]
    ag_levels = ([t["ag_base"]] * 3, [torch.arange(w) * 8.0 for w in (64, 32, 16)])
    ag_levels += ([torch.arange(h) * 8.0 for h in (25, 13, 7)],)
    w: dict[str, Callable[[], object]] = {
        "anchor_grid": lambda: ops.anchor_grid(*ag_levels, scales=[1.5, 0.5] * 3),
        "anchor_grid/anchor_major": lambda: ops.anchor_grid(
            *ag_levels, anchor_major=True, shift_corners=False
        ),
        "box_area": lambda: ops.box_area(b),
        "box_convert": lambda: ops.box_convert(b, "xyxy", "cxcywh"),
        "clip_boxes_to_image": lambda: ops.clip_boxes_to_image(b, (700, 900)),
        "remove_small_boxes": lambda: ops.remove_small_boxes(b, 150.0),
        "box_iou": lambda: ops.box_iou(r, c),
        "generalized_box_iou": lambda: ops.generalized_box_iou(r, c),
        "distance_box_iou": lambda: ops.distance_box_iou(r, c),
        "complete_box_iou": lambda: ops.complete_box_iou(r, c),
        "box_iou_aligned": lambda: ops.box_iou_aligned(b, b2),
        "generalized_box_iou_aligned": lambda: ops.generalized_box_iou_aligned(b, b2),
        "distance_box_iou_aligned": lambda: ops.distance_box_iou_aligned(b, b2),
        "complete_box_iou_aligned": lambda: ops.complete_box_iou_aligned(b, b2),
        "bbox_overlaps/giou": lambda: ops.bbox_overlaps(t["batched1"], t["batched2"], "giou"),
        "bbox_overlaps/iof_aligned": lambda: ops.bbox_overlaps(b, b2, "iof", is_aligned=True, offset=1),
        "generalized_box_iou_loss": lambda: ops.generalized_box_iou_loss(b, b2),
        "distance_box_iou_loss/mean": lambda: ops.distance_box_iou_loss(b, b2, "mean"),
        "complete_box_iou_loss/sum": lambda: ops.complete_box_iou_loss(b, b2, "sum"),
        "box_encode/torchvision": lambda: ops.box_encode(b, b2, "torchvision", (10.0, 10.0, 5.0, 5.0)),
        "box_encode/mmdet_gather": lambda: ops.box_encode(
            b, t["gt"], "mmdet", (0.1, 0.1, 0.2, 0.2), target_index=t["target_index"]
        ),
        "box_decode/mmdet": lambda: ops.box_decode(
            b, t["deltas"], "mmdet", (0.1, 0.1, 0.2, 0.2), wh_clip=(-4.1, 4.1), max_shape=(800, 1000)
        ),
        "box_decode/torchvision": lambda: ops.box_decode(
            b, t["deltas"], "torchvision", wh_clip=(-math.inf, math.log(1000.0 / 16))
        ),
        "box_decode/gathered": lambda: ops.box_decode(
            b, t["deltas"], "torchvision", max_shape=(800, 1000), index=t["target_index"] * 400
        ),
        "box_overlap_max": lambda: ops.box_overlap_max(t["gt_batched"], b, t["num_gt"]),
        "box_overlap_ties": lambda: ops.box_overlap_ties(
            t["gt_batched"],
            b,
            ops.box_overlap_max(t["gt_batched"], b, t["num_gt"], "mm_iou").gt_max,
            0.1,
            t["num_gt"],
            "mm_iou",
        ),
        "nms": lambda: ops.nms(t["nms_boxes"], t["nms_scores"], 0.5),
        "batched_nms": lambda: ops.batched_nms(t["nms_boxes"], t["nms_scores"], t["nms_idxs"], 0.5),
        "nms_rotated": lambda: ops.nms_rotated(t["rot_boxes"], t["rot_scores"], 0.3),
        "batched_nms_rotated": lambda: ops.batched_nms_rotated(
            t["rot_boxes"], t["rot_scores"], t["rot_idxs"], 0.3
        ),
        "box_iou_rotated": lambda: ops.box_iou_rotated(t["rot_rows"], t["rot_cols"]),
        "multiclass_nms": lambda: ops.multiclass_nms(
            t["mc_boxes"], t["mc_scores"], 0.3, 0.5, topk_per_class=500, max_detections=200
        ),
        "multiclass_nms/labels": lambda: ops.multiclass_nms(
            t["mc_boxes"],
            t["mc_scores"][..., 0],
            0.3,
            0.5,
            topk_per_class=100,
            labels=t["mc_labels"],
            num_classes=8,
        ),
        "multiclass_nms_to_list": lambda: [
            d[k]
            for d in ops.multiclass_nms_to_list(
                ops.multiclass_nms(t["mc_boxes"], t["mc_scores"], 0.5, 0.6, class_agnostic=True)
            )
            for k in ("boxes", "scores", "labels")
        ],
        "topk_per_level": lambda: ops.topk_per_level(t["level_logits"], 1000, 0.5, [90_000, 25_000, 5000]),
        "topk_per_level/no threshold": lambda: ops.topk_per_level(t["level_logits"], 50),
        "soft_nms/gaussian": lambda: ops.soft_nms(
            t["soft_boxes"], t["soft_scores"], 0.3, 0.5, 1e-3, "gaussian"
        ),
        "soft_nms/linear": lambda: ops.soft_nms(t["soft_boxes"], t["soft_scores"], 0.3, method="linear"),
        "sigmoid_focal_loss": lambda: ops.sigmoid_focal_loss(t["logits"], t["targets"]),
        "sigmoid_focal_loss/sum": lambda: ops.sigmoid_focal_loss(t["logits"], t["targets"], reduction="sum"),
        "sigmoid_focal_loss/mean": lambda: ops.sigmoid_focal_loss(
            t["logits"], t["targets"], reduction="mean"
        ),
        "depthwise_conv2d": lambda: ops.depthwise_conv2d(
            t["conv_in"], t["conv_w"], t["conv_b"], 1, 1, activation="relu6"
        ),
        "depthwise_conv2d/strided": lambda: ops.depthwise_conv2d(
            t["conv_in"], t["conv_w"], None, 2, 2, 2, activation="silu"
        ),
        "roi_align": lambda: ops.roi_align(t["roi_in"], t["rois"], 7, 0.25, -1, False),
        "roi_align/aligned": lambda: ops.roi_align(t["roi_in"], t["rois"], (5, 3), 0.25, 2, True),
        "paste_masks_in_image": lambda: ops.paste_masks_in_image(t["masks"], t["rois"][:60, 1:], (200, 300)),
        "masks_to_boxes": lambda: ops.masks_to_boxes(t["roi_in"][0] > 2),
        "roi_align_rotated": lambda: ops.roi_align_rotated(t["roi_in"], t["rotated_rois"], 7, 0.25, 2),
        "roi_pool": lambda: ops.roi_pool(t["roi_in"], t["rois"], 7, 0.25),
        "ps_roi_pool": lambda: ops.ps_roi_pool(t["roi_in"], t["rois"], 2, 0.25),
        "ps_roi_align": lambda: ops.ps_roi_align(t["roi_in"], t["rois"], 2, 0.25, 2),
        "deform_conv2d": lambda: ops.deform_conv2d(
            t["roi_in"], t["deform_offset"], t["deform_w"], None, 1, 1, 1, t["deform_mask"]
        ),
        "multi_scale_roi_align": lambda: ops.multi_scale_roi_align(
            [t["roi_in"], t["roi_in"][:, :, ::2, ::2]], t["rois"], t["roi_levels"], [0.25, 0.125], 7, 2
        ),
    }

    # backward: autograd.grad (not .backward) so that concurrent calls never accumulate into a shared .grad
    def loss_grad(fn, reduction):
        def run():
            x1, x2 = _leaf(b), _leaf(b2)
            return torch.autograd.grad(
                fn(x1, x2, reduction),
                (x1, x2),
                torch.ones(()) if reduction != "none" else torch.ones(b.shape[0]),
            )

        return run

    for name in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"):
        w[f"{name}/backward_sum"] = loss_grad(getattr(ops, name), "sum")
        w[f"{name}/backward_none"] = loss_grad(getattr(ops, name), "none")

    def pairwise_grad():
        x1, x2 = _leaf(r), _leaf(c)
        return torch.autograd.grad(ops.generalized_box_iou(x1, x2).sum(), (x1, x2))

    def conv_grad():
        x, weight, bias = _leaf(t["conv_in"]), _leaf(t["conv_w"]), _leaf(t["conv_b"])
        out = ops.depthwise_conv2d(x, weight, bias, 1, 1, activation="hardswish")
        return torch.autograd.grad(out, (x, weight, bias), torch.ones_like(out))

    def focal_grad():
        x = _leaf(t["logits"])
        return torch.autograd.grad(ops.sigmoid_focal_loss(x, t["targets"], reduction="mean"), x)

    def decode_grad():
        d = _leaf(t["deltas"])
        return torch.autograd.grad(ops.box_decode(b, d, "mmdet").sum(), d)

    def roi_align_grad():
        x = _leaf(t["roi_in"])
        out = ops.roi_align(x, t["rois"], 7, 0.25, 2, True)
        return torch.autograd.grad(out, x, torch.ones_like(out))

    w["generalized_box_iou/backward"] = pairwise_grad
    w["roi_align/backward"] = roi_align_grad

    def index_pooling_grad(fn):
        def run():
            x = _leaf(t["roi_in"])
            out = fn(x, t["rois"], 2, 0.25)
            return torch.autograd.grad(out, x, torch.ones_like(out))

        return run

    for fn in (ops.roi_pool, ops.ps_roi_pool, ops.ps_roi_align):
        w[f"{fn.__name__}/backward"] = index_pooling_grad(fn)

    def rotated_grad():
        x = _leaf(t["roi_in"])
        out = ops.roi_align_rotated(x, t["rotated_rois"], 7, 0.25, 2)
        return torch.autograd.grad(out, x, torch.ones_like(out))

    w["roi_align_rotated/backward"] = rotated_grad

    def deform_grad():
        x, offset, weight, mask = (
            _leaf(t[k]) for k in ("roi_in", "deform_offset", "deform_w", "deform_mask")
        )
        out = ops.deform_conv2d(x, offset, weight, None, 1, 1, 1, mask)
        return torch.autograd.grad(out, (x, offset, weight, mask), torch.ones_like(out))

    w["deform_conv2d/backward"] = deform_grad
    w["depthwise_conv2d/backward"] = conv_grad
    w["sigmoid_focal_loss/backward"] = focal_grad
    w["box_decode/backward"] = decode_grad

    # generators: shared instances (concurrent cache hits, and the first round's concurrent misses)
    # and fresh instances (the full grid computation every call)
    feats = [torch.zeros(1, 1, 100 // s, 128 // s) for s in (4, 8, 16)]
    images = torch.zeros(2, 3, 400, 512)
    tv_gen = tv_anchors.AnchorGenerator(((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3)
    ssd_gen = tv_anchors.DefaultBoxGenerator([[2], [2, 3], [2, 3]], steps=[4, 8, 16])
    mm_gen = mm_anchors.AnchorGenerator([4, 8, 16], [0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)
    d2_gen = d2_anchors.DefaultAnchorGenerator(
        sizes=[[32], [64], [128]], aspect_ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16]
    )
    sizes = [f.shape[-2:] for f in feats]
    w["tv.AnchorGenerator/cached"] = lambda: tv_gen(images, feats)
    w["tv.DefaultBoxGenerator/cached"] = lambda: ssd_gen(images, feats)
    w["mmdet.AnchorGenerator.grid_priors/cached"] = lambda: mm_gen.grid_priors(sizes, device="cpu")
    w["mmdet.AnchorGenerator.grid_priors/fresh"] = lambda: mm_anchors.AnchorGenerator(
        [4, 8, 16], [0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3
    ).grid_priors(sizes, device="cpu")
    w["d2.DefaultAnchorGenerator/cached"] = lambda: d2_gen(feats)

    matcher = tv_matchers.Matcher(0.5, 0.4, allow_low_quality_matches=True)
    w["tv.Matcher.match_boxes"] = lambda: matcher.match_boxes(t["gt"], b)
    w["tv.Matcher.match_boxes/batched"] = lambda: matcher.match_boxes(t["gt_batched"], b, t["num_gt"])
    return w


def _flatten(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [x for v in value for x in _flatten(v)]


def _bits(x: torch.Tensor) -> torch.Tensor:
    """Floats as raw bytes, so NaN compares equal to the same NaN (and -0.0 differs from 0.0)."""
    return x.contiguous().view(-1).view(torch.uint8) if x.dtype.is_floating_point else x


def _identical(got, want) -> bool:
    """Bitwise equality (same shape and dtype) of every tensor of two results."""
    got, want = _flatten(got), _flatten(want)
    return len(got) == len(want) and all(
        g.dtype == e.dtype and g.shape == e.shape and torch.equal(_bits(g), _bits(e))
        for g, e in zip(got, want, strict=True)
    )


def _max_abs_diff(got, want) -> float:
    diffs = [
        (g.double() - e.double()).abs().nan_to_num(0.0).max().item()
        if g.numel() and g.shape == e.shape
        else math.inf
        for g, e in zip(_flatten(got), _flatten(want), strict=False)
    ]
    return max(diffs, default=0.0)


@pytest.fixture
def restore_num_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _run_threads(work: Callable[[int], None]) -> list[str]:
    """Run ``work(i)`` in 8 threads released together; return the failures they recorded."""
    barrier = threading.Barrier(N_THREADS)
    errors: list[str] = []

    def body(i):
        try:
            barrier.wait()
            work(i)
        except Exception as e:  # a thread's exception would otherwise only be printed
            errors.append(f"thread {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=body, args=(i,)) for i in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def test_threads_reproduce_single_threaded_results(restore_num_threads):
    workloads = _workloads(_inputs())
    covered = {name.split("/")[0] for name in workloads}
    # every public op is exercised (the two result types are covered through the ops returning them)
    assert set(ops.__all__) - {"MulticlassNmsOutput", "OverlapMax"} <= covered

    torch.set_num_threads(1)
    expected = {name: fn() for name, fn in workloads.items()}
    start = time.perf_counter()
    for num_threads in THREAD_COUNTS:
        torch.set_num_threads(num_threads)
        mismatches: list[str] = []

        # defaults bind this iteration's values (the threads are joined before the next one anyway)
        def work(i, num_threads=num_threads, mismatches=mismatches):
            order = list(workloads) * ROUNDS
            random.Random(1000 * num_threads + i).shuffle(order)
            for name in order:
                try:
                    got = workloads[name]()
                except Exception as e:
                    mismatches.append(f"{name}: {type(e).__name__}: {e}")
                    continue
                if not _identical(got, expected[name]):
                    diff = _max_abs_diff(got, expected[name])
                    mismatches.append(f"{name} (set_num_threads={num_threads}): max abs diff {diff}")

        errors = _run_threads(work)
        assert not errors and not mismatches, "\n".join(sorted(set(errors + mismatches)))
    print(
        f"concurrency: {len(workloads)} workloads x {N_THREADS} threads x {ROUNDS} rounds x "
        f"{len(THREAD_COUNTS)} thread counts, all identical ({time.perf_counter() - start:.1f} s)"
    )


# ---- grid caches under eviction ------------------------------------------------------------------
def test_grid_caches_evict_concurrently(restore_num_threads):
    """test_anchor_grid.py checks one mmdet generator with fewer keys than the cache holds; here five
    generator kinds share the threads, each with a 3-entry cache and 10 distinct sizes, so entries are
    evicted (and recreated) while other threads read them."""
    torch.set_num_threads(2)  # the grid kernel's own tasks run concurrently with the Python threads
    factories = {
        "tv": lambda: tv_anchors.AnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2),
        "ssd": lambda: tv_anchors.DefaultBoxGenerator([[2], [2, 3]], steps=[8, 16]),
        "mmdet": lambda: mm_anchors.AnchorGenerator([8, 16], [0.5, 1.0, 2.0], [4.0, 8.0]),
        "points": lambda: mm_anchors.MlvlPointGenerator([8, 16]),
        "d2": lambda: d2_anchors.DefaultAnchorGenerator(
            sizes=[[32], [64]], aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16]
        ),
    }
    sizes = [((40 + 3 * k, 56 - k), (20 + k, 28)) for k in range(10)]

    def call(kind, gen, k):
        feats = [torch.zeros(1, 1, h, w) for h, w in sizes[k]]
        if kind in ("tv", "ssd"):
            return gen(torch.zeros(1, 3, 320, 448), feats)
        if kind in ("mmdet", "points"):
            return gen.grid_priors(sizes[k], device="cpu")
        return gen(feats)

    # expected grids from a fresh generator per call: no state shared with the ones under test
    want = {
        (kind, k): [x.clone() for x in call(kind, make(), k)]
        for kind, make in factories.items()
        for k in range(10)
    }
    gens = {kind: make() for kind, make in factories.items()}
    for gen in gens.values():
        gen._cache = GridCache(maxsize=3)
    mismatches: list[str] = []

    def work(i):
        rng = random.Random(i)
        for _ in range(60):
            kind, k = rng.choice(list(gens)), rng.randrange(len(sizes))
            if not _identical(call(kind, gens[kind], k), want[kind, k]):
                mismatches.append(f"{kind} sizes[{k}]")

    errors = _run_threads(work)
    assert not errors and not mismatches, "\n".join(sorted(set(errors + mismatches)))
    assert all(len(g._cache) <= 3 for g in gens.values())
