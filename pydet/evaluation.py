"""COCO-style detection metrics, computed by faster-coco-eval (a maintained, pycocotools-compatible
implementation), never by a hand-written AP.

``DetectionEvaluator`` holds a COCO-format ground truth, collects detections batch by batch in the
original image coordinates and torchvision's format (``boxes`` xyxy, ``labels`` 1..K, 0 = background),
merges them across processes when training is distributed, and returns ``{"mAP": AP@[.5:.95], "mAP50": AP@.5,
"mAP75": ..., "mAP_small"/"medium"/"large": ...}`` (COCO's numbers, in [0, 1]; -1 where a size range
has no ground truth).
"""

from __future__ import annotations

import contextlib
import io

import torch
import torch.distributed as dist
from torch import Tensor

from pydet.ops import box_convert

# The order of COCOeval.stats for iouType="bbox".
STAT_NAMES = (
    "mAP",
    "mAP50",
    "mAP75",
    "mAP_small",
    "mAP_medium",
    "mAP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def _xywh(boxes: Tensor) -> list[list[float]]:
    return box_convert(boxes.detach().to("cpu", torch.float64), "xyxy", "xywh").tolist()


class DetectionEvaluator:
    """``DetectionEvaluator(ground_truth)``, then ``update(image_ids, detections)`` per batch, then
    ``compute()``. ``ground_truth`` is a COCO-format dict, e.g. from
    :func:`pydet.data.coco_ground_truth` (which keeps COCO's crowd regions, so that detections on them
    are ignored as in the official evaluation); its ``categories`` are in label order (label k is
    ``categories[k - 1]``)."""

    def __init__(self, ground_truth: dict):
        self.ground_truth = ground_truth
        self.detections: list[dict] = []  # with "label"; category ids are looked up in compute()

    def update(self, image_ids: list[int], detections: list[dict]) -> None:
        """``detections[i]``: torchvision's ``{"boxes" [K, 4] xyxy, "scores" [K], "labels" [K]}`` for
        image ``image_ids[i]``, in that image's original coordinates."""
        for image_id, det in zip(image_ids, detections, strict=True):
            for box, label, score in zip(
                _xywh(det["boxes"]), det["labels"].tolist(), det["scores"].tolist(), strict=True
            ):
                self.detections.append(
                    {
                        "image_id": int(image_id),
                        "bbox": box,
                        "label": int(label),
                        "score": float(score),
                    }
                )

    def gather(self) -> None:
        """Merge every process's detections (a no-op when not distributed)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.detections)
        self.detections = [d for part in parts for d in part]

    def compute(self, verbose: bool = False) -> dict[str, float]:
        """COCO metrics over the detections collected (call :meth:`gather` first when distributed)."""
        from faster_coco_eval import COCO, COCOeval_faster

        if not self.ground_truth["annotations"]:
            raise ValueError("DetectionEvaluator: the evaluation set has no ground-truth boxes")
        gt = COCO(self.ground_truth)
        if not self.detections:  # loadRes rejects an empty list; nothing detected scores 0
            return dict.fromkeys(STAT_NAMES, 0.0)
        category_ids = [c["id"] for c in self.ground_truth["categories"]]
        if any(not 1 <= d["label"] <= len(category_ids) for d in self.detections):
            raise ValueError(f"DetectionEvaluator: detection labels must be in [1, {len(category_ids)}]")
        dt = gt.loadRes(
            [
                {
                    "image_id": d["image_id"],
                    "bbox": d["bbox"],
                    "score": d["score"],
                    "category_id": category_ids[d["label"] - 1],
                }
                for d in self.detections
            ]
        )
        evaluator = COCOeval_faster(gt, dt, iouType="bbox", print_function=print)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        if verbose:
            print(out.getvalue(), end="")
        return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats, strict=False)}
