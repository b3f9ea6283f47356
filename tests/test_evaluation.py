"""DetectionEvaluator: COCO metrics through faster-coco-eval, labels mapped to the ground truth's
category ids."""

from __future__ import annotations

import pytest
import torch

from pydet.data import SyntheticShapes, coco_ground_truth
from pydet.evaluation import STAT_NAMES, DetectionEvaluator


@pytest.fixture(scope="module")
def dataset():
    return SyntheticShapes(6, 96, split="val", seed=3)


def _perfect(dataset, shift: float = 0.0):
    ids, detections = [], []
    for _, target in dataset:
        boxes = target["boxes"] + shift
        ids.append(target["image_id"])
        detections.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": target["labels"]})
    return ids, detections


def test_ground_truth_as_detections_scores_one(dataset):
    evaluator = DetectionEvaluator(coco_ground_truth(dataset))
    evaluator.update(*_perfect(dataset))
    metrics = evaluator.compute()
    assert set(metrics) == set(STAT_NAMES)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["mAP50"] == pytest.approx(1.0)


def test_shifted_boxes_lose_the_strict_thresholds(dataset):
    evaluator = DetectionEvaluator(coco_ground_truth(dataset))
    evaluator.update(*_perfect(dataset, shift=3.0))
    metrics = evaluator.compute()
    assert metrics["mAP"] < metrics["mAP50"] <= 1.0


def test_no_detections_scores_zero(dataset):
    evaluator = DetectionEvaluator(coco_ground_truth(dataset))
    assert evaluator.compute()["mAP50"] == 0.0


def test_labels_outside_the_categories_raise(dataset):
    evaluator = DetectionEvaluator(coco_ground_truth(dataset))
    ids, detections = _perfect(dataset)
    detections[0]["labels"] = detections[0]["labels"] + 10
    evaluator.update(ids, detections)
    with pytest.raises(ValueError, match=r"labels must be in \[1, 4\]"):
        evaluator.compute()
