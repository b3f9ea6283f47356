"""Detection models built on pydet's kernels, without torchvision: backbones, necks, heads, losses and
the SSD / RetinaNet detectors, with torchvision's parameter names so its weights load key for key.

``pydet.models.ssd300_vgg16(num_classes=91, weights="ssd300.pth")`` and friends build them."""

from pydet.models.detectors import (
    SSD,
    DenseDetector,
    DetectionTransform,
    RetinaNet,
    retinanet_resnet50_fpn,
    ssd300_vgg16,
    ssd512_vgg16,
    ssdlite320_mobilenet_v2,
)
from pydet.models.weights import load_state_dict, load_weights

MODELS = {
    "ssd300_vgg16": ssd300_vgg16,
    "ssd512_vgg16": ssd512_vgg16,
    "ssdlite320_mobilenet_v2": ssdlite320_mobilenet_v2,
    "retinanet_resnet50_fpn": retinanet_resnet50_fpn,
}

__all__ = [
    "MODELS",
    "SSD",
    "DenseDetector",
    "DetectionTransform",
    "RetinaNet",
    "load_state_dict",
    "load_weights",
    "retinanet_resnet50_fpn",
    "ssd300_vgg16",
    "ssd512_vgg16",
    "ssdlite320_mobilenet_v2",
]
