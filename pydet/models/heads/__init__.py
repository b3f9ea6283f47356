"""Dense prediction heads: SSD, SSDLite and RetinaNet, with torchvision's parameter names."""

from pydet.models.heads.retinanet import RetinaNetClassificationHead, RetinaNetHead, RetinaNetRegressionHead
from pydet.models.heads.ssd import SSDHead, SSDLiteHead

__all__ = [
    "RetinaNetClassificationHead",
    "RetinaNetHead",
    "RetinaNetRegressionHead",
    "SSDHead",
    "SSDLiteHead",
]
