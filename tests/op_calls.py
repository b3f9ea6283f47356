"""Every operator's sample call (test_opcheck.sample_calls) plus calls on a few thousand boxes or
elements per family (several thread blocks and vector runs, partial last ones, ties), each run once,
forward and backward. Two programs run it: the GPU kit (.ci/gpu) under compute-sanitizer, and
test_cpu_variants.py under each CPU variant, comparing the saved results bit for bit.

    python tests/op_calls.py --device cuda [--only WORD ...] [--save PATH]

--only keeps the calls whose operator name contains one of the words (racecheck and synccheck run
over the NMS and matching families only); --save writes every result and gradient (torch.save).
Exits non-zero if a call raises."""

from __future__ import annotations

import argparse
import sys

import torch
from helpers import random_boxes
from test_opcheck import sample_calls

import pydet
import pydet.ops as ops


def larger_calls(device: str) -> list:
    g = torch.Generator().manual_seed(7)
    boxes = random_boxes(3000, device=device, seed=7)
    scores = torch.rand(3000, generator=g).to(device)
    scores[::50] = 0.5  # equal scores: the tie order is part of the result
    labels = (torch.arange(3000, device=device) % 7).long()
    dense = torch.rand(2, 3000, 5, generator=g).to(device)
    anchors = random_boxes(5000, device=device, seed=9)
    gt = torch.stack([random_boxes(40, device=device, seed=10), random_boxes(40, device=device, seed=11)])
    rotated = torch.cat([boxes[:700, :2], (boxes[:700, 2:] - boxes[:700, :2]), scores[:700, None] * 90], 1)
    deltas = torch.randn(3000, 4, generator=g).to(device)
    logits = (torch.randn(5000, generator=g) * 4).to(device)
    targets = (torch.rand(5000, generator=g) < 0.2).float().to(device)
    x = torch.randn(2, 40, 14, 14, generator=g).to(device)
    w = torch.randn(40, 1, 3, 3, generator=g).to(device)
    wide = torch.randn(1, 24, 30, 45, generator=g).to(device)
    w5 = torch.randn(24, 1, 5, 5, generator=g).to(device)
    bias = torch.randn(40, generator=g).to(device)
    feat = torch.randn(2, 32, 50, 76, generator=g).to(device)
    rois = torch.cat([(labels[:500, None] % 2).float(), boxes[:500] / 4], 1)
    angles = torch.linspace(-90, 90, 500, device=device)[:, None]
    rotated_rois = torch.cat(
        [rois[:, :1], (rois[:, 1:3] + rois[:, 3:5]) / 2, rois[:, 3:5] - rois[:, 1:3], angles], 1
    )
    base = torch.tensor([[-8.0, -8.0, 8.0, 8.0], [-16.0, -4.0, 16.0, 4.0]], device=device)
    base9 = (torch.randn(9, 4, generator=g) * 30).to(device)  # 9 anchors: groups and an overlapping tail

    def grad(t):
        return t.clone().requires_grad_()

    return [
        (torch.ops.pydet.nms, (boxes, scores, 0.5)),
        (torch.ops.pydet.batched_nms, (boxes, scores, labels, 0.5)),
        (torch.ops.pydet.nms_rotated, (rotated, scores[:700], 0.3)),
        (ops.soft_nms, (boxes[:800], scores[:800], 0.3, 0.5, 0.001, "gaussian")),
        (ops.multiclass_nms, (torch.stack([boxes, boxes.flip(0)]), dense, 0.05, 0.5, 300, 100)),
        (ops.topk_per_level, (dense, 200, 0.1, [1000, 2000])),
        (ops.box_iou, (anchors[:1500], anchors)),
        (ops.box_iou, (grad(anchors[:300]), grad(anchors[:700]), "cxcywh")),
        (ops.complete_box_iou, (grad(anchors[:300]), grad(anchors[:700]))),
        (ops.distance_box_iou_aligned, (grad(anchors[:3000]), grad(boxes))),
        (ops.complete_box_iou_loss, (grad(anchors[:3000]), grad(boxes), "mean")),
        (ops.box_area, (grad(anchors),)),
        (ops.box_area, (grad(anchors), "xywh")),
        (ops.box_convert, (grad(anchors), "xyxy", "cxcywh")),
        (
            torch.ops.pydet.box_overlap_max,
            (gt, anchors, torch.tensor([40, 25], device=device), "iou", True, 1e-6, None),
        ),
        (ops.box_encode, (anchors[:3000], boxes, "torchvision", (10.0, 10.0, 5.0, 5.0))),
        (ops.box_decode, (anchors[:3000], grad(deltas), "torchvision", (10.0, 10.0, 5.0, 5.0))),
        (ops.sigmoid_focal_loss, (grad(logits), targets, 0.25, 2.0, "none")),
        (ops.sigmoid_focal_loss, (grad(logits), targets, 0.25, 1.5, "sum")),
        (ops.depthwise_conv2d, (grad(x), grad(w), grad(bias), 1, 1, 1, "relu6")),
        (ops.depthwise_conv2d, (grad(x), grad(w), None, 2, 1, 1, "hardswish")),
        (ops.depthwise_conv2d, (grad(wide), grad(w5), None, 1, 2, 1, "silu")),
        (ops.roi_align, (grad(feat), rois, 7, 0.25, 2, False)),
        (ops.roi_align, (grad(feat), rois, (14, 12), 0.25, -1, True)),
        (
            ops.paste_masks_in_image,
            (torch.rand(50, 1, 28, 28, generator=g).to(device), boxes[:50] / 2, (400, 600)),
        ),
        (ops.masks_to_boxes, (torch.rand(20, 100, 150, generator=g).to(device) > 0.99,)),
        (ops.roi_align_rotated, (grad(feat), rotated_rois, 7, 0.25, 2)),
        (ops.roi_pool, (grad(feat), rois, 7, 0.25)),
        (
            ops.deform_conv2d,
            (
                grad(feat),
                grad(torch.randn(2, 36, 25, 38, generator=g).to(device) * 3),
                grad(torch.randn(24, 16, 3, 3, generator=g).to(device) * 0.1),
                grad(bias[:24]),
                2,
                1,
                1,
                grad(torch.rand(2, 18, 25, 38, generator=g).to(device)),
            ),
        ),
        (ops.ps_roi_pool, (grad(feat), rois, 2, 0.25)),
        (ops.ps_roi_align, (grad(feat), rois, (4, 2), 0.25, 2)),
        (
            ops.anchor_grid,
            (
                [base, base * 2],
                [torch.arange(50.0, device=device)] * 2,
                [torch.arange(30.0, device=device)] * 2,
            ),
        ),
        (ops.anchor_grid, ([base9], [torch.arange(13.0, device=device)], [torch.arange(5.0, device=device)])),
        (
            ops.anchor_grid,
            (
                [base9.half(), base9[:5].half()],
                [torch.arange(7.0, device=device).half()] * 2,
                [torch.arange(3.0, device=device).half()] * 2,
            ),
        ),
    ]


