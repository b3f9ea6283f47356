"""Training checkpoints: what ``pydet train`` writes and ``pydet detect`` / ``--resume`` read.

A checkpoint is a ``torch.save``-d dict::

    {"format": "pydet-checkpoint", "version": 1,
     "model": "ssdlite320_mobilenet_v2",          # a key of pydet.models.MODELS
     "model_kwargs": {"num_classes": 5, ...},      # what the builder was called with
     "image_size": 320 or None,                    # the training input size, if not the builder's
     "classes": ["circle", ...],                   # label k (k >= 1) is classes[k - 1]; 0 is background
     "state_dict": {...},                          # model weights (DDP's "module." prefix removed)
     "epoch": 3,                                   # epochs completed
     "optimizer": {...}, "scheduler": {...}, "scaler": {...} | None, "args": {...}, "metrics": {...}}

It loads with ``torch.load(weights_only=True)``: plain containers and tensors only. Writes go to a
temporary file in the same directory followed by ``os.replace``, so a crash mid-write never leaves a
truncated checkpoint behind (the previous one stays intact).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

FORMAT = "pydet-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that does not exist, is not a pydet checkpoint, or does not fit the model asked for."""


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Atomically write ``checkpoint`` (a dict as described in the module docstring) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **checkpoint}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing, unreadable or foreign file raises
    :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch.load's own message runs over many lines and suggests weights_only=False, which would
        # let an untrusted file run code; a fixed line says what matters
        raise CheckpointError(
            f"{path}: not a readable pydet checkpoint (torch.load failed with {type(e).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pydet training checkpoint (written by `pydet train`)")
    if checkpoint.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {checkpoint['version']} is newer than this pydet's"
        )
    return checkpoint


def build_model(checkpoint: dict) -> nn.Module:
    """The detector a checkpoint describes, built with its builder and arguments, without weights."""
    from pydet.models import MODELS

    name = checkpoint["model"]
    if name not in MODELS:
        raise CheckpointError(f"checkpoint is for unknown model '{name}' (known: {', '.join(MODELS)})")
    model = MODELS[name](**checkpoint["model_kwargs"])
    set_image_size(model, checkpoint.get("image_size"))
    return model


def set_image_size(model: nn.Module, size: int | None) -> None:
    """Make an SSD-family detector resize its inputs to ``size`` x ``size`` instead of its default
    (anchors follow the feature maps, so no other change is needed). ``None`` keeps the default."""
    if size is None:
        return
    transform = model.transform
    if transform.fixed_size is None:
        raise CheckpointError(
            f"{type(model).__name__} resizes by min/max side; image_size applies to SSD models"
        )
    transform.fixed_size = (size, size)
    transform.min_size = transform.max_size = size


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """``(model in eval mode with the checkpoint's weights, checkpoint)``."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {checkpoint['model']}: {e}") from None
    return model.eval(), checkpoint
