"""``CocoDetection``: a detection dataset over a COCO-format annotation file and an image folder, with the
same item format as :class:`~pydet.data.SyntheticShapes`; ``coco_ground_truth`` turns any such dataset
into a COCO ground-truth dict for COCO-style evaluation; ``load_image`` decodes one image file.

Labels: the file's categories, sorted by id, become labels 1..K (0 is the background); ``classes``
holds their names in label order and ``label_to_category_id`` / ``category_id_to_label`` map between
labels and the file's category ids. Boxes: COCO's ``[x, y, w, h]`` becomes ``(x1, y1, x2, y2)`` with
``x2 = x + w``, ``y2 = y + h``, not clipped to the image. Training targets leave out crowd annotations
(``iscrowd = 1``: one box around a group of objects) and empty boxes (``w <= 0`` or ``h <= 0``, or
``x2 <= x1`` / ``y2 <= y1`` once rounded to float32), which detectors reject as targets. Images without
annotations are kept (no boxes).

Bad input raises one exception whose message names the file: ``FileNotFoundError`` for a missing
annotation file or image folder, ``ValueError`` for a file that is not valid COCO-format JSON (naming the
offending image, category or annotation id), and :class:`ImageDecodeError` from ``dataset[i]`` /
``load_image`` for an image that is missing or does not decode.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from pydet.ops import box_area, box_convert


class ImageDecodeError(ValueError):
    """An image file that is missing or cannot be decoded; the message names the file."""


def load_image(path: str | os.PathLike) -> Tensor:
    """The image at ``path`` as RGB: ``[3, H, W]`` float32 in [0, 1] (pixel value / 255). Grey, palette,
    CMYK and alpha images are converted to RGB (alpha dropped). A missing or undecodable file raises
    :class:`ImageDecodeError` naming it."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ImageDecodeError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"), dtype=np.uint8)  # decodes now; a copy torch may own
    except Exception as e:  # Pillow signals bad data with many types (OSError, SyntaxError, ...)
        raise ImageDecodeError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    image = torch.from_numpy(pixels).permute(2, 0, 1)
    return image.to(torch.float32, memory_format=torch.contiguous_format).div_(255)


