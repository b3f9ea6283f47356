"""Backbones in the state-dict layouts of the libraries they mirror (torchvision VGG16/SSD, ResNet-50,
MobileNetV2; MobileNetV1 from pydet's separable blocks) and :class:`MultiOutputBackbone`, which
returns any named submodules' outputs. Pure Python; no torchvision import."""

from pydet.models.backbones.mobilenet import MobileNetV1, MobileNetV2, make_divisible
from pydet.models.backbones.multi_output import MultiOutputBackbone
from pydet.models.backbones.resnet import Bottleneck, ResNet, freeze_layers, resnet50
from pydet.models.backbones.vgg import SSDFeatureExtractorVGG, vgg16_features, vgg16_to_ssd_backbone

__all__ = [
    "Bottleneck",
    "MobileNetV1",
    "MobileNetV2",
    "MultiOutputBackbone",
    "ResNet",
    "SSDFeatureExtractorVGG",
    "freeze_layers",
    "make_divisible",
    "resnet50",
    "vgg16_features",
    "vgg16_to_ssd_backbone",
]
