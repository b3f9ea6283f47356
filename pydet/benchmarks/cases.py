"""The workloads ``pydet bench`` and ``bench/`` time: each pairs a pydet operator with the
plain-PyTorch formula it replaces (``pydet.benchmarks.reference``, the formula torchvision/mmdet use) and, when
torchvision is importable, torchvision's own implementation."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

import pydet.ops as ops
from pydet.benchmarks import native
from pydet.benchmarks import reference as R


@dataclass
class Case:
    name: str  # e.g. "box_iou"
    size: str  # human-readable size, e.g. "1000x100000"
    family: str
    make: Callable[[str], tuple]  # device -> inputs
    pydet: Callable
    reference: Callable | None  # None: no independent baseline exists on this machine
    torchvision: Callable | None = None  # called with the same inputs; None: no counterpart
    quick: bool = True  # part of --quick
    # a call takes a second or more (whole detectors, the largest inputs or their baselines): only with
    # --heavy, which keeps the default run within two minutes on two cores
    heavy: bool = False
    memory_bound: bool = True  # report the floor: the time of a copy moving the same bytes
    # the absolute tolerance of the agreement check: above 1e-5 only for a baseline that computes the
    # same result through other float32 roundings (roi_align_rotated's grid_sample coordinates)
    agree_atol: float = 1e-5

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
    return _iou_matrix_cases(tv) + _aligned_box_cases(tv) + _per_box_cases(tv)


def _box_pair(m: int, n: int) -> Callable[[str], tuple]:
    return lambda d: (random_boxes(m, d, 1), random_boxes(n, d, 2))


def _iou_matrix_cases(tv) -> list[Case]:
    """IoU variants between every box of one set and every box of another."""
    cases: list[Case] = []
    for m, n, heavy in ((100, 20_000, False), (1000, 100_000, True)):  # the eager 1000x100000: ~3 s
        cases.append(
            Case(
                "box_iou",
                f"{m}x{n}",
                "boxes",
                _box_pair(m, n),
                ops.box_iou,
                R.box_iou,
                tv and tv.box_iou,
                quick=not heavy,
                heavy=heavy,
            )
        )
    for name in ("generalized_box_iou", "distance_box_iou", "complete_box_iou"):
        cases.append(
            Case(
                name,
                "100x20000",
                "boxes",
                _box_pair(100, 20_000),
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
    return cases


def _aligned_box_cases(tv) -> list[Case]:
    """IoU and IoU losses between the i-th boxes of two equally long sets."""
    cases = [
        Case(
            "generalized_box_iou_aligned",
            "1000000",
            "boxes",
            _box_pair(1_000_000, 1_000_000),
            ops.generalized_box_iou_aligned,
            R.generalized_box_iou_aligned,
            quick=False,
        )
    ]
    for name in ("generalized_box_iou_loss", "complete_box_iou_loss"):
        cases.append(
            Case(
                name + " fwd+bwd",
                "100000",
                "boxes",
                _box_pair(100_000, 100_000),
                _with_grad(lambda x, y, name=name: getattr(ops, name)(x, y, "mean")),
                _with_grad(lambda x, y, name=name: getattr(R, name)(x, y, "mean")),
                tv and _with_grad(lambda x, y, name=name: getattr(tv, name)(x, y, "mean")),
                quick=name == "generalized_box_iou_loss",
                memory_bound=False,
            )
        )
    return cases


def _per_box_cases(tv) -> list[Case]:
    """Operations on each box of one set alone."""
    one = lambda d: (random_boxes(1_000_000, d, 5),)  # noqa: E731
    return [
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


def image_boxes(n: int, device: str, seed: int, image=(1333.0, 800.0), sizes=(8.0, 400.0)):
    """Boxes inside an image with sides in ``sizes`` and uniform scores (the NMS benchmark inputs)."""
    g = torch.Generator().manual_seed(seed)
    wh = sizes[0] + torch.rand(n, 2, generator=g) * (sizes[1] - sizes[0])
    xy = torch.rand(n, 2, generator=g) * (torch.tensor(image) - wh)
    return torch.cat([xy, xy + wh], 1).to(device), torch.rand(n, generator=g).to(device)


def ssd_outputs(batch: int, device: str, seed: int = 0, anchors: int = 8732, classes: int = 91):
    """SSD300-shaped head outputs: decoded boxes [B, 8732, 4] and softmax scores [B, 8732, 91]."""
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(batch, anchors, classes, generator=g) * 3).softmax(-1)
    xy = torch.rand(batch, anchors, 2, generator=g) * 280
    wh = 4 + torch.rand(batch, anchors, 2, generator=g) * 150
    return torch.cat([xy, xy + wh], -1).to(device), scores.to(device)


def nms_cases() -> list[Case]:
    tv = _tv()
    single_nms = (
        native.greedy_nms if native.library() else R.nms
    )  # torchvision's CPU kernel, else plain torch
    return [
        *_greedy_nms_cases(tv, single_nms),
        _multiclass_nms_case(tv, single_nms),
        _soft_nms_case(),
        _nms_rotated_case(),
        _topk_per_level_case(),
    ]


def _greedy_nms_cases(tv, single_nms: Callable) -> list[Case]:
    """nms at two sizes and batched_nms (one NMS per class), with ``single_nms`` as the baseline."""
    cases = [
        Case(
            "nms",
            "20000",
            "nms",
            lambda d: (*image_boxes(20_000, d, 1), 0.5),
            ops.nms,
            single_nms,
            tv and tv.nms,
            memory_bound=False,
        ),
        Case(
            "nms",
            "100000",
            "nms",
            lambda d: (*image_boxes(100_000, d, 2), 0.5),
            ops.nms,
            None,
            quick=False,
            memory_bound=False,
        ),
    ]

    def batched(d):
        boxes, scores = image_boxes(20_000, d, 3)
        idxs = torch.randint(0, 80, (20_000,), generator=torch.Generator().manual_seed(3)).to(d)
        return boxes, scores, idxs, 0.5

    cases.append(
        Case(
            "batched_nms",
            "20000x80cls",
            "nms",
            batched,
            ops.batched_nms,
            lambda b, s, i, t: R.batched_nms(b, s, i, t, nms=single_nms),
            tv and tv.batched_nms,
            memory_bound=False,
        )
    )
    return cases


def _multiclass_nms_case(tv, single_nms: Callable) -> Case:
    ssd_args = (0.01, 0.45, 400, 200, False, 0)

    def ssd(d):
        return (*ssd_outputs(8, d), *ssd_args)

    def tv_postprocess(boxes, scores, *args):
        return R.multiclass_nms(boxes, scores, *args, batched_nms=tv.batched_nms)

    return Case(
        "multiclass_nms",
        "SSD300 8x8732x91",
        "nms",
        ssd,
        ops.multiclass_nms,
        lambda boxes, scores, *a: R.multiclass_nms(
            boxes, scores, *a, batched_nms=lambda *x: R.batched_nms(*x, nms=single_nms)
        ),
        tv and tv_postprocess,
        quick=False,  # the eager baseline takes ~1 s a call; ssd300 postprocess[1x...] is the quick one
        memory_bound=False,
    )


def _soft_nms_case() -> Case:
    soft_ref = (lambda b, s, *a: native.soft_nms(b, s, *a[:4])) if native.library() else R.soft_nms
    return Case(
        "soft_nms(gaussian)",
        "2000",
        "nms",
        lambda d: (*image_boxes(2000, d, 4), 0.3, 0.5, 1e-3, "gaussian"),
        ops.soft_nms,
        soft_ref,
        quick=False,
        memory_bound=False,
    )


def _nms_rotated_case() -> Case:
    def rotated(d):
        g = torch.Generator().manual_seed(5)
        r = torch.cat(
            [
                torch.rand(5000, 2, generator=g) * 1000,
                8 + torch.rand(5000, 2, generator=g) * 100,
                torch.rand(5000, 1, generator=g) * 180 - 90,
            ],
            1,
        )
        return r.to(d), torch.rand(5000, generator=g).to(d), 0.5

    return Case("nms_rotated", "5000", "nms", rotated, ops.nms_rotated, None, quick=False, memory_bound=False)


def _topk_per_level_case() -> Case:
    def level_logits(d):
        # RetinaNet's head at 800x800: 120,087 anchors x 91 classes in 5 levels; ~0.1% of the logits
        # above the 0.05 score's logit, as in a trained model; torchvision's topk_candidates
        g = torch.Generator().manual_seed(6)
        logits = torch.randn(1, 120_087, 91, generator=g) - 6
        return logits.to(d), 1000, math.log(0.05 / 0.95), [90_000, 22_500, 5625, 1521, 441]

    return Case(
        "topk_per_level",
        "RetinaNet 1x120087x91",
        "nms",
        level_logits,
        ops.topk_per_level,
        lambda *a: R.topk_per_level(*a, stable=False),  # torchvision's threshold, then topk
    )


RETINANET_STRIDES = (8, 16, 32, 64, 128)


def retinanet_anchor_inputs(device: str, image=(800, 1344)) -> tuple:
    """mmdet's RetinaNet anchors (9 per location, P3-P7) for one image: base anchors and shifts."""
    from pydet.anchors.mmdet import AnchorGenerator

    gen = AnchorGenerator(list(RETINANET_STRIDES), [0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)
    sizes = [(-(-image[0] // s), -(-image[1] // s)) for s in RETINANET_STRIDES]  # ceil: 201,600 anchors
    base = [b.to(device) for b in gen.base_anchors]
    sx = [
        torch.arange(w, device=device).float() * s for (_, w), s in zip(sizes, RETINANET_STRIDES, strict=True)
    ]
    sy = [
        torch.arange(h, device=device).float() * s for (h, _), s in zip(sizes, RETINANET_STRIDES, strict=True)
    ]
    return base, sx, sy


def anchor_cases() -> list[Case]:
    from pydet.anchors.mmdet import AnchorGenerator
    from pydet.anchors.torchvision import DefaultBoxGenerator

    cases = [
        Case(
            "anchor_grid",
            "RetinaNet 800x1344",
            "anchors",
            retinanet_anchor_inputs,
            ops.anchor_grid,
            R.anchor_grid,
        )
    ]

    def ssd300(device):  # torchvision's SSD300 default boxes: centres + half sizes, scaled to pixels
        gen = DefaultBoxGenerator(
            [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
            scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
            steps=[8, 16, 32, 64, 100, 300],
        )
        base, sx, sy = [], [], []
        for k, f in enumerate((38, 19, 10, 5, 3, 1)):
            half = 0.5 * gen._wh_pairs[k].clamp(0, 1)
            base.append(torch.cat([-half, half], 1).to(device))
            centres = ((torch.arange(f) + 0.5) / (300 / gen.steps[k])).to(device)
            sx.append(centres)
            sy.append(centres)
        return base, sx, sy, [300.0, 300.0] * 6

    cases.append(Case("anchor_grid", "SSD300 8732", "anchors", ssd300, ops.anchor_grid, R.anchor_grid))

    def cached(device):  # the generator call a detector makes every step, after the first
        gen = AnchorGenerator(
            list(RETINANET_STRIDES), [0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3
        )
        sizes = [(-(-800 // s), -(-1344 // s)) for s in RETINANET_STRIDES]
        gen.grid_priors(sizes, device=device)
        return gen, sizes, device, *retinanet_anchor_inputs(device)

    cases.append(
        Case(
            "AnchorGenerator.grid_priors",
            "RetinaNet, cached",
            "anchors",
            cached,
            lambda gen, sizes, device, *grid_inputs: gen.grid_priors(sizes, device=device),
            lambda gen, sizes, device, *grid_inputs: R.anchor_grid(*grid_inputs).split(
                [h * w * 9 for h, w in sizes]
            ),
            memory_bound=False,
        )
    )
    return cases


def _anchors_and_gt(n: int, m: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def boxes(k: int) -> torch.Tensor:
        xy = torch.rand(k, 2, generator=g) * 1000
        return torch.cat([xy, xy + 8 + torch.rand(k, 2, generator=g) * 200], 1).to(device)

    return boxes(n), boxes(m)


def coder_cases() -> list[Case]:
    """Box coding of 100,000 boxes and IoU matching, against the eager torchvision formulas."""
    from pydet.matchers.torchvision import Matcher

    weights = (10.0, 10.0, 5.0, 5.0)

    def encode_inputs(device):
        anchors, _ = _anchors_and_gt(100_000, 0, device)
        return (anchors, anchors.flip(0).contiguous())

    def decode_inputs(device):
        anchors, _ = _anchors_and_gt(100_000, 0, device)
        return (anchors, torch.randn(100_000, 4, generator=torch.Generator().manual_seed(1)).to(device))

    def match_inputs(device):
        anchors, gt = _anchors_and_gt(100_000, 100, device)
        return (gt, anchors)

    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    return [
        Case(
            "box_encode",
            "100000 torchvision",
            "coders",
            encode_inputs,
            lambda anchors, gt: ops.box_encode(anchors, gt, "torchvision", weights),
            lambda anchors, gt: R.box_encode_torchvision(gt, anchors, weights),
        ),
        Case(
            "box_decode",
            "100000 torchvision",
            "coders",
            decode_inputs,
            lambda anchors, d: ops.box_decode(
                anchors, d, "torchvision", weights, wh_clip=(-float("inf"), 4.135)
            ),
            lambda anchors, d: R.box_decode_torchvision(d, anchors, weights),
        ),
        Case(
            "Matcher.match_boxes",
            "100x100000 low-quality",
            "matching",
            match_inputs,
            matcher.match_boxes,
            lambda gt, anchors: R.match_torchvision(R.box_iou(gt, anchors), 0.5, 0.4, True),
            memory_bound=False,
        ),
    ]


# MobileNetV2's depthwise layers (channels, height, width, stride).
MOBILENET_V2_DEPTHWISE = [
    (32, 112, 112, 1),
    (96, 56, 56, 1),
    (144, 56, 56, 2),
    (384, 14, 14, 1),
    (960, 7, 7, 1),
]


def depthwise_cases() -> list[Case]:
    """Depthwise 3x3 + BatchNorm + ReLU6 in eval mode (pydet's fused block vs nn.Conv2d(groups=C) +
    BatchNorm2d + ReLU6), and the training forward + backward of the convolution alone."""
    from torch import nn

    from pydet.layers import Conv2dNormActivation

    cases = []
    for batch in (1, 8):
        for c, h, w, stride in MOBILENET_V2_DEPTHWISE:
            g = torch.Generator().manual_seed(c + h + batch)
            ours = Conv2dNormActivation(c, c, 3, stride, groups=c).eval()
            bn = ours[1]
            bn.running_mean.normal_(generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
            ref = nn.Sequential(
                nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU6()
            )
            ref.load_state_dict(ours.state_dict())
            ref.eval()

            def make(device, shape=(batch, c, h, w), seed=c * h):
                x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
                return (x.to(device),)

            def fused(x, m=ours):
                with torch.no_grad():
                    return m.to(x.device)(x)

            def eager(x, m=ref):
                with torch.no_grad():
                    return m.to(x.device)(x)

            size = f"{batch}x{c}x{h}x{w} s{stride}"
            cases.append(
                Case("depthwise+BN+ReLU6 eval", size, "separable conv", make, fused, eager, quick=batch == 1)
            )

            weight = torch.randn(c, 1, 3, 3, generator=g)

            def train_step(x, conv, weight=weight, stride=stride):
                xg = x.detach().requires_grad_()
                wg = weight.to(x.device).requires_grad_()
                y = conv(xg, wg, stride)
                y.backward(torch.ones_like(y))
                return y.detach(), xg.grad, wg.grad

            cases.append(
                Case(
                    "depthwise train fwd+bwd",
                    size,
                    "separable conv",
                    make,
                    lambda x, f=train_step: f(
                        x, lambda inp, wt, st: ops.depthwise_conv2d(inp, wt, None, st, 1)
                    ),
                    lambda x, f=train_step: f(
                        x, lambda inp, wt, st: R.depthwise_conv2d(inp, wt, None, st, 1, 1)
                    ),
                    quick=False,
                    memory_bound=False,
                )
            )
    return cases


# ---- RoI pooling -------------------------------------------------------------------------------
# Faster/Mask R-CNN's P2 level of an 800x1216 image pair (stride 4) and proposal-sized RoIs on it.
P2_SHAPE = (2, 256, 200, 304)


def p2_inputs(rois: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(P2_SHAPE, generator=torch.Generator().manual_seed(seed))
    boxes, _ = image_boxes(rois, "cpu", seed, image=(1216.0, 800.0), sizes=(16.0, 400.0))
    index = (torch.arange(rois) % P2_SHAPE[0]).float()[:, None]
    return x.to(device), torch.cat([index, boxes], 1).to(device)


def roi_cases() -> list[Case]:
    """roi_align on P2 as a two-stage detector's box head (7x7) and mask head (14x14, aligned) pool it,
    against torchvision's CPU kernel (written as torchvision writes it, bench/roi_align_reference.cpp,
    and torchvision's own when importable)."""
    tv = _tv()
    has_native = native.library() is not None

    def step(pool, backward):
        """The forward, and with it the input gradient of a unit loss when asked (as autograd runs it)."""

        def run(x, rois):
            xg = x.detach().requires_grad_(backward)
            y = pool(xg, rois)
            return (y, torch.autograd.grad(y, xg, torch.ones_like(y))[0]) if backward else y

        return run

    def native_step(output_size, aligned, backward):
        def run(x, rois):
            y = native.roi_align(x, rois, output_size, 0.25, 2, aligned)
            if not backward:
                return y
            return y, native.roi_align_backward(torch.ones_like(y), rois, x.shape, 0.25, 2, aligned)

        return run

    cases = [_multi_scale_case(tv, has_native), rotated_case(), *_max_and_ps_cases(tv, step)]
    for label, rois, size, aligned, backward in (
        ("roi_align", 1024, 7, False, False),
        ("roi_align mask head", 100, 14, True, False),
        ("roi_align fwd+bwd", 1024, 7, False, True),
    ):
        cases.append(
            Case(
                label,
                f"P2 {'x'.join(map(str, P2_SHAPE))}, {rois} RoIs, {size}x{size}",
                "RoI pooling",
                lambda d, k=rois: p2_inputs(k, d),
                step(lambda x, r, s=size, a=aligned: ops.roi_align(x, r, s, 0.25, 2, a), backward),
                native_step((size, size), aligned, backward) if has_native else None,
                step(lambda x, r, s=size, a=aligned: tv.roi_align(x, r, s, 0.25, 2, a), backward)
                if tv
                else None,
                quick=rois == 100,
                heavy=backward,  # torchvision's backward: about 1.2 s
                memory_bound=False,
            )
        )
    return cases


def ps_inputs(device: str, rois: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """R-FCN's position-sensitive score maps (8 x 7 x 7 channels at stride 16 of an 800x1216 image pair)
    and ``rois`` proposals of 16-400 px."""
    x = torch.randn(2, 392, 50, 76, generator=torch.Generator().manual_seed(seed))
    boxes, _ = image_boxes(rois, "cpu", seed, image=(1216.0, 800.0), sizes=(16.0, 400.0))
    index = (torch.arange(rois) % 2).float()[:, None]
    return x.to(device), torch.cat([index, boxes], 1).to(device)


def _max_and_ps_cases(tv, step) -> list[Case]:
    """roi_pool (Fast R-CNN's max pooling) on P2 and the position-sensitive ops on R-FCN's score maps,
    against torchvision's own kernels where importable (no baseline is written for them otherwise)."""
    p2 = (lambda d: p2_inputs(1024, d), "P2 2x256x200x304, 1024 RoIs, 7x7")
    score_maps = (ps_inputs, "2x392x50x76, 300 RoIs, 7x7")
    cases = []
    for label, (make, size), name, args, backward in (
        ("roi_pool", p2, "roi_pool", (7, 0.25), False),
        ("roi_pool fwd+bwd", p2, "roi_pool", (7, 0.25), True),
        ("ps_roi_pool", score_maps, "ps_roi_pool", (7, 1 / 16), False),
        ("ps_roi_align", score_maps, "ps_roi_align", (7, 1 / 16, 2), False),
    ):
        ours, theirs = getattr(ops, name), getattr(tv, name) if tv else None
        cases.append(
            Case(
                label,
                size,
                "RoI pooling",
                make,
                step(lambda x, r, f=ours, a=args: f(x, r, *a), backward),
                None,
                step(lambda x, r, f=theirs, a=args: f(x, r, *a), backward) if theirs else None,
                quick=False,
                heavy=backward,  # torchvision's roi_pool forward + backward: over a second
                memory_bound=False,
            )
        )
    return cases


def rotated_inputs(device: str, rois: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """P2 and ``rois`` rotated proposals (batch index, cx, cy, w, h, angle) of 16-316 px at any angle."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P2_SHAPE, generator=g)
    centre = torch.rand(rois, 2, generator=g) * torch.tensor([1216.0, 800.0])
    size = 16 + torch.rand(rois, 2, generator=g) * 300
    angle = torch.rand(rois, 1, generator=g) * 180 - 90
    index = (torch.arange(rois) % P2_SHAPE[0]).float()[:, None]
    return x.to(device), torch.cat([index, centre, size, angle], 1).to(device)


def rotated_case() -> Case:
    """detectron2's ROIAlignRotated (rotated two-stage detectors' box head) against its eager
    formulation with F.grid_sample (pydet.benchmarks.reference.roi_align_rotated)."""
    return Case(
        "roi_align_rotated",
        f"P2 {'x'.join(map(str, P2_SHAPE))}, 512 RoIs, 7x7",
        "RoI pooling",
        rotated_inputs,
        lambda x, r: ops.roi_align_rotated(x, r, 7, 0.25, 2),
        lambda x, r: R.roi_align_rotated(x, r, (7, 7), 0.25, 2),
        quick=False,
        memory_bound=False,
        agree_atol=1e-3,  # float32 sample coordinates through grid_sample's normalisation (float64: 4e-15)
    )


FPN_LEVELS = ("p2", "p3", "p4", "p5")


def fpn_inputs(device: str, proposals: int = 512, seed: int = 0) -> tuple:
    """P2-P5 (256 channels) of two 800x1216 images and ``proposals`` boxes per image, as Faster R-CNN's
    box head pools them."""
    g = torch.Generator().manual_seed(seed)
    feats = {
        name: torch.randn(2, 256, 800 >> (i + 2), 1216 >> (i + 2), generator=g)
        for i, name in enumerate(FPN_LEVELS)
    }
    boxes = [
        image_boxes(proposals, "cpu", seed + b, image=(1216.0, 800.0), sizes=(8.0, 600.0))[0]
        for b in range(2)
    ]
    return {k: v.to(device) for k, v in feats.items()}, [b.to(device) for b in boxes], [(800, 1216)] * 2


def _multi_scale_case(tv, has_native: bool) -> Case:
    from pydet.layers import MultiScaleRoIAlign, fpn_levels

    ours = MultiScaleRoIAlign(list(FPN_LEVELS), 7, 2)

    def per_level_native(feats, boxes, image_shapes):
        """torchvision's MultiScaleRoIAlign: its level mapping, then its CPU kernel level by level."""
        levels = fpn_levels(boxes, 2, 5)
        rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
        out = torch.zeros(len(rois), 256, 7, 7)
        for level, name in enumerate(FPN_LEVELS):
            pick = levels == level
            out[pick] = native.roi_align(feats[name], rois[pick], (7, 7), 2.0 ** -(level + 2), 2)
        return out

    return Case(
        "MultiScaleRoIAlign",
        "P2-P5 2x256, 2x512 boxes, 7x7",
        "RoI pooling",
        fpn_inputs,
        ours,
        per_level_native if has_native else None,
        tv.MultiScaleRoIAlign(list(FPN_LEVELS), 7, 2) if tv else None,
        quick=False,
        memory_bound=False,
    )


# ---- deformable convolution -------------------------------------------------------------------
DEFORM_SHAPE = (2, 256, 50, 76)  # ResNet-50's res4 (stride 16) of an 800x1216 image, batch 2


def deform_inputs(device: str, seed: int = 0) -> tuple:
    """Input, offsets of a few pixels (as a trained DCN's), mask, 3x3 weight 256 -> 256, bias."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = DEFORM_SHAPE
    x = torch.randn(DEFORM_SHAPE, generator=g)
    offset = torch.randn(n, 18, h, w, generator=g) * 2
    mask = torch.rand(n, 9, h, w, generator=g)
    weight = torch.randn(c, c, 3, 3, generator=g) * 0.02
    bias = torch.randn(c, generator=g)
    return tuple(t.to(device) for t in (x, offset, mask, weight, bias))


def deform_cases() -> list[Case]:
    """deform_conv2d as DCN layers in ResNet-50's res4 run it (3x3, padding 1), v1 and v2, forward and
    forward + backward (all five gradients), against torchvision's CPU kernel (written as torchvision
    writes it, bench/deform_conv_reference.cpp, and torchvision's own when importable)."""
    tv = _tv()
    has_native = native.library() is not None

    def step(conv, modulated: bool, backward: bool):
        def run(x, offset, mask, weight, bias):
            leaves = [t.detach().requires_grad_(backward) for t in (x, offset, weight, bias, mask)]
            y = conv(*leaves[:4], 1, 1, 1, leaves[4] if modulated else None)
            if not backward:
                return y
            wrt = leaves if modulated else leaves[:4]
            return (y, *torch.autograd.grad(y, wrt, torch.ones_like(y)))

        return run

    def native_step(modulated: bool, backward: bool):
        def run(x, offset, mask, weight, bias):
            conv = native.DeformConv2d(x, offset, weight, 1, 1, 1, mask if modulated else None)
            y = conv.forward(bias)
            if not backward:
                return y
            gx, goffset, gweight, gmask = conv.backward(torch.ones_like(y))
            gbias = torch.ones_like(y).sum((0, 2, 3))
            return (y, gx, goffset, gweight, gbias) + ((gmask,) if modulated else ())

        return run

    cases = []
    for label, modulated, backward in (
        ("deform_conv2d", False, False),
        ("deform_conv2d v2", True, False),
        ("deform_conv2d fwd+bwd", False, True),
        ("deform_conv2d v2 fwd+bwd", True, True),
    ):
        cases.append(
            Case(
                label,
                f"{'x'.join(map(str, DEFORM_SHAPE))}, 3x3, 256->256",
                "deformable convolution",
                deform_inputs,
                step(ops.deform_conv2d, modulated, backward),
                native_step(modulated, backward) if has_native else None,
                step(tv.deform_conv2d, modulated, backward) if tv else None,
                quick=False,
                heavy=backward,  # torchvision's forward + backward: about 2.5 s
                memory_bound=False,
                agree_atol=1e-3,  # float32 GEMMs of 2304 terms in other orders
            )
        )
    return cases


# ---- detectors --------------------------------------------------------------------------------
@functools.cache
def detector(name: str):
    """A detector with random weights in eval mode, built once per process."""
    from pydet.models import MODELS

    return MODELS[name]().eval()


def _head_outputs(model, batch: int, size: int, device: str, seed: int, logit_mean: float, logit_std: float):
    """Anchors of the model at ``size``, random head outputs shaped like its head's (logits drawn from
    N(logit_mean, logit_std²)) and the number of anchors per level."""
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, size, size))
    features = list(features.values()) if isinstance(features, dict) else list(features)
    anchors = model.anchor_generator(torch.zeros(1, 3, size, size), features)[0]
    counts = [
        f.shape[-2] * f.shape[-1] * a
        for f, a in zip(features, model.anchor_generator.num_anchors_per_location(), strict=True)
    ]
    g = torch.Generator().manual_seed(seed)
    n = anchors.shape[0]
    head = {
        "bbox_regression": torch.randn(batch, n, 4, generator=g) * 0.5,
        "cls_logits": torch.randn(batch, n, model.num_classes, generator=g) * logit_std + logit_mean,
    }
    return {k: v.to(device) for k, v in head.items()}, anchors.to(device), counts


def _per_image(output: ops.MulticlassNmsOutput) -> list[tuple]:
    return [(d["boxes"], d["scores"], d["labels"]) for d in ops.multiclass_nms_to_list(output)]


def detector_cases() -> list[Case]:
    nms_kernel = native.greedy_nms if native.library() else R.nms
    batched = lambda *x: R.batched_nms(*x, nms=nms_kernel)  # noqa: E731
    return [
        *_ssd300_postprocess_cases(batched),
        _retinanet_postprocess_case(batched),
        # whole detectors: the same model, fused post-processing vs torchvision's algorithm in plain torch
        *_ssd300_eval_cases(batched),
        _retinanet_eval_case(batched),
    ]


def _ssd300_postprocess_cases(batched: Callable) -> list[Case]:
    cases = []
    for batch in (1, 8):

        def ssd_inputs(d, batch=batch):
            head, anchors, counts = _head_outputs(detector("ssd300_vgg16"), batch, 300, d, batch, 0.0, 3.0)
            return head["bbox_regression"], head["cls_logits"], anchors, counts

        def ssd_fused(deltas, logits, anchors, counts):
            head = {"bbox_regression": deltas, "cls_logits": logits}
            return detector("ssd300_vgg16").predict(head, anchors, [(300, 300)], counts)

        def ssd_plain(deltas, logits, anchors, counts):
            return R.ssd_postprocess(deltas, logits, anchors, (300, 300), batched_nms=batched)

        cases.append(
            Case(
                "ssd300 postprocess",
                f"{batch}x8732x91",
                "detector",
                ssd_inputs,
                ssd_fused,
                ssd_plain,
                quick=batch == 1,
                heavy=batch > 1,  # the eager baseline takes ~1 s a call, as multiclass_nms[SSD300 8x...]
                memory_bound=False,
            )
        )
    return cases


def _retinanet_postprocess_case(batched: Callable) -> Case:
    def retina_inputs(d):
        model = detector("retinanet_resnet50_fpn")
        # ~0.1% of the (anchor, class) pairs above the 0.05 score threshold, as in a trained model
        head, anchors, counts = _head_outputs(model, 1, 800, d, 3, -6.0, 1.0)
        return head["bbox_regression"], head["cls_logits"], anchors, counts

    def retina_fused(deltas, logits, anchors, counts):
        head = {"bbox_regression": deltas, "cls_logits": logits}
        return _per_image(detector("retinanet_resnet50_fpn").predict(head, anchors, [(800, 800)], counts))

    def retina_plain(deltas, logits, anchors, counts):
        out = R.retinanet_postprocess(deltas, logits, anchors, counts, (800, 800), batched_nms=batched)
        return [(d["boxes"], d["scores"], d["labels"]) for d in out]

    return Case(
        "retinanet postprocess",
        "1x120087x91",
        "detector",
        retina_inputs,
        retina_fused,
        retina_plain,
        quick=False,
        memory_bound=False,
    )


def _ssd300_eval_cases(batched: Callable) -> list[Case]:
    def ssd_model_plain(images):
        model = detector("ssd300_vgg16")
        x = model.transform.normalize(images)
        head, anchors, _ = model._heads(x, x)
        return R.ssd_postprocess(
            head["bbox_regression"], head["cls_logits"], anchors, (300, 300), batched_nms=batched
        )

    return [
        Case(
            "ssd300_vgg16 eval",
            f"{batch}x300x300",
            "detector",
            lambda d, batch=batch: (
                torch.rand(batch, 3, 300, 300, generator=torch.Generator().manual_seed(0)).to(d),
            ),
            lambda images: detector("ssd300_vgg16").predict_batch(images),
            ssd_model_plain,
            quick=False,
            heavy=batch > 1,
            memory_bound=False,
        )
        for batch in (1, 8)
    ]


def _retinanet_eval_case(batched: Callable) -> Case:
    def retina_model_plain(images):
        model = detector("retinanet_resnet50_fpn")
        x = model.transform.normalize(images)
        head, anchors, counts = model._heads(x, x)
        out = R.retinanet_postprocess(
            head["bbox_regression"], head["cls_logits"], anchors, counts, (800, 800), batched_nms=batched
        )
        return [(d["boxes"], d["scores"], d["labels"]) for d in out]

    return Case(
        "retinanet_resnet50_fpn eval",
        "1x800x800",
        "detector",
        lambda d: (torch.rand(1, 3, 800, 800, generator=torch.Generator().manual_seed(0)).to(d),),
        lambda images: _per_image(detector("retinanet_resnet50_fpn").predict_batch(images)),
        retina_model_plain,
        quick=False,
        heavy=True,
        memory_bound=False,
    )


# ---- masks -------------------------------------------------------------------------------------
MASK_IMAGE = (800, 1216)


def mask_inputs(device: str, n: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask R-CNN's output for one 800x1216 image: ``n`` detections' 28x28 mask probabilities and boxes."""
    masks = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    boxes, _ = image_boxes(
        n, "cpu", seed, image=(float(MASK_IMAGE[1]), float(MASK_IMAGE[0])), sizes=(16.0, 400.0)
    )
    return masks.to(device), boxes.to(device)


def mask_cases() -> list[Case]:
    """Mask R-CNN's post-processing: 100 masks pasted into the image in torchvision's convention (float
    probabilities) and detectron2's (thresholded), against the libraries' Python code
    (pydet.benchmarks.reference; torchvision's own too when importable), and masks_to_boxes."""
    from pydet.layers import paste_masks_in_image as paste_detectron2

    try:
        from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste
    except Exception:  # torchvision missing or built for another torch
        tv_paste = None
    tv = _tv()
    size = f"100x28x28 -> {MASK_IMAGE[0]}x{MASK_IMAGE[1]}"

    def binary_masks(device: str) -> torch.Tensor:
        """The 100 masks pasted and thresholded: masks_to_boxes's input."""
        masks, boxes = mask_inputs("cpu")
        return paste_detectron2(masks[:, 0], boxes, MASK_IMAGE).to(device)

    return [
        Case(
            "paste_masks_in_image",
            size,
            "masks",
            mask_inputs,
            lambda m, b: ops.paste_masks_in_image(m, b, MASK_IMAGE),
            lambda m, b: R.paste_masks_in_image(m, b, MASK_IMAGE),
            (lambda m, b: tv_paste(m, b, MASK_IMAGE)) if tv_paste else None,
            quick=False,
        ),
        Case(
            "paste_masks_in_image detectron2",
            size,
            "masks",
            mask_inputs,
            lambda m, b: paste_detectron2(m[:, 0], b, MASK_IMAGE),
            lambda m, b: R.paste_masks_in_image_detectron2(m[:, 0], b, MASK_IMAGE),
            quick=False,
        ),
        Case(
            "masks_to_boxes",
            f"100x{MASK_IMAGE[0]}x{MASK_IMAGE[1]} bool",
            "masks",
            lambda d: (binary_masks(d),),
            ops.masks_to_boxes,
            R.masks_to_boxes,
            tv.masks_to_boxes if tv else None,
            quick=False,
        ),
    ]


def all_cases() -> list[Case]:
    return (
        box_cases()
        + nms_cases()
        + anchor_cases()
        + coder_cases()
        + depthwise_cases()
        + roi_cases()
        + deform_cases()
        + mask_cases()
        + detector_cases()
    )
