"""What SSD and RetinaNet share: torchvision's calling convention around backbone -> head -> anchors.

* ``model(images, targets)`` in training mode returns the loss dict; in eval mode
  ``list[dict(boxes, scores, labels)]`` in each original image's coordinates.
* ``model.predict_batch(batch)`` takes an already resized ``[B, 3, H, W]`` batch (values in [0, 1]) and
  returns a :class:`pydet.ops.MulticlassNmsOutput` (fixed-size, padded) in batch coordinates: no
  Python-side data-dependent control flow, so it compiles with ``torch.compile(fullgraph=True)`` and
  exports with ``torch.export``. The eval path runs the same code after resizing.

Ground truth is matched to anchors for the whole batch in one fused call (no IoU matrix) and encoded
in the same pass (``box_encode(..., target_index=matches)``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from pydet.models.detectors.transform import DetectionTransform, check_images, check_targets
from pydet.ops import MulticlassNmsOutput, clip_boxes_to_image, multiclass_nms_to_list


def feature_list(features) -> list[Tensor]:
    if isinstance(features, Tensor):
        return [features]
    if isinstance(features, (dict, OrderedDict)):
        return list(features.values())
    return list(features)


def pad_targets(targets: list[dict], device) -> tuple[Tensor, Tensor, Tensor]:
    """``(boxes [B, Mmax, 4], labels [B, Mmax], num_gt [B])``; padding rows are ignored by the matchers."""
    m = max((t["boxes"].shape[0] for t in targets), default=0)
    dtype = targets[0]["boxes"].dtype
    boxes = torch.zeros((len(targets), m, 4), dtype=dtype, device=device)
    labels = torch.zeros((len(targets), m), dtype=torch.int64, device=device)
    for b, t in enumerate(targets):
        n = t["boxes"].shape[0]
        boxes[b, :n] = t["boxes"]
        labels[b, :n] = t["labels"]
    num_gt = torch.tensor([t["boxes"].shape[0] for t in targets], dtype=torch.int64, device=device)
    return boxes, labels, num_gt


def shared_size(image_sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The (h, w) every image of the batch has, or None when they differ."""
    return image_sizes[0] if all(size == image_sizes[0] for size in image_sizes[1:]) else None


def clip_to_images(boxes: Tensor, image_sizes: list[tuple[int, int]]) -> Tensor:
    """Clip ``boxes [B, K, 4]`` to each image's (h, w) (torchvision clips before NMS)."""
    if (size := shared_size(image_sizes)) is not None:
        return clip_boxes_to_image(boxes, size)
    sizes = torch.tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)  # [B, 2] (h, w)
    upper = sizes.flip(1).repeat(1, 2)[:, None, :]  # (w, h, w, h)
    return torch.minimum(boxes.clamp(min=0), upper)


class DenseDetector(nn.Module):
    """Subclasses define ``backbone``, ``anchor_generator``, ``head``, ``transform`` and implement
    ``compute_loss(head_outputs, anchors, gt_boxes, gt_labels, num_gt)`` and
    ``predict(head_outputs, anchors, image_sizes, level_counts) -> MulticlassNmsOutput``, where
    ``image_sizes`` holds each image's (h, w) inside the batch, or one (h, w) shared by all, and
    ``level_counts`` the number of anchors of each feature level."""

    transform: DetectionTransform

    def _heads(self, batch: Tensor, image_list) -> tuple[dict[str, Tensor], Tensor, list[int]]:
        """Head outputs, the anchors (shared by the batch) and the number of anchors of each level."""
        features = feature_list(self.backbone(batch))
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)[0]
        per_location = self.anchor_generator.num_anchors_per_location()
        level_counts = [f.shape[-2] * f.shape[-1] * a for f, a in zip(features, per_location, strict=True)]
        return head_outputs, anchors, level_counts

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def predict_batch(self, batch: Tensor) -> MulticlassNmsOutput:
        owner, channels = f"{type(self).__name__}.predict_batch", len(self.transform.image_mean)
        if batch.dim() != 4 or batch.shape[1] != channels or batch.shape[0] == 0:
            raise ValueError(
                f"{owner}: batch must have shape [B, {channels}, H, W], B >= 1, got {list(batch.shape)}"
            )
        if not batch.is_floating_point():
            raise TypeError(
                f"{owner}: batch must be a floating-point tensor with values in [0, 1], got {batch.dtype}"
            )
        if batch.device != self._device():
            raise ValueError(f"{owner}: batch is on {batch.device}, but the model is on {self._device()}")
        x = self.transform.normalize(batch)
        head_outputs, anchors, level_counts = self._heads(x, x)
        return self.predict(head_outputs, anchors, [(x.shape[-2], x.shape[-1])], level_counts)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        name = type(self).__name__
        check_images(images, name, len(self.transform.image_mean), self._device())
        if self.training:
            check_targets(targets, len(images), name)
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        image_list, targets = self.transform(images, targets if self.training else None)
        head_outputs, anchors, level_counts = self._heads(image_list.tensors, image_list)
        if self.training:
            gt_boxes, gt_labels, num_gt = pad_targets(targets, anchors.device)
            return self.compute_loss(head_outputs, anchors, gt_boxes.to(anchors.dtype), gt_labels, num_gt)
        detections = multiclass_nms_to_list(
            self.predict(head_outputs, anchors, image_list.image_sizes, level_counts)
        )
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
