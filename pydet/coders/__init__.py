"""Box coders of torchvision, mmdet, detectron2 and SSD, numerically identical to each library (exp/log
within 1 ulp), all on one fused kernel family (:func:`pydet.ops.box_encode` / :func:`box_decode`)."""

from pydet.coders.detectron2 import Box2BoxTransform
from pydet.coders.mmdet import DeltaXYWHBBoxCoder
from pydet.coders.ssd import SSDBoxCoder
from pydet.coders.torchvision import BoxCoder

__all__ = ["Box2BoxTransform", "BoxCoder", "DeltaXYWHBBoxCoder", "SSDBoxCoder"]
