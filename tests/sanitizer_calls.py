"""Every operator's sample call (test_opcheck.sample_calls), forward and backward, once each, plus NMS
and matching calls large enough to span several thread blocks: the program the GPU kit (.ci/gpu)
runs under compute-sanitizer. Exits non-zero if a call raises.

    python tests/sanitizer_calls.py --device cuda [--only WORD ...]

--only keeps the calls whose operator name contains one of the words (racecheck and synccheck run
over the NMS and matching families only)."""

from __future__ import annotations

import argparse
import sys

import torch
from helpers import random_boxes
from test_opcheck import sample_calls

import pydet.ops as ops


def multi_block_calls(device: str) -> list:
    """NMS and matching over a few thousand boxes: several blocks, partial last blocks, ties."""
    boxes = random_boxes(3000, device=device, seed=7)
    scores = torch.rand(3000, generator=torch.Generator().manual_seed(7)).to(device)
    scores[::50] = 0.5  # equal scores: the tie order is part of the result
    labels = (torch.arange(3000, device=device) % 7).long()
    dense = torch.rand(2, 3000, 5, generator=torch.Generator().manual_seed(8)).to(device)
    anchors = random_boxes(5000, device=device, seed=9)
    gt = torch.stack([random_boxes(40, device=device, seed=10), random_boxes(40, device=device, seed=11)])
    rotated = torch.cat([boxes[:700, :2], (boxes[:700, 2:] - boxes[:700, :2]), scores[:700, None] * 90], 1)
    return [
        (torch.ops.pydet.nms, (boxes, scores, 0.5)),
        (torch.ops.pydet.batched_nms, (boxes, scores, labels, 0.5)),
        (torch.ops.pydet.nms_rotated, (rotated, scores[:700], 0.3)),
        (ops.multiclass_nms, (torch.stack([boxes, boxes.flip(0)]), dense, 0.05, 0.5, 300, 100)),
        (ops.topk_per_level, (dense, 200, 0.1, [1000, 2000])),
        (ops.box_iou, (anchors[:1500], anchors)),
        (
            torch.ops.pydet.box_overlap_max,
            (gt, anchors, torch.tensor([40, 25], device=device), "iou", True, 1e-6, None),
        ),
    ]


def _name(op) -> str:
    return getattr(op, "__name__", str(op)).split(".")[0]


def run(device: str, only: list[str]) -> int:
    calls = sample_calls(device) + multi_block_calls(device)
    if only:
        calls = [(op, args) for op, args in calls if any(word in _name(op) for word in only)]
    failed = 0
    for op, args in calls:
        try:
            out = op(*args)
            leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
            if leaves and leaves[0].requires_grad:
                leaves[0].float().sum().backward()
        except Exception as e:  # report every failing call, not only the first
            failed += 1
            print(f"FAILED {_name(op)}: {type(e).__name__}: {e}", flush=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    print(f"{len(calls) - failed} of {len(calls)} sample calls ran on {device}", flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", nargs="*", default=[], metavar="WORD")
    args = parser.parse_args()
    return run(args.device, args.only)


if __name__ == "__main__":
    sys.exit(main())
