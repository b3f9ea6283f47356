"""CocoDetection: COCO json + image folder -> SyntheticShapes' item format; coco_ground_truth; bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from pydet.data import (
    CocoDetection,
    ImageDecodeError,
    SyntheticShapes,
    coco_ground_truth,
    collate,
    load_image,
)

# category ids deliberately unsorted and sparse: labels follow sorted id order
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 12, "name": "bird"}]
IMAGES = [
    {"id": 42, "file_name": "a.png", "width": 40, "height": 30},
    {"id": 5, "file_name": "sub/b.png", "width": 24, "height": 20},
    {"id": 9, "file_name": "c.png"},  # no size in the file, no annotations
]
ANNOTATIONS = [
    {"id": 1, "image_id": 42, "category_id": 7, "bbox": [2, 3, 10, 5], "area": 40.0, "iscrowd": 0},
    {"id": 2, "image_id": 5, "category_id": 12, "bbox": [1.5, 2.25, 4, 8], "iscrowd": 0},
    {"id": 3, "image_id": 42, "category_id": 3, "bbox": [20, 10, 15, 12], "area": 150.0},
    {"id": 4, "image_id": 42, "category_id": 3, "bbox": [0, 0, 30, 20], "area": 500.0, "iscrowd": 1},
    {"id": 5, "image_id": 5, "category_id": 7, "bbox": [4, 4, 0, 6], "area": 0.0, "iscrowd": 0},
]


def write_coco(root, images=IMAGES, annotations=ANNOTATIONS, categories=CATEGORIES):
    """Images (random pixels, the given or a default size) under root/images and root/ann.json."""
    rng = np.random.default_rng(0)
    (root / "images" / "sub").mkdir(parents=True, exist_ok=True)
    for im in images:
        w, h = im.get("width", 16), im.get("height", 12)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / im["file_name"])
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (root / "ann.json").write_text(json.dumps(coco))
    return root / "images", root / "ann.json"


def test_items_boxes_labels_and_category_mapping(tmp_path):
    ds = CocoDetection(*write_coco(tmp_path))
    assert len(ds) == ds.num_images == 3
    assert ds.classes == ("cat", "dog", "bird")
    assert ds.label_to_category_id == {1: 3, 2: 7, 3: 12}
    assert ds.category_id_to_label == {3: 1, 7: 2, 12: 3}

    image, target = ds[0]  # crowd annotation 4 is left out
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32 and image.is_contiguous()
    expected = np.asarray(Image.open(tmp_path / "images" / "a.png"), dtype=np.float32) / 255
    torch.testing.assert_close(image, torch.from_numpy(expected).permute(2, 0, 1))
    assert target["image_id"] == 42
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [20, 10, 35, 22]]
    assert target["labels"].tolist() == [2, 1]

    image, target = ds[1]  # the zero-width box (annotation 5) is left out
    assert image.shape == (3, 20, 24) and target["image_id"] == 5
    assert target["boxes"].tolist() == [[1.5, 2.25, 5.5, 10.25]] and target["labels"].tolist() == [3]

    image, target = ds[2]  # an image without annotations
    assert image.shape == (3, 12, 16) and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    with pytest.raises(IndexError, match="out of range"):
        ds[3]


def test_a_file_without_annotations(tmp_path):
    ds = CocoDetection(*write_coco(tmp_path, annotations=[]))
    assert [ds[i][1]["boxes"].shape for i in range(3)] == [(0, 4)] * 3
    assert coco_ground_truth(ds)["annotations"] == []


def test_transforms_and_dataloader(tmp_path):
    def flip(image, target):
        w = image.shape[-1]
        boxes = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([w, 0, w, 0])
        return image.flip(-1), dict(target, boxes=boxes)

    ds = CocoDetection(*write_coco(tmp_path), transforms=flip)
    image, target = ds[0]
    assert torch.equal(image, load_image(tmp_path / "images" / "a.png").flip(-1))
    assert target["boxes"].tolist() == [[28, 3, 38, 8], [5, 10, 20, 22]]
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert [t["image_id"] for t in targets] == [42, 5, 9] and len(images) == 3


def test_images_in_other_modes_load_as_rgb(tmp_path):
    Image.new("L", (5, 4), 51).save(tmp_path / "grey.png")
    Image.new("RGBA", (5, 4), (255, 0, 0, 0)).save(tmp_path / "alpha.png")
    grey, alpha = load_image(tmp_path / "grey.png"), load_image(tmp_path / "alpha.png")
    assert grey.shape == alpha.shape == (3, 4, 5)
    assert torch.equal(grey, torch.full((3, 4, 5), 0.2))
    assert alpha[:, 0, 0].tolist() == [1, 0, 0]


def test_ground_truth_of_a_coco_file_keeps_its_ids_and_crowds(tmp_path):
    ds = CocoDetection(*write_coco(tmp_path))
    gt = coco_ground_truth(ds)
    assert gt["categories"] == [
        {"id": 3, "name": "cat"},
        {"id": 7, "name": "dog"},
        {"id": 12, "name": "bird"},
    ]
    # sizes from the file, or the image header where the file has none
    assert gt["images"] == [
        {"id": 42, "width": 40, "height": 30},
        {"id": 5, "width": 24, "height": 20},
        {"id": 9, "width": 16, "height": 12},
    ]
    by_id = {a["id"]: a for a in gt["annotations"]}
    assert sorted(by_id) == [1, 2, 3, 4]  # the empty box 5 is left out, the crowd 4 kept
    assert by_id[1] == {
        "id": 1,
        "image_id": 42,
        "category_id": 7,
        "bbox": [2, 3, 10, 5],
        "area": 40,
        "iscrowd": 0,
    }
    assert by_id[2]["bbox"] == [1.5, 2.25, 4, 8] and by_id[2]["area"] == 32  # area from the box
    assert by_id[4]["iscrowd"] == 1 and by_id[4]["area"] == 500

    # a Subset keeps the file's ids; with transforms the dataset is iterated like any other
    sub = coco_ground_truth(Subset(ds, [1]))
    assert [im["id"] for im in sub["images"]] == [5] and [a["id"] for a in sub["annotations"]] == [2]
    iterated = coco_ground_truth(
        CocoDetection(ds.images_dir, ds.annotation_file, transforms=lambda i, t: (i, t))
    )
    assert iterated["categories"] == gt["categories"] and iterated["images"] == gt["images"]
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in iterated["annotations"]] == [
        (42, 7, [2, 3, 10, 5]),
        (42, 3, [20, 10, 15, 12]),
        (5, 12, [1.5, 2.25, 4, 8]),
    ]
    assert [a["id"] for a in iterated["annotations"]] == [1, 2, 3]


def test_ground_truth_of_synthetic_shapes_matches_its_targets():
    ds = SyntheticShapes(3, 64)
    gt = coco_ground_truth(ds)
    assert gt["categories"] == [{"id": k, "name": n} for k, n in enumerate(ds.classes, 1)]
    assert gt["images"] == [{"id": i, "width": 64, "height": 64} for i in range(3)]
    for i in range(3):
        _, target = ds[i]
        anns = [a for a in gt["annotations"] if a["image_id"] == i]
        xywh = torch.tensor([a["bbox"] for a in anns]).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        assert torch.equal(boxes, target["boxes"])
        assert [a["category_id"] for a in anns] == target["labels"].tolist()
        assert all(a["area"] == a["bbox"][2] * a["bbox"][3] and a["iscrowd"] == 0 for a in anns)
    assert [a["id"] for a in gt["annotations"]] == list(range(1, len(gt["annotations"]) + 1))


def test_ground_truth_scores_perfect_detections_as_map_1(tmp_path):
    fce = pytest.importorskip("faster_coco_eval")
    for ds in (CocoDetection(*write_coco(tmp_path)), SyntheticShapes(3, 64)):
        gt = coco_ground_truth(ds)
        dets = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"]
            if not a["iscrowd"]
        ]
        coco_gt = fce.COCO(gt)
        evaluator = fce.COCOeval_faster(
            coco_gt, coco_gt.loadRes(dets), "bbox", print_function=lambda *a: None
        )
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(1.0)


def test_missing_files(tmp_path):
    images_dir, ann = write_coco(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nope\.json: annotation file not found"):
        CocoDetection(images_dir, tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=r"no-images: images directory not found"):
        CocoDetection(tmp_path / "no-images", ann)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [], "annotations": [', r"ann\.json: invalid JSON: Expecting value at line 1 column 32"),
        ("\xff\xfe\xfa", r"ann\.json: invalid JSON: not Unicode text \(truncated data at byte 2\)"),
        ('{"images": [], "categories": []}', r"ann\.json: not a COCO annotation file: no 'annotations'"),
        ("[1, 2]", r"no 'images', 'annotations', 'categories'"),
        ('{"images": {}, "annotations": [], "categories": []}', r"'image' entries must be a list, got dict"),
    ],
)
def test_invalid_files(tmp_path, text, message):
    (tmp_path / "ann.json").write_text(text, encoding="latin-1")
    with pytest.raises(ValueError, match=message):
        CocoDetection(tmp_path, tmp_path / "ann.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"bbox": [1, 2, 3]},
            r"annotation 2: bbox must be \[x, y, width, height\] \(4 finite numbers\), got \[1, 2, 3\]",
        ),
        ({"bbox": [1, 2, "3", 4]}, r"annotation 2: bbox must be"),
        ({"bbox": [1, 2, float("nan"), 4]}, r"annotation 2: bbox must be"),
        ({"bbox": None}, r"annotation 2: bbox must be .* got None"),
        ({"image_id": 6}, r"annotation 2: image_id 6 is not in 'images'"),
        ({"category_id": 4}, r"annotation 2: category_id 4 is not in 'categories'"),
        ({"id": "x"}, r"annotation x: 'id' must be an integer, got 'x'"),
        ({"id": 1}, r"annotation 1: duplicate id"),
    ],
)
def test_malformed_annotations_name_the_file_and_annotation(tmp_path, change, message):
    annotations = [dict(a, **change) if a["id"] == 2 else a for a in ANNOTATIONS]
    with pytest.raises(ValueError, match=r"ann\.json: " + message):
        CocoDetection(*write_coco(tmp_path, annotations=annotations))


def test_malformed_images_and_categories(tmp_path):
    images_dir, ann = write_coco(tmp_path)
    coco = json.loads(ann.read_text())
    coco["images"].append({"id": 8})
    ann.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"ann\.json: image 8: 'file_name' must be a string, got None"):
        CocoDetection(images_dir, ann)
    coco["images"].pop()
    coco["categories"].append(["not", "an", "object"])
    ann.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"ann\.json: category #3: 'id' must be an integer, got None"):
        CocoDetection(images_dir, ann)


def test_missing_and_corrupt_images_raise_image_decode_error(tmp_path):
    ds = CocoDetection(*write_coco(tmp_path))
    (tmp_path / "images" / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(
        ImageDecodeError, match=r"images/a\.png: cannot decode image \(UnidentifiedImageError"
    ) as info:
        ds[0]
    assert isinstance(info.value, ValueError) and info.value.__suppress_context__  # raised `from None`
    png = (tmp_path / "images" / "sub" / "b.png").read_bytes()
    (tmp_path / "images" / "sub" / "b.png").write_bytes(png[: len(png) // 2])  # truncated
    with pytest.raises(ImageDecodeError, match=r"images/sub/b\.png: cannot decode image"):
        ds[1]
    (tmp_path / "images" / "c.png").unlink()
    with pytest.raises(ImageDecodeError, match=r"images/c\.png: image file not found"):
        ds[2]
    with pytest.raises(ImageDecodeError, match=r"images/c\.png: cannot read image size"):
        coco_ground_truth(ds)  # c.png's size is not in the file
