"""Detector builders with torchvision's defaults (thresholds, detections per image, top-k candidates,
anchor configurations, image normalisation). ``weights`` (a path or URL to a full-model state dict, e.g.
torchvision's) and ``weights_backbone`` (plain classification weights) are only loaded when given."""

from __future__ import annotations

from functools import partial

from torch import nn

from pydet.anchors.torchvision import DefaultBoxGenerator
from pydet.layers import FrozenBatchNorm2d
from pydet.models.backbones import MobileNetV2, SSDFeatureExtractorVGG, vgg16_features, vgg16_to_ssd_backbone
from pydet.models.detectors.retinanet import RetinaNet
from pydet.models.detectors.ssd import SSD
from pydet.models.heads import SSDLiteHead
from pydet.models.necks import SSDLiteFeatureExtractorMobileNetV2, resnet50_fpn_backbone
from pydet.models.weights import load_state_dict, load_weights

# torchvision's SSD300 normalisation: mean in [0, 1] units, std 1/255 (the Caffe VGG convention).
_VGG_SSD_NORMALISATION = {"image_mean": [0.48235, 0.45882, 0.40784], "image_std": [1.0 / 255.0] * 3}


def _with_weights(model, weights, name: str):
    return load_weights(model, weights, owner=name) if weights is not None else model


def _ssd_vgg16(
    name: str,
    highres: bool,
    anchors: DefaultBoxGenerator,
    size: int,
    num_classes,
    weights,
    weights_backbone,
    kwargs,
) -> SSD:
    backbone = SSDFeatureExtractorVGG(vgg16_features(), highres=highres)
    if weights_backbone is not None:
        load_weights(backbone, vgg16_to_ssd_backbone(load_state_dict(weights_backbone)), strict=False)
    model = SSD(backbone, anchors, (size, size), num_classes, **{**_VGG_SSD_NORMALISATION, **kwargs})
    return _with_weights(model, weights, name)


def ssd300_vgg16(num_classes: int = 91, weights=None, weights_backbone=None, **kwargs) -> SSD:
    """torchvision's ``ssd300_vgg16``: 8,732 default boxes on 6 maps (38, 19, 10, 5, 3, 1), score
    threshold 0.01, NMS 0.45, 200 detections, 400 candidates per class. Keys match torchvision's."""
    anchors = DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    return _ssd_vgg16("ssd300_vgg16", False, anchors, 300, num_classes, weights, weights_backbone, kwargs)


def ssd512_vgg16(num_classes: int = 91, weights=None, weights_backbone=None, **kwargs) -> SSD:
    """SSD512 (the paper's / mmdet's configuration): 7 maps (64 .. 1), 24,564 default boxes."""
    anchors = DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06],
        steps=[8, 16, 32, 64, 128, 256, 512],
    )
    return _ssd_vgg16("ssd512_vgg16", True, anchors, 512, num_classes, weights, weights_backbone, kwargs)


def ssdlite320_mobilenet_v2(
    num_classes: int = 91, weights=None, weights_backbone=None, width_mult: float = 1.0, **kwargs
) -> SSD:
    """SSDLite320 on MobileNetV2 (torchvision's SSDLite recipe, as for its MobileNetV3 model):
    6 maps (20, 10, 5, 3, 2, 1) with 6 boxes per location, depthwise-separable head, BatchNorm with
    eps 0.001 / momentum 0.03, score threshold 0.001, NMS 0.55, 300 detections and candidates."""
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    mobilenet = MobileNetV2(width_mult=width_mult, norm_layer=norm_layer)
    if weights_backbone is not None:
        load_weights(mobilenet, load_state_dict(weights_backbone), strict=False)
    backbone = SSDLiteFeatureExtractorMobileNetV2(width_mult, norm_layer=norm_layer, backbone=mobilenet)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    channels = backbone.out_channels
    head = SSDLiteHead(channels, anchors.num_anchors_per_location(), num_classes, norm_layer)
    defaults = {
        "score_thresh": 0.001,
        "nms_thresh": 0.55,
        "detections_per_img": 300,
        "topk_candidates": 300,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    model = SSD(backbone, anchors, (320, 320), num_classes, head=head, **{**defaults, **kwargs})
    return _with_weights(model, weights, "ssdlite320_mobilenet_v2")


def retinanet_resnet50_fpn(
    num_classes: int = 91,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    **kwargs,
) -> RetinaNet:
    """torchvision's ``retinanet_resnet50_fpn`` (v1): FPN P3-P7 (P6/P7 from P5), 9 anchors per location,
    score threshold 0.05, NMS 0.5, 300 detections, 1000 candidates per level. As in torchvision, a
    model built from pretrained weights uses FrozenBatchNorm and trains the last 3 stages; an
    untrained one uses BatchNorm and trains all of them."""
    pretrained = weights is not None or weights_backbone is not None
    layers = trainable_backbone_layers if trainable_backbone_layers is not None else (3 if pretrained else 5)
    if not 0 <= layers <= 5:
        raise ValueError(f"retinanet_resnet50_fpn: trainable_backbone_layers must be in [0, 5], got {layers}")
    backbone = resnet50_fpn_backbone(
        trainable_layers=layers, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    )
    if weights_backbone is not None:
        load_weights(backbone.body, load_state_dict(weights_backbone), strict=False)
    model = RetinaNet(backbone, num_classes, **kwargs)
    return _with_weights(model, weights, "retinanet_resnet50_fpn")
