"""Detection losses: SSD's MultiBox, RetinaNet's focal + box losses, box regression losses."""

from pydet.models.losses.box import BOX_LOSSES, box_loss
from pydet.models.losses.multibox import multibox_loss
from pydet.models.losses.retinanet import retinanet_classification_loss, retinanet_regression_loss
from pydet.ops import sigmoid_focal_loss

__all__ = [
    "BOX_LOSSES",
    "box_loss",
    "multibox_loss",
    "retinanet_classification_loss",
    "retinanet_regression_loss",
    "sigmoid_focal_loss",
]
