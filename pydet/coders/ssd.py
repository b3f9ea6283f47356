"""SSD's centre-size box coding (original SSD, NVIDIA DeepLearningExamples, super-gradients)."""

from __future__ import annotations

from torch import Tensor

from pydet.ops.coders import box_decode, box_encode


class SSDBoxCoder:
    """Priors and boxes in ``(cx, cy, w, h)``; ``loc = ((g_c - p_c) / p_wh / scale_xy, log(g_wh / p_wh) / scale_wh)``.

    ``decode`` is super-gradients' ``SSDHead`` post-processing before the multiplication by the
    image size: ``(loc_xy * scale_xy * p_wh + p_c, exp(loc_wh * scale_wh) * p_wh)``.
    """

    def __init__(self, scale_xy: float = 0.1, scale_wh: float = 0.2):
        self.weights = (float(scale_xy), float(scale_xy), float(scale_wh), float(scale_wh))

    def encode(self, priors: Tensor, boxes: Tensor) -> Tensor:
        """``[B?, N, 4]`` regression targets of ``boxes`` (cxcywh) against ``priors [N, 4]`` (cxcywh)."""
        return box_encode(priors, boxes, "ssd", self.weights)

    def decode(self, priors: Tensor, loc: Tensor) -> Tensor:
        """``[B?, N, 4]`` boxes (cxcywh) from predicted ``loc [B?, N, 4]`` and ``priors [N, 4]`` (cxcywh)."""
        return box_decode(priors, loc, "ssd", self.weights)
