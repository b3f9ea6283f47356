"""RoI pooling modules over pydet.ops.roi_align: torchvision.ops.RoIAlign and detectron2's ROIAlign."""

from __future__ import annotations

from torch import Tensor, nn

from pydet.ops.roi import Pair, _pair, roi_align


class RoIAlign(nn.Module):
    """torchvision.ops.RoIAlign: ``forward(input, rois)`` with rois ``[K, 5]`` or a list of ``[L, 4]``."""

    def __init__(self, output_size: Pair, spatial_scale: float, sampling_ratio: int, aligned: bool = False):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
