"""One-stage detectors with torchvision's interface: SSD (SSD300/512-VGG16, SSDLite-MobileNetV2) and
RetinaNet (ResNet-50-FPN)."""

from pydet.models.detectors.base import DenseDetector
from pydet.models.detectors.builders import (
    retinanet_resnet50_fpn,
    ssd300_vgg16,
    ssd512_vgg16,
    ssdlite320_mobilenet_v2,
)
from pydet.models.detectors.retinanet import RetinaNet
from pydet.models.detectors.ssd import SSD
from pydet.models.detectors.transform import DetectionTransform

__all__ = [
    "SSD",
    "DenseDetector",
    "DetectionTransform",
    "RetinaNet",
    "retinanet_resnet50_fpn",
    "ssd300_vgg16",
    "ssd512_vgg16",
    "ssdlite320_mobilenet_v2",
]
