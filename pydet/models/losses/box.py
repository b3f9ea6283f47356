"""Box regression losses per anchor (the choices of torchvision's ``_box_loss``)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from pydet.ops import generalized_box_iou_loss

BOX_LOSSES = ("smooth_l1", "l1", "giou")


def box_loss(
    loss_type: str,
    deltas: Tensor,
    target_deltas: Tensor,
    decode: Callable[[Tensor], Tensor] | None = None,
    target_boxes: Tensor | None = None,
    beta: float = 1.0,
) -> Tensor:
    """Loss of each predicted box ``deltas [..., 4]`` -> ``[...]``.

    ``'smooth_l1'`` (``beta``) and ``'l1'`` compare deltas with ``target_deltas``, summed over the four
    coordinates; ``'giou'`` compares ``decode(deltas)`` with ``target_boxes`` (the decode kernel has a
    backward, so the loss trains the deltas).
    """
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(deltas, target_deltas, reduction="none", beta=beta).sum(-1)
    if loss_type == "l1":
        return F.l1_loss(deltas, target_deltas, reduction="none").sum(-1)
    if loss_type == "giou":
        if decode is None or target_boxes is None:
            raise ValueError("box_loss: 'giou' needs decode and target_boxes")
        return generalized_box_iou_loss(decode(deltas), target_boxes)
    raise ValueError(f"box_loss: loss_type must be one of {', '.join(BOX_LOSSES)}, got '{loss_type}'")
