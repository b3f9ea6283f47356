"""`pydet detect`: JSON detections from a checkpoint, drawings, and one-line errors."""

import json

import pytest
import torch
from PIL import Image

from pydet.checkpoint import build_model, save_checkpoint
from pydet.cli import main
from pydet.data import SyntheticShapes

CLASSES = ["circle", "square", "triangle", "cross"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained SSDLite at 128 px; its random weights still give low-score detections."""
    torch.manual_seed(0)
    ckpt = {
        "model": "ssdlite320_mobilenet_v2",
        "model_kwargs": {"num_classes": 5, "width_mult": 0.5},
        "image_size": 128,
        "classes": CLASSES,
        "epoch": 0,
    }
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, {**ckpt, "state_dict": build_model(ckpt).state_dict()})
    return str(path)


@pytest.fixture
def images(tmp_path):
    """Two 96x128 images: a SyntheticShapes scene (PNG) and a grey one (JPEG)."""
    image, _ = SyntheticShapes(1, (96, 128))[0]
    pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(tmp_path / "shapes.png")
    Image.new("L", (128, 96), 128).save(tmp_path / "grey.jpg")
    return [str(tmp_path / "shapes.png"), str(tmp_path / "grey.jpg")]


def detect(capsys, *args):
    code = main(["detect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_detections_as_json_and_draws_them(checkpoint, images, tmp_path, capsys):
    out_png = tmp_path / "drawn" / "out.png"
    code, out, err = detect(
        capsys, images[0], "--checkpoint", checkpoint, "--score-thresh", 0, "--out", out_png
    )
    assert code == 0 and err == ""
    (result,) = json.loads(out)
    assert len(out.splitlines()) == len(result["detections"]) + 4  # one line per detection
    assert result["image"] == images[0]
    dets = result["detections"]
    assert dets and all(set(d) == {"box", "score", "label", "class"} for d in dets)
    for d in dets:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 128 and 0 <= y1 <= y2 <= 96
        assert all(round(v, 1) == v for v in d["box"]) and round(d["score"], 4) == d["score"]
        assert 1 <= d["label"] <= 4 and d["class"] == CLASSES[d["label"] - 1]
    scores = [d["score"] for d in dets]
    assert scores == sorted(scores, reverse=True)
    with Image.open(out_png) as drawn:
        assert drawn.size == (128, 96) and drawn.mode == "RGB"
        assert drawn.tobytes() != Image.open(images[0]).convert("RGB").tobytes()

    # the threshold keeps exactly the detections scoring at least it
    thresh = scores[len(scores) // 2]
    code, out, _ = detect(capsys, images[0], "--checkpoint", checkpoint, "--score-thresh", thresh)
    assert code == 0
    assert json.loads(out)[0]["detections"] == [d for d in dets if d["score"] >= thresh]


def test_several_images_draw_into_a_directory(checkpoint, images, tmp_path, capsys):
    code, out, _ = detect(
        capsys, *images, "--checkpoint", checkpoint, "--score-thresh", 0, "--out", tmp_path / "vis"
    )
    assert code == 0
    assert [r["image"] for r in json.loads(out)] == images
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["grey.png", "shapes.png"]
    assert Image.open(tmp_path / "vis" / "grey.png").size == (128, 96)


def test_default_threshold_on_an_untrained_model_finds_nothing(checkpoint, images, capsys):
    code, out, _ = detect(capsys, images[1], "--checkpoint", checkpoint)
    assert code == 0 and json.loads(out) == [{"image": images[1], "detections": []}]


def error_case(name, tmp_path, images, checkpoint):
    """(arguments, a fragment of the expected message) for the bad input ``name``."""
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "file").write_text("")
    return {
        "missing image": (
            [tmp_path / "missing.png", "--checkpoint", checkpoint],
            "missing.png: image file not found",
        ),
        "corrupt image": (
            [tmp_path / "broken.png", "--checkpoint", checkpoint],
            "broken.png: cannot decode image",
        ),
        "missing checkpoint": ([images[0], "--checkpoint", tmp_path / "none.pt"], "checkpoint not found: "),
        "text as checkpoint": (
            [images[0], "--checkpoint", tmp_path / "notes.txt"],
            "notes.txt: not a readable",
        ),
        "foreign checkpoint": (
            [images[0], "--checkpoint", tmp_path / "foreign.pt"],
            "foreign.pt: not a pydet",
        ),
        "--out a file": (
            [*images, "--checkpoint", checkpoint, "--out", tmp_path / "file"],
            "must be a directory",
        ),
        "--out clash": (
            [images[0], images[0], "--checkpoint", checkpoint, "--out", tmp_path],
            "both be drawn to",
        ),
        "--out format": (
            [images[0], "--checkpoint", checkpoint, "--out", tmp_path / "o.nope"],
            "cannot write ",
        ),
    }[name]


ERRORS = [
    "missing image",
    "corrupt image",
    "missing checkpoint",
    "text as checkpoint",
    "foreign checkpoint",
    "--out a file",
    "--out clash",
    "--out format",
]


@pytest.mark.parametrize("name", ERRORS)
def test_errors_are_one_line_and_exit_2(checkpoint, images, tmp_path, capsys, name):
    args, message = error_case(name, tmp_path, images, checkpoint)
    code, out, err = detect(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("pydet detect: ") and message in err and err.count("\n") == 1
