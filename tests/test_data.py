"""SyntheticShapes: deterministic per item, disjoint splits, exact boxes, torchvision's target format."""

import pytest
import torch
from torch.utils.data import DataLoader

from pydet.data import CLASSES, SyntheticShapes, collate


def test_items_are_deterministic_and_splits_differ():
    a, b = SyntheticShapes(4, 96, seed=1), SyntheticShapes(4, 96, seed=1)
    for i in range(4):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert (
            torch.equal(ia, ib)
            and torch.equal(ta["boxes"], tb["boxes"])
            and torch.equal(ta["labels"], tb["labels"])
        )
    assert not torch.equal(a[0][0], SyntheticShapes(4, 96, seed=2)[0][0])
    assert not torch.equal(a[0][0], SyntheticShapes(4, 96, seed=1, split="val")[0][0])
    assert torch.equal(a[3][0], a[3][0])  # order does not matter


@pytest.mark.parametrize("size", [64, (80, 120)])
def test_format_and_box_ranges(size):
    ds = SyntheticShapes(20, size, max_size=60)
    h, w = (size, size) if isinstance(size, int) else size
    for image, target in ds:
        assert image.shape == (3, h, w) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        boxes, labels = target["boxes"], target["labels"]
        assert (
            boxes.dtype == torch.float32
            and labels.dtype == torch.int64
            and boxes.shape == (labels.numel(), 4)
        )
        assert ((labels >= 1) & (labels <= len(CLASSES))).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert (
            (boxes[:, 0] >= 0).all()
            and (boxes[:, 2] <= w).all()
            and (boxes[:, 1] >= 0).all()
            and (boxes[:, 3] <= h).all()
        )


def test_a_lone_square_has_its_exact_pixel_extent():
    ds = SyntheticShapes(50, 64, max_objects=1, min_size=10, max_size=20)
    for image, target in ds:
        if target["labels"].tolist() != [2]:  # squares only
            continue
        x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
        inside = image[:, y1:y2, x1:x2]
        colour = inside[:, 0, 0]
        assert torch.allclose(inside, colour[:, None, None].expand_as(inside))  # one flat colour
        return
    pytest.fail("no square drawn")


def test_dataloader_and_bad_arguments():
    images, targets = next(iter(DataLoader(SyntheticShapes(4, 64), batch_size=2, collate_fn=collate)))
    assert len(images) == len(targets) == 2
    with pytest.raises(ValueError, match="split must be one of"):
        SyntheticShapes(split="holdout")
    with pytest.raises(ValueError, match="min_size <= max_size"):
        SyntheticShapes(min_size=50, max_size=10)
    with pytest.raises(IndexError, match="out of range"):
        SyntheticShapes(3)[3]
