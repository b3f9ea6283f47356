"""Datasets for demos, tests, benchmarks and training on real data."""

from pydet.data.coco import CocoDetection, ImageDecodeError, coco_ground_truth, load_image
from pydet.data.synthetic import CLASSES, SyntheticShapes, collate

__all__ = [
    "CLASSES",
    "CocoDetection",
    "ImageDecodeError",
    "SyntheticShapes",
    "coco_ground_truth",
    "collate",
    "load_image",
]
