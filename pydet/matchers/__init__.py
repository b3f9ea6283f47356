"""IoU matchers and assigners of torchvision, detectron2 and mmdet.

Each accepts a precomputed quality matrix (the drop-in call) or the boxes themselves
(``match_boxes`` / ``assign``): then the fused kernels of :mod:`pydet.ops.matching` compute the IoU on
the fly and never hold the ``M x N`` matrix (extra memory O(M + N)), with results equal to the matrix
path bit for bit. torchvision's and detectron2's matchers also take a whole batch of padded ground
truth, ``gt [B, Mmax, 4]`` with ``num_gt [B]``, in one call.
"""

from pydet.matchers import detectron2, mmdet, torchvision
from pydet.matchers._reduce import from_boxes, from_matrix

__all__ = ["detectron2", "from_boxes", "from_matrix", "mmdet", "torchvision"]
