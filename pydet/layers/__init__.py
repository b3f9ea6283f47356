"""Layers built on pydet's kernels: the fused depthwise convolution and the separable-convolution
blocks of MobileNet/SSDLite detectors, RoI pooling, deformable convolution, plus detectron2's norm
and conv conventions."""

from pydet.layers.blocks import (
    Conv2dNormActivation,
    ConvModule,
    DepthwiseSeparableConv,
    InvertedResidual,
    SeparableConv2d,
)
from pydet.layers.conv2d import Conv2d, ShapeSpec
from pydet.layers.deform_conv import DeformConv, DeformConv2d, ModulatedDeformConv
from pydet.layers.depthwise import DepthwiseConv2d, activation_name, conv_norm_act, fold_batchnorm
from pydet.layers.mask_ops import paste_masks_in_image
from pydet.layers.norm import FrozenBatchNorm2d, convert_frozen_batchnorm, get_norm
from pydet.layers.roi import (
    MultiScaleRoIAlign,
    PSRoIAlign,
    PSRoIPool,
    ROIAlign,
    RoIAlign,
    ROIAlignRotated,
    RoIPool,
    ROIPooler,
    assign_boxes_to_levels,
    fpn_levels,
)

__all__ = [
    "Conv2d",
    "Conv2dNormActivation",
    "ConvModule",
    "DeformConv",
    "DeformConv2d",
    "DepthwiseConv2d",
    "DepthwiseSeparableConv",
    "FrozenBatchNorm2d",
    "InvertedResidual",
    "ModulatedDeformConv",
    "MultiScaleRoIAlign",
    "PSRoIAlign",
    "PSRoIPool",
    "ROIAlign",
    "ROIAlignRotated",
    "ROIPooler",
    "RoIAlign",
    "RoIPool",
    "SeparableConv2d",
    "ShapeSpec",
    "activation_name",
    "assign_boxes_to_levels",
    "conv_norm_act",
    "convert_frozen_batchnorm",
    "fold_batchnorm",
    "fpn_levels",
    "get_norm",
    "paste_masks_in_image",
]
