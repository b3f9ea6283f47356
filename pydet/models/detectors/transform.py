"""torchvision's ``GeneralizedRCNNTransform`` for one-stage detectors: normalise each image with the
model's mean/std, resize it (to a fixed size, or so the short side is ``min_size`` without the long
side exceeding ``max_size``; bilinear, ``align_corners=False``), batch with zero padding to a multiple
of ``size_divisible``, and map detections back to each original image size. Targets are checked and
their boxes resized with the image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydet.anchors.torchvision import ImageList


def check_images(images, owner: str, channels: int, device: torch.device | None = None) -> None:
    """torchvision's image checks, naming the image; ``device``: the model's, which every image must share."""
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"{owner}: images must be a list of [C, H, W] tensors, got {type(images).__name__}")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3:
            shape = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"{owner}: images[{i}] must be a 3-D tensor [C, H, W], got {shape}")
        if image.shape[0] != channels:
            raise ValueError(
                f"{owner}: images[{i}] must have {channels} channels, got shape {list(image.shape)}"
            )
        if not image.is_floating_point():
            raise TypeError(
                f"{owner}: images[{i}] must be a floating-point tensor with values in [0, 1], got {image.dtype}"
            )
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"{owner}: images[{i}] is empty, shape {list(image.shape)}")
        if device is not None and image.device != device:
            raise ValueError(f"{owner}: images[{i}] is on {image.device}, but the model is on {device}")


def check_targets(targets, num_images: int, owner: str) -> None:
    """torchvision's checks, with the image index and the box in each message."""
    if targets is None:
        raise ValueError(f"{owner}: targets should not be None in training mode")
    if len(targets) != num_images:
        raise ValueError(f"{owner}: got {num_images} images but {len(targets)} targets")
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"{owner}: targets[{i}] must be a dict with 'boxes' and 'labels'")
        boxes, labels = target["boxes"], target["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            shape = list(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"{owner}: targets[{i}]['boxes'] must be a tensor of shape [N, 4], got {shape}")
        if not boxes.is_floating_point():
            raise TypeError(f"{owner}: targets[{i}]['boxes'] must be floating point, got {boxes.dtype}")
        if not isinstance(labels, Tensor) or labels.shape != boxes.shape[:1] or labels.is_floating_point():
            shape = list(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(
                f"{owner}: targets[{i}]['labels'] must be an integer tensor of shape [{boxes.shape[0]}], got {shape}"
            )
        degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1) | ~boxes.isfinite().all(dim=1)
        if degenerate.any():
            b = int(torch.where(degenerate)[0][0])
            raise ValueError(
                f"{owner}: all bounding boxes should have positive height and width; found invalid box "
                f"{boxes[b].tolist()} (index {b}) for target at index {i}"
            )


class DetectionTransform(nn.Module):
    """``forward(images, targets)`` -> ``(ImageList, targets)``; ``postprocess`` maps boxes back."""

    def __init__(
        self,
        min_size: int,
        max_size: int,
        image_mean: list[float],
        image_std: list[float],
        size_divisible: int = 32,
        fixed_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.min_size, self.max_size = min_size, max_size
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        self.size_divisible = size_divisible
        self.fixed_size = fixed_size  # (width, height), torchvision's order

    def normalize(self, image: Tensor) -> Tensor:
        """``(image - mean) / std`` per channel; works on ``[C, H, W]`` and ``[B, C, H, W]``."""
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)[:, None, None]
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)[:, None, None]
        return (image - mean) / std

    def resize(self, image: Tensor, target: dict | None) -> tuple[Tensor, dict | None]:
        h, w = image.shape[-2:]
        if self.fixed_size is not None and (w, h) == tuple(self.fixed_size):
            out = image  # bilinear resampling to the same size is the identity: skip the pass over memory
        elif self.fixed_size is not None:
            out = F.interpolate(
                image[None],
                size=[self.fixed_size[1], self.fixed_size[0]],
                mode="bilinear",
                align_corners=False,
            )[0]
        else:
            scale = min(self.min_size / min(h, w), self.max_size / max(h, w))
            out = F.interpolate(
                image[None],
                scale_factor=scale,
                mode="bilinear",
                recompute_scale_factor=True,
                align_corners=False,
            )[0]
        if target is not None:
            target = dict(target, boxes=resize_boxes(target["boxes"], (h, w), tuple(out.shape[-2:])))
        return out, target

    def forward(
        self, images: list[Tensor], targets: list[dict] | None = None
    ) -> tuple[ImageList, list | None]:
        resized, new_targets, sizes = [], [] if targets is not None else None, []
        for i, image in enumerate(images):
            image, target = self.resize(self.normalize(image), targets[i] if targets is not None else None)
            resized.append(image)
            sizes.append((int(image.shape[-2]), int(image.shape[-1])))
            if new_targets is not None:
                new_targets.append(target)
        return ImageList(self.batch_images(resized), sizes), new_targets

    def batch_images(self, images: list[Tensor]) -> Tensor:
        stride = self.size_divisible
        h = int(math.ceil(max(i.shape[1] for i in images) / stride) * stride)
        w = int(math.ceil(max(i.shape[2] for i in images) / stride) * stride)
        batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
        for b, image in enumerate(images):
            batch[b, :, : image.shape[1], : image.shape[2]].copy_(image)
        return batch

    def postprocess(self, detections: list[dict], image_sizes, original_sizes) -> list[dict]:
        for det, size, original in zip(detections, image_sizes, original_sizes, strict=True):
            det["boxes"] = resize_boxes(det["boxes"], size, original)
        return detections


def resize_boxes(boxes: Tensor, original_size, new_size) -> Tensor:
    """Scale xyxy boxes from ``original_size`` to ``new_size`` (both (h, w)); float32 ratios as torchvision."""
    ratio_h, ratio_w = (
        torch.tensor(float(s), dtype=torch.float32, device=boxes.device)
        / torch.tensor(float(s0), dtype=torch.float32, device=boxes.device)
        for s, s0 in zip(new_size, original_size, strict=True)
    )
    return boxes * torch.stack([ratio_w, ratio_h, ratio_w, ratio_h])
