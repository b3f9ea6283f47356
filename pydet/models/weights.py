"""Loading weights the user points at (a local file or a URL; nothing downloads unless asked), with a
clear message when a checkpoint was made for another architecture or another number of classes."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn


def load_state_dict(source: str | os.PathLike | dict) -> dict[str, Tensor]:
    """A state dict from a dict, a ``.pth`` file or an ``http(s)://`` URL (cached by ``torch.hub``).
    Checkpoints that wrap the weights (``{"model": ...}`` or ``{"state_dict": ...}``) are unwrapped."""
    if isinstance(source, dict):
        state = source
    elif str(source).startswith(("http://", "https://")):
        state = torch.hub.load_state_dict_from_url(str(source), map_location="cpu", weights_only=True)
    else:
        if not os.path.isfile(source):
            raise FileNotFoundError(f"weights file not found: {source}")
        state = torch.load(source, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{source}: expected a state dict, got {type(state).__name__}")
    return state


def load_weights(model: nn.Module, source, strict: bool = True, owner: str | None = None) -> nn.Module:
    """``model.load_state_dict(load_state_dict(source), strict)``, checking shapes first so that a
    class-count (or architecture) mismatch names the parameter and both shapes."""
    state = load_state_dict(source)
    owner = owner or type(model).__name__
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            hint = " (a different num_classes?)" if "cls" in key or "classification" in key else ""
            raise ValueError(
                f"{owner}: weights for '{key}' have shape {list(value.shape)} but the model expects "
                f"{list(own[key].shape)}{hint}"
            )
    result = model.load_state_dict(state, strict=strict)
    return model if strict else result