def _name(op) -> str:
    return getattr(op, "__name__", str(op)).split(".")[0]


def run(device: str, only: list[str], save: str | None) -> int:
    torch.manual_seed(0)  # some sample calls draw from the global generator
    calls = sample_calls(device) + larger_calls(device)
    if only:
        calls = [(op, args) for op, args in calls if any(word in _name(op) for word in only)]
    failed, results = 0, []
    for op, args in calls:
        try:
            out = op(*args)
            leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
            inputs = [t for t in torch.utils._pytree.tree_leaves(args) if isinstance(t, torch.Tensor)]
            grads = []
            if leaves and leaves[0].requires_grad:
                wrt = [t for t in inputs if t.requires_grad]
                grads = torch.autograd.grad(leaves[0].double().sum(), wrt, allow_unused=True)
            results.append([t.detach().cpu() for t in leaves] + [g.cpu() for g in grads if g is not None])
        except Exception as e:  # report every failing call, not only the first
            failed += 1
            results.append(None)
            print(f"FAILED {_name(op)}: {type(e).__name__}: {e}", flush=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    if save:
        torch.save(results, save)
    where = device if device != "cpu" else f"cpu ({pydet.build_info()['cpu_capability']})"
    print(f"{len(calls) - failed} of {len(calls)} op calls ran on {where}", flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", nargs="*", default=[], metavar="WORD")
    parser.add_argument("--save", metavar="PATH")
    args = parser.parse_args()
    return run(args.device, args.only, args.save)


if __name__ == "__main__":
    sys.exit(main())