_TYPE_NAMES = {int: "an integer", str: "a string"}


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class CocoDetection(Dataset):
    """``dataset[i]`` -> ``(image [3, H, W] float32 in [0, 1], {"boxes": [N, 4] float32 xyxy, "labels": [N]
    int64 in 1..K, "image_id": int})`` for the i-th entry of the file's ``"images"`` (file order);
    ``image_id`` is the file's image id. ``transforms(image, target) -> (image, target)``, if given, is
    applied to every item. See the module docstring for the label and box conventions."""

    def __init__(
        self,
        images_dir: str | os.PathLike,
        annotation_file: str | os.PathLike,
        transforms: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
    ):
        self.images_dir, self.annotation_file = Path(images_dir), Path(annotation_file)
        self.transforms = transforms
        path = self.annotation_file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: annotation file not found")
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"{self.images_dir}: images directory not found")
        try:
            coco = json.loads(path.read_bytes())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except UnicodeDecodeError as e:  # json.loads(bytes) decodes UTF-8/16/32 first
            raise ValueError(
                f"{path}: invalid JSON: not Unicode text ({e.reason} at byte {e.start})"
            ) from None
        missing = [
            k for k in ("images", "annotations", "categories") if not isinstance(coco, dict) or k not in coco
        ]
        if missing:
            raise ValueError(f"{path}: not a COCO annotation file: no {', '.join(repr(k) for k in missing)}")

        categories = self._entries(coco["categories"], "category", ("id", int), ("name", str))
        categories.sort(key=lambda c: c["id"])
        self.classes = tuple(c["name"] for c in categories)
        self.label_to_category_id = {k: c["id"] for k, c in enumerate(categories, 1)}
        self.category_id_to_label = {cid: k for k, cid in self.label_to_category_id.items()}

        images = self._entries(coco["images"], "image", ("id", int), ("file_name", str))
        self.num_images = len(images)
        self.image_ids = [im["id"] for im in images]
        self._files = [im["file_name"] for im in images]
        # (width, height) as the file gives it; 0 where absent (coco_ground_truth then reads the header)
        self._sizes = [(im.get("width", 0), im.get("height", 0)) for im in images]
        index_of = {image_id: i for i, image_id in enumerate(self.image_ids)}

        # One flat, image-sorted table of annotations in tensors rather than per-image Python objects:
        # compact for COCO train's ~860k annotations, and DataLoader workers share its memory instead of
        # copying every page whose objects' reference counts they touch.
        image_index, ann_ids, labels, crowd, areas, bboxes = [], [], [], [], [], []
        for ann in self._entries(coco["annotations"], "annotation", ("id", int)):
            image_id, category_id, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
            if type(image_id) is not int or image_id not in index_of:
                raise ValueError(f"{path}: annotation {ann['id']}: image_id {image_id!r} is not in 'images'")
            if type(category_id) is not int or category_id not in self.category_id_to_label:
                raise ValueError(
                    f"{path}: annotation {ann['id']}: category_id {category_id!r} is not in 'categories'"
                )
            if type(bbox) is not list or len(bbox) != 4:
                raise self._bad_bbox(ann["id"], bbox)
            area = ann.get("area")  # COCO's is the mask area; the box area stands in where it is absent
            image_index.append(index_of[image_id])
            ann_ids.append(ann["id"])
            labels.append(self.category_id_to_label[category_id])
            crowd.append(ann.get("iscrowd", 0) == 1)
            areas.append(area if type(area) in (int, float) else math.nan)
            bboxes.append(bbox)
        try:  # the bbox entries, checked all at once: a per-number Python check doubles the load time
            xywh = torch.tensor(bboxes, dtype=torch.float64).reshape(-1, 4)
            bad = ~xywh.isfinite().all(1)
        except (TypeError, ValueError, OverflowError):  # an entry that is no number; find which
            bad = torch.tensor([not all(_is_number(v) for v in bbox) for bbox in bboxes])
        if bad.any():
            k = int(bad.nonzero()[0, 0])
            raise self._bad_bbox(ann_ids[k], bboxes[k])

        image_index = torch.tensor(image_index, dtype=torch.int64)
        order = image_index.argsort(stable=True)  # grouped by image, in file order within an image
        self._offsets = torch.searchsorted(image_index[order], torch.arange(self.num_images + 1)).tolist()
        self._ann_ids = torch.tensor(ann_ids, dtype=torch.int64)[order]
        self._labels = torch.tensor(labels, dtype=torch.int64)[order]
        self._crowd = torch.tensor(crowd, dtype=torch.bool)[order]
        self._xywh = xywh[order]
        areas = torch.tensor(areas, dtype=torch.float64)[order]
        self._areas = torch.where(areas.isfinite(), areas, self._xywh[:, 2] * self._xywh[:, 3])
        self._boxes = box_convert(self._xywh, "xywh", "xyxy").float()  # x + w in float64, then rounded
        self._empty = (self._boxes[:, 2:] <= self._boxes[:, :2]).any(1)

    def _bad_bbox(self, ann_id: int, bbox) -> ValueError:
        return ValueError(
            f"{self.annotation_file}: annotation {ann_id}: bbox must be [x, y, width, height] "
            f"(4 finite numbers), got {bbox!r}"
        )

    def _entries(self, entries, kind: str, *fields: tuple[str, type]) -> list[dict]:
        """Check that ``entries`` is a list of objects with ``fields`` of the given types and unique ids."""
        path = self.annotation_file
        if not isinstance(entries, list):
            raise ValueError(f"{path}: '{kind}' entries must be a list, got {type(entries).__name__}")
        seen = set()
        for i, entry in enumerate(entries):
            name = f"{kind} {entry['id']}" if isinstance(entry, dict) and "id" in entry else f"{kind} #{i}"
            for field, type_ in fields:
                value = entry.get(field) if isinstance(entry, dict) else None
                if not isinstance(value, type_) or isinstance(value, bool):
                    raise ValueError(f"{path}: {name}: '{field}' must be {_TYPE_NAMES[type_]}, got {value!r}")
            if entry["id"] in seen:
                raise ValueError(f"{path}: {name}: duplicate id")
            seen.add(entry["id"])
        return entries

    def __len__(self) -> int:
        return self.num_images

    def image_path(self, index: int) -> Path:
        """The file of image ``index``."""
        return self.images_dir / self._files[index]

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"CocoDetection: index {index} out of range [0, {self.num_images})")
        image = load_image(self.image_path(index))
        start, end = self._offsets[index], self._offsets[index + 1]
        keep = ~(self._crowd[start:end] | self._empty[start:end])
        target = {
            "boxes": self._boxes[start:end][keep],
            "labels": self._labels[start:end][keep],
            "image_id": self.image_ids[index],
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def ground_truth(self, indices: list[int] | None = None) -> dict:
        """The file's own ground truth for images ``indices`` (default all) as a COCO dict, without decoding
        images: original ids, ``[x, y, w, h]`` boxes and areas, and crowd annotations as ``iscrowd = 1``
        (COCO evaluation ignores detections that match them instead of counting false positives)."""
        from PIL import Image

        indices = range(self.num_images) if indices is None else indices
        # whole columns to Python at once: per-image conversions would dominate for COCO's 118k images
        ann_ids, labels, crowd, areas, xywh = (
            t.tolist() for t in (self._ann_ids, self._labels, self._crowd, self._areas, self._xywh)
        )
        images, annotations = [], []
        for i in indices:
            width, height = self._sizes[i]
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                try:
                    with Image.open(self.image_path(i)) as image:  # reads the header only
                        width, height = image.size
                except Exception as e:
                    raise ImageDecodeError(
                        f"{self.image_path(i)}: cannot read image size ({type(e).__name__}: {e})"
                    ) from None
            images.append({"id": self.image_ids[i], "width": width, "height": height})
            for k in range(self._offsets[i], self._offsets[i + 1]):
                if xywh[k][2] > 0 and xywh[k][3] > 0:
                    annotations.append(
                        {
                            "id": ann_ids[k],
                            "image_id": self.image_ids[i],
                            "category_id": self.label_to_category_id[labels[k]],
                            "bbox": xywh[k],
                            "area": areas[k],
                            "iscrowd": int(crowd[k]),
                        }
                    )
        categories = [{"id": self.label_to_category_id[k], "name": n} for k, n in enumerate(self.classes, 1)]
        return {"images": images, "annotations": annotations, "categories": categories}


def coco_ground_truth(dataset: Dataset) -> dict:
    """A COCO-format ground-truth dict ``{"images": [{"id", "width", "height"}], "annotations": [{"id",
    "image_id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd"}], "categories": [{"id", "name"}]}``
    for any dataset of ``(image [C, H, W], {"boxes": [N, 4] xyxy, "labels": [N], "image_id": int})`` items,
    e.g. :class:`~pydet.data.SyntheticShapes`, :class:`CocoDetection` or a ``Subset`` of one.

    ``categories`` are listed in label order: label k is category ``categories[k - 1]["id"]``, which is the
    file's category id for a :class:`CocoDetection` and k otherwise (names from ``dataset.classes``, or
    ``"k"`` without it). A :class:`CocoDetection` without ``transforms`` gives its file's annotations
    (see :meth:`CocoDetection.ground_truth`, no image decoding); any other dataset is iterated once and
    gives its targets' boxes with annotation ids 1, 2, ... and ``iscrowd = 0``.
    """
    base, indices = dataset, range(len(dataset))
    while isinstance(base, Subset):
        indices, base = [base.indices[i] for i in indices], base.dataset
    if isinstance(base, CocoDetection) and base.transforms is None:
        return base.ground_truth(list(indices))
    to_category = getattr(base, "label_to_category_id", {})
    images, annotations, max_label = [], [], 0
    for i in range(len(dataset)):
        image, target = dataset[i]
        image_id = int(target["image_id"])
        images.append({"id": image_id, "width": int(image.shape[-1]), "height": int(image.shape[-2])})
        boxes = target["boxes"].to(torch.float64)
        for bbox, area, label in zip(
            box_convert(boxes, "xyxy", "xywh").tolist(),
            box_area(boxes).tolist(),
            target["labels"].tolist(),
            strict=True,
        ):
            max_label = max(max_label, label)
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCO evaluation treats id 0 as "unmatched"
                    "image_id": image_id,
                    "category_id": to_category.get(label, label),
                    "bbox": bbox,
                    "area": area,
                    "iscrowd": 0,
                }
            )
    names = getattr(base, "classes", None) or [str(k) for k in range(1, max_label + 1)]
    categories = [{"id": to_category.get(k, k), "name": n} for k, n in enumerate(names, 1)]
    return {"images": images, "annotations": annotations, "categories": categories}
