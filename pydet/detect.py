"""``pydet detect``: run a trained checkpoint on image files, print the detections as JSON and optionally
draw them.

Output (stdout): a JSON list with one object per image, in argument order::

    [{"image": "street.jpg",
      "detections": [{"box": [x1, y1, x2, y2], "score": 0.8731, "label": 3, "class": "triangle"}, ...]}]

Boxes are in the image's pixel coordinates (rounded to 0.1 px), scores rounded to 4 decimals, detections
in the model's order (highest score first); label k is the checkpoint's ``classes[k - 1]``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from pydet.checkpoint import model_from_checkpoint
from pydet.data import load_image

# Tableau 10: distinct on photos and on each other; label k gets PALETTE[(k - 1) % 10]
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def class_name(classes: list[str], label: int) -> str:
    """``classes[label - 1]``, or the number for a label the list does not cover."""
    return classes[label - 1] if 0 < label <= len(classes) else str(label)


def detect_image(model: nn.Module, image: Tensor, classes: list[str], score_thresh: float) -> list[dict]:
    """Detections of ``model`` (eval mode) on one ``[3, H, W]`` image in [0, 1], on the model's device, as
    ``[{"box", "score", "label", "class"}]`` (rounded as in the module docstring), scores >= ``score_thresh``."""
    with torch.inference_mode():
        (result,) = model([image])
    keep = result["scores"] >= score_thresh
    return [
        {
            "box": [round(v, 1) for v in box],
            "score": round(score, 4),
            "label": label,
            "class": class_name(classes, label),
        }
        for box, score, label in zip(
            result["boxes"][keep].tolist(),
            result["scores"][keep].tolist(),
            result["labels"][keep].tolist(),
            strict=True,
        )
    ]


def draw_detections(image: Tensor, detections: list[dict]) -> Image.Image:
    """A ``PIL.Image`` of ``image`` (``[3, H, W]`` in [0, 1]) with each detection's box outlined in its class's
    colour and ``"name 0.87"`` on a filled tag above the box (inside it where the box touches the top)."""
    pixels = (image.detach().cpu() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    canvas = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 200))
    font = ImageFont.load_default(size=max(10, min(canvas.size) // 40))
    for det in sorted(detections, key=lambda d: d["score"]):  # the most confident drawn last, on top
        colour = PALETTE[(det["label"] - 1) % len(PALETTE)]
        x1, y1, x2, y2 = det["box"]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{det['class']} {det['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_h = bottom - top + 2
        ty = y1 - tag_h if y1 - tag_h >= 0 else y1
        draw.rectangle((x1, ty, x1 + right - left + 4, ty + tag_h), fill=colour)
        draw.text((x1 + 2, ty + 1 - top), text, fill=(255, 255, 255), font=font)
    return canvas


def output_paths(images: list[str], out: str | None) -> list[Path | None]:
    """Where each image's drawing goes (``None``: not drawn): ``out`` itself for one image unless ``out`` is a
    directory, else ``out/<image's name without extension>.png`` (``out`` a directory or not existing yet)."""
    if out is None:
        return [None] * len(images)
    out = Path(out)
    if len(images) == 1 and not out.is_dir():
        return [out]
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} must be a directory when drawing several images")
    paths = [out / f"{Path(image).stem}.png" for image in images]
    clash = next((p for k, p in enumerate(paths) if p in paths[:k]), None)
    if clash is not None:
        raise ValueError(f"two images would both be drawn to {clash} (same file name); draw them separately")
    return paths


def format_results(results: list[dict]) -> str:
    """``results`` as JSON with one detection per line: readable, and still one ``json.loads`` away."""
    images = []
    for result in results:
        detections = ",\n".join(f"    {json.dumps(d)}" for d in result["detections"])
        detections = f"[\n{detections}\n  ]" if detections else "[]"
        images.append(f'  {{"image": {json.dumps(result["image"])}, "detections": {detections}}}')
    return "[\n" + ",\n".join(images) + "\n]"


def run(
    images: list[str], checkpoint: str | os.PathLike, out: str | None, score_thresh: float, device: str
) -> int:
    """The ``pydet detect`` command: print the JSON to stdout and return 0, or print one line
    ``pydet detect: <message>`` to stderr and return 2 for a missing or undecodable image, a missing or
    foreign checkpoint, an unusable ``--out`` or an unavailable device."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("pydet detect: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    try:
        out_paths = output_paths(images, out)
        model, ckpt = model_from_checkpoint(checkpoint)
        model.to(device)
        classes = list(ckpt.get("classes") or [])
        results = []
        for path, out_path in zip(images, out_paths, strict=True):
            image = load_image(path).to(device)
            detections = detect_image(model, image, classes, score_thresh)
            results.append({"image": path, "detections": detections})
            if out_path is not None:
                out_path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    draw_detections(image, detections).save(out_path)
                except ValueError as e:  # Pillow: an extension it cannot write
                    raise ValueError(f"cannot write {out_path}: {e}") from None
    # ValueError: CheckpointError, ImageDecodeError and a bad --out; OSError: --out not writable
    except (OSError, ValueError) as e:
        print(f"pydet detect: {e}", file=sys.stderr)
        return 2
    print(format_results(results))
    return 0
