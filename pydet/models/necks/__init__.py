"""Necks between a backbone and the detection heads: torchvision's FPN (and the RetinaNet ResNet-50-FPN
backbone), SSDLite's MobileNetV2 extractor, super-gradients' SSD necks and a PANet neck. Each takes
the backbone's maps highest resolution first."""

from pydet.models.necks.fpn import (
    BackboneWithFPN,
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
    resnet50_fpn_backbone,
)
from pydet.models.necks.pan import PANNeck
from pydet.models.necks.ssd import (
    SSDBottleneckNeck,
    SSDInvertedResidualNeck,
    SSDLiteFeatureExtractorMobileNetV2,
    ssdlite_extra_block,
)

__all__ = [
    "BackboneWithFPN",
    "ExtraFPNBlock",
    "FeaturePyramidNetwork",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "PANNeck",
    "SSDBottleneckNeck",
    "SSDInvertedResidualNeck",
    "SSDLiteFeatureExtractorMobileNetV2",
    "resnet50_fpn_backbone",
    "ssdlite_extra_block",
]
