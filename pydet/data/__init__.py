"""Datasets for demos, tests and benchmarks."""

from pydet.data.synthetic import CLASSES, SyntheticShapes, collate

__all__ = ["CLASSES", "SyntheticShapes", "collate"]
