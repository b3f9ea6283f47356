"""Classification losses of one-stage detectors as fused kernels (``torch.ops.pydet.sigmoid_focal_loss``)."""

from __future__ import annotations

import torch
from torch import Tensor

_ops = torch.ops.pydet


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """torchvision ``sigmoid_focal_loss`` (RetinaNet): ``a_t * BCE(inputs, targets) * (1 - p_t) ** gamma``.

    ``inputs`` are logits and ``targets`` (same shape, any float dtype; one-hot or soft labels) the
    probabilities of the positive class; ``p_t = p * t + (1 - p) * (1 - t)`` with ``p = sigmoid(inputs)``
    and ``a_t = alpha * t + (1 - alpha) * (1 - t)`` (no weighting when ``alpha < 0``). One pass over
    memory, no intermediate tensors; the backward kernel gives gradients for ``inputs`` (and for
    ``targets`` when they require grad), recomputing the forward terms instead of saving them.

    ``reduction``: ``'none'`` (same shape as inputs), ``'mean'`` or ``'sum'``, accumulated in float64
    in a fixed order. Deviations from torchvision, both on inputs it gets wrong: the mean of an empty
    input is 0 (torchvision: NaN); ``alpha > 1`` and ``gamma < 0`` raise ``ValueError``. float16/bfloat16
    are computed in float32 (and run in float32 under autocast, like ``binary_cross_entropy_with_logits``).
    """
    return _ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)


__all__ = ["sigmoid_focal_loss"]
