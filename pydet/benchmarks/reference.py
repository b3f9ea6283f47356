"""Plain-PyTorch reference formulas for pydet's kernels.

Each function is the eager formula of the library pydet mirrors (torchvision for the box utilities,
the IoU family and the IoU losses; mmdet for ``bbox_overlaps``), written operation by operation the
way that library writes it, without its dtype up-casting. The test suite runs them in float64 as the
ground truth and in float32 to check bit-exactness; ``pydet bench`` times them as the eager baseline.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pydet.ops.conv import ACTIVATIONS


# ---- box utilities -----------------------------------------------------------------------------
def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    if fmt != "xyxy":
        return boxes[..., 2] * boxes[..., 3]
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _to_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    a, b, c, d = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack((a, b, a + c, b + d), dim=-1)
    if fmt == "cxcywh":
        return torch.stack((a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d), dim=-1)
    return boxes


def _from_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    if fmt == "cxcywh":
        return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)
    return boxes


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    if in_fmt == out_fmt:
        return boxes.clone()
    return _from_xyxy(_to_xyxy(boxes, in_fmt), out_fmt)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


# ---- torchvision IoU family -----------------------------------------------------------------------
# torchvision's formulas, written on [..., 4] tensors that broadcast against each other: the pairwise
# functions pass boxes1[:, None] and boxes2[None], the aligned ones the boxes themselves. Every
# element sees exactly torchvision's operations in torchvision's order.
def _corners(b: Tensor, fmt: str) -> tuple[Tensor, Tensor]:
    if fmt == "xywh":
        return b[..., :2], b[..., :2] + b[..., 2:]
    if fmt == "cxcywh":
        return b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2
    return b[..., :2], b[..., 2:]


def _inter_union(b1: Tensor, b2: Tensor, fmt: str = "xyxy") -> tuple[Tensor, Tensor]:
    (lt1, rb1), (lt2, rb2) = _corners(b1, fmt), _corners(b2, fmt)
    lt = torch.max(lt1, lt2)
    rb = torch.min(rb1, rb2)
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, box_area(b1, fmt) + box_area(b2, fmt) - inter


def _iou(b1: Tensor, b2: Tensor, fmt: str = "xyxy") -> Tensor:
    inter, union = _inter_union(b1, b2, fmt)
    return inter / union


def _giou(b1: Tensor, b2: Tensor) -> Tensor:
    inter, union = _inter_union(b1, b2)
    iou = inter / union
    whi = (torch.max(b1[..., 2:], b2[..., 2:]) - torch.min(b1[..., :2], b2[..., :2])).clamp(min=0)
    areai = whi[..., 0] * whi[..., 1]
    return iou - (areai - union) / areai


def _diou_iou(b1: Tensor, b2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    iou = _iou(b1, b2)
    whi = (torch.max(b1[..., 2:], b2[..., 2:]) - torch.min(b1[..., :2], b2[..., :2])).clamp(min=0)
    diagonal_distance_squared = (whi[..., 0] ** 2) + (whi[..., 1] ** 2) + eps
    x_p, y_p = (b1[..., 0] + b1[..., 2]) / 2, (b1[..., 1] + b1[..., 3]) / 2
    x_g, y_g = (b2[..., 0] + b2[..., 2]) / 2, (b2[..., 1] + b2[..., 3]) / 2
    centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
    return iou - (centers_distance_squared / diagonal_distance_squared), iou


def _diou(b1: Tensor, b2: Tensor, eps: float = 1e-7) -> Tensor:
    return _diou_iou(b1, b2, eps)[0]


def _ciou(b1: Tensor, b2: Tensor, eps: float = 1e-7) -> Tensor:
    diou, iou = _diou_iou(b1, b2, eps)
    w_pred, h_pred = b1[..., 2] - b1[..., 0], b1[..., 3] - b1[..., 1]
    w_gt, h_gt = b2[..., 2] - b2[..., 0], b2[..., 3] - b2[..., 1]
    v = (4 / (math.pi**2)) * torch.pow(torch.atan(w_pred / h_pred) - torch.atan(w_gt / h_gt), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    return _iou(boxes1[:, None], boxes2[None], fmt)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return _giou(boxes1[:, None], boxes2[None])


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    return _diou(boxes1[:, None], boxes2[None], eps)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    return _ciou(boxes1[:, None], boxes2[None], eps)


box_iou_aligned = _iou
generalized_box_iou_aligned = _giou
distance_box_iou_aligned = _diou
complete_box_iou_aligned = _ciou


# ---- torchvision IoU losses --------------------------------------------------------------------
def _loss_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1 = torch.max(x1, x1g)
    ykis1 = torch.max(y1, y1g)
    xkis2 = torch.min(x2, x2g)
    ykis2 = torch.min(y2, y2g)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk = torch.where(mask, (xkis2 - xkis1) * (ykis2 - ykis1), torch.zeros_like(xkis1))
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    return intsctk, unionk


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    return loss


def generalized_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    intsctk, unionk = _loss_inter_union(boxes1, boxes2)
    iouk = intsctk / (unionk + eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    miouk = iouk - ((area_c - unionk) / (area_c + eps))
    return _reduce(1 - miouk, reduction)


def _diou_iou_loss(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    intsct, union = _loss_inter_union(boxes1, boxes2)
    iou = intsct / (union + eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    diagonal_distance_squared = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x_p, y_p = (x2 + x1) / 2, (y2 + y1) / 2
    x_g, y_g = (x1g + x2g) / 2, (y1g + y2g) / 2
    centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
    return 1 - iou + (centers_distance_squared / diagonal_distance_squared), iou


def distance_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    return _reduce(_diou_iou_loss(boxes1, boxes2, eps)[0], reduction)


def complete_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    diou_loss, iou = _diou_iou_loss(boxes1, boxes2)  # torchvision passes no eps here
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    w_pred, h_pred = x2 - x1, y2 - y1
    w_gt, h_gt = x2g - x1g, y2g - y1g
    v = (4 / (math.pi**2)) * torch.pow((torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred)), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(diou_loss + alpha * v, reduction)


# ---- mmdet bbox_overlaps -----------------------------------------------------------------------
def bbox_overlaps(
    bboxes1: Tensor,
    bboxes2: Tensor,
    mode: str = "iou",
    is_aligned: bool = False,
    eps: float = 1e-6,
    offset: int = 0,
) -> Tensor:
    rows, cols = bboxes1.size(-2), bboxes2.size(-2)
    batch_shape = bboxes1.shape[:-2]
    if rows * cols == 0:
        return bboxes1.new_zeros((*batch_shape, rows) if is_aligned else (*batch_shape, rows, cols))
    area1 = (bboxes1[..., 2] - bboxes1[..., 0] + offset) * (bboxes1[..., 3] - bboxes1[..., 1] + offset)
    area2 = (bboxes2[..., 2] - bboxes2[..., 0] + offset) * (bboxes2[..., 3] - bboxes2[..., 1] + offset)
    if is_aligned:
        b1, b2 = bboxes1, bboxes2
        a1, a2 = area1, area2
    else:
        b1, b2 = bboxes1[..., :, None, :], bboxes2[..., None, :, :]
        a1, a2 = area1[..., None], area2[..., None, :]
    lt = torch.max(b1[..., :2], b2[..., :2])
    rb = torch.min(b1[..., 2:], b2[..., 2:])
    wh = (rb - lt + offset).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = a1 + a2 - overlap if mode in ("iou", "giou") else a1 + torch.zeros_like(overlap)
    eps_t = union.new_tensor([eps])
    union = torch.max(union, eps_t)
    ious = overlap / union
    if mode in ("iou", "iof"):
        return ious
    enclosed_lt = torch.min(b1[..., :2], b2[..., :2])
    enclosed_rb = torch.max(b1[..., 2:], b2[..., 2:])
    enclose_wh = (enclosed_rb - enclosed_lt + offset).clamp(min=0)
    enclose_area = torch.max(enclose_wh[..., 0] * enclose_wh[..., 1], eps_t)
    return ious - (enclose_area - union) / enclose_area


# ---- NMS family ----------------------------------------------------------------------------------
def _score_order(scores: Tensor) -> Tensor:
    """Non-NaN positions by decreasing score, equal scores by increasing index."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[~torch.isnan(scores[order])]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: torchvision's algorithm (IoU in the boxes' dtype, compared with the threshold in
    float64, strict '>'), with NaN scores dropped and a stable order. O(N^2) memory: for tests."""
    order = _score_order(scores)
    b = boxes[order]
    above = box_iou(b, b).double() > iou_threshold
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= above[i]
    return order[keep]


def _by_score(keep: Tensor, scores: Tensor) -> Tensor:
    # stable: equal scores keep increasing index order (keep is sorted by index first)
    keep = keep.sort().values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, nms=nms) -> Tensor:
    """torchvision's per-class loop ("vanilla" batched NMS), with the given single-class ``nms``."""
    keep = [
        torch.where(idxs == c)[0][nms(boxes[idxs == c], scores[idxs == c], iou_threshold)]
        for c in idxs.unique()
    ]
    keep = torch.cat(keep) if keep else idxs.new_empty((0,), dtype=torch.int64)
    return _by_score(keep, scores)


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    topk_per_class: int = 1000,
    max_detections: int = 100,
    class_agnostic: bool = False,
    background_class: int | None = None,
    box_format: str = "xyxy",
    batched_nms=batched_nms,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """torchvision SSD/RetinaNet post-processing, written in plain torch, padded to fixed size; the
    class-aware NMS step is ``batched_nms`` (a plain-torch per-class loop by default)."""
    B, _, C = scores.shape
    out_boxes = boxes.new_zeros((B, max_detections, 4))
    out_scores = scores.new_zeros((B, max_detections))
    out_labels = torch.full((B, max_detections), -1, dtype=torch.int64, device=scores.device)
    out_index = torch.full((B, max_detections), -1, dtype=torch.int64, device=scores.device)
    num = torch.zeros(B, dtype=torch.int64, device=scores.device)
    for b in range(B):
        cand_boxes, cand_scores, cand_labels, cand_index = [], [], [], []
        for c in range(C):
            if c == background_class:
                continue
            s = scores[b, :, c]
            idx = torch.where(s > score_threshold)[0]
            order = torch.sort(s[idx], descending=True, stable=True).indices
            if topk_per_class > 0:
                order = order[:topk_per_class]
            idx = idx[order]
            bx = boxes[b, idx, c] if boxes.dim() == 4 else boxes[b, idx]
            cand_boxes.append(box_convert(bx, box_format, "xyxy"))
            cand_scores.append(s[idx])
            cand_labels.append(torch.full_like(idx, c))
            cand_index.append(idx)
        bx, sc, lb, ix = (torch.cat(t) for t in (cand_boxes, cand_scores, cand_labels, cand_index))
        groups = torch.zeros_like(lb) if class_agnostic else lb
        keep = batched_nms(bx, sc, groups, iou_threshold)[:max_detections]
        k = len(keep)
        num[b] = k
        out_boxes[b, :k], out_scores[b, :k], out_labels[b, :k], out_index[b, :k] = (
            bx[keep],
            sc[keep],
            lb[keep],
            ix[keep],
        )
    return num, out_boxes, out_scores, out_labels, out_index


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "linear",
    offset: int = 0,
) -> tuple[Tensor, Tensor]:
    """mmcv's soft-NMS procedure, step by step (NaN scores dropped first)."""
    valid = torch.where(~torch.isnan(scores))[0]
    b, s, ind = boxes[valid].clone(), scores[valid].clone(), valid.clone()
    n = len(ind)
    dets = []
    i = 0
    while i < n:
        best = i
        for pos in range(i + 1, n):
            if s[best] < s[pos]:
                best = pos
        for t in (b, s, ind):
            t[[i, best]] = t[[best, i]]
        dets.append(torch.cat([b[i], s[i : i + 1]]))
        pos = i + 1
        while pos < n:
            ovr = bbox_overlaps(b[i : i + 1], b[pos : pos + 1], "iou", False, -math.inf, offset)[0, 0]
            weight = 1.0
            if method == "naive" and ovr >= iou_threshold:
                weight = 0.0
            elif method == "linear" and ovr >= iou_threshold:
                weight = 1 - ovr
            elif method == "gaussian" and not torch.isnan(ovr):
                weight = torch.exp(-(ovr * ovr) / sigma)
            s[pos] = s[pos] * weight
            if s[pos] < min_score:
                for t in (b, s, ind):
                    t[pos] = t[n - 1]
                n -= 1
            else:
                pos += 1
        i += 1
    dets = torch.stack(dets) if dets else boxes.new_empty((0, 5))
    return dets, ind[:n]


def topk_per_level(
    scores: Tensor, k: int, score_threshold=None, level_sizes=None, stable: bool = True
) -> tuple[Tensor, Tensor]:
    """Per image and level, the ``k`` best scores ``> score_threshold`` (every non-NaN score for None),
    padded with (-inf, -1): torchvision's ``scores > thresh``, then the top k of the survivors.
    ``stable``: equal scores by increasing index (a stable sort); False: ``topk``, as torchvision."""
    b, n = scores.shape[:2]
    per_row = scores.shape[2] if scores.dim() == 3 else 1
    flat = scores.reshape(b, n * per_row)
    sizes = [n] if level_sizes is None else list(level_sizes)
    values = scores.new_full((b, len(sizes), k), -math.inf)
    indices = torch.full((b, len(sizes), k), -1, dtype=torch.int64, device=scores.device)
    for i in range(b):
        start = 0
        for level, size in enumerate(sizes):
            seg = flat[i, start : start + size * per_row]
            passing = seg == seg if score_threshold is None else seg > score_threshold
            keep = torch.where(passing)[0]
            if stable:
                order = seg[keep].sort(descending=True, stable=True).indices[:k]
            else:
                order = seg[keep].topk(min(k, keep.numel())).indices
            values[i, level, : order.numel()] = seg[keep[order]]
            indices[i, level, : order.numel()] = keep[order] + start
            start += size * per_row
    return values, indices


# ---- anchors -----------------------------------------------------------------------------------
def anchor_grid(
    base_anchors: list[Tensor],
    shifts_x: list[Tensor],
    shifts_y: list[Tensor],
    scales: list[float] = (),
    anchor_major: bool = False,
    shift_corners: bool = True,
) -> Tensor:
    """torchvision's / mmdet's grid formula: meshgrid the per-axis shifts, broadcast-add the base
    anchors, multiply by the per-axis scales (Python scalars, as torchvision's SSD does)."""
    levels = []
    for level, (base, sx, sy) in enumerate(zip(base_anchors, shifts_x, shifts_y, strict=True)):
        shift_y, shift_x = torch.meshgrid(sy, sx, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        zeros = torch.zeros_like(shift_x)
        if shift_corners:
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        else:
            shifts = torch.stack((shift_x, shift_y, zeros, zeros), dim=1)
        if anchor_major:
            anchors = (base.view(-1, 1, 4) + shifts.view(1, -1, 4)).reshape(-1, 4)
        else:
            anchors = (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)
        if scales:
            anchors[:, 0::2] *= scales[2 * level]
            anchors[:, 1::2] *= scales[2 * level + 1]
        levels.append(anchors)
    return torch.cat(levels)


# ---- box coding and matching (torchvision) ------------------------------------------------------
def box_encode_torchvision(gt: Tensor, anchors: Tensor, weights) -> Tensor:
    """torchvision's encode_boxes: deltas of matched ground truth against anchors."""
    wx, wy, ww, wh = (torch.tensor(w, dtype=gt.dtype) for w in weights)
    ex_w = anchors[:, 2] - anchors[:, 0]
    ex_h = anchors[:, 3] - anchors[:, 1]
    ex_x = anchors[:, 0] + 0.5 * ex_w
    ex_y = anchors[:, 1] + 0.5 * ex_h
    gw = gt[:, 2] - gt[:, 0]
    gh = gt[:, 3] - gt[:, 1]
    gx = gt[:, 0] + 0.5 * gw
    gy = gt[:, 1] + 0.5 * gh
    return torch.stack(
        [
            wx * (gx - ex_x) / ex_w,
            wy * (gy - ex_y) / ex_h,
            ww * torch.log(gw / ex_w),
            wh * torch.log(gh / ex_h),
        ],
        1,
    )


def box_decode_torchvision(
    rel_codes: Tensor, boxes: Tensor, weights, clip: float = math.log(1000.0 / 16)
) -> Tensor:
    """torchvision's BoxCoder.decode_single: [N, 4C] boxes from [N, 4C] deltas."""
    wx, wy, ww, wh = weights
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx = rel_codes[:, 0::4] / wx
    dy = rel_codes[:, 1::4] / wy
    dw = torch.clamp(rel_codes[:, 2::4] / ww, max=clip)
    dh = torch.clamp(rel_codes[:, 3::4] / wh, max=clip)
    pcx = dx * widths[:, None] + ctr_x[:, None]
    pcy = dy * heights[:, None] + ctr_y[:, None]
    pw = torch.exp(dw) * widths[:, None]
    ph = torch.exp(dh) * heights[:, None]
    cw = torch.tensor(0.5, dtype=pcx.dtype) * pw
    ch = torch.tensor(0.5, dtype=pcy.dtype) * ph
    return torch.stack((pcx - cw, pcy - ch, pcx + cw, pcy + ch), dim=2).flatten(1)


def match_torchvision(q: Tensor, high: float, low: float, allow_low: bool) -> Tensor:
    """torchvision's Matcher.__call__ on a quality matrix [M, N] (-1 below low, -2 between)."""
    matched_vals, matches = q.max(dim=0)
    all_matches = matches.clone() if allow_low else None
    below = matched_vals < low
    between = (matched_vals >= low) & (matched_vals < high)
    matches[below] = -1
    matches[between] = -2
    if allow_low:
        highest, _ = q.max(dim=1)
        gt_pred_pairs = torch.where(q == highest[:, None])
        matches[gt_pred_pairs[1]] = all_matches[gt_pred_pairs[1]]
    return matches


# ---- depthwise convolution ---------------------------------------------------------------------
def depthwise_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation, activation: str = "none"
) -> Tensor:
    """ATen's grouped convolution (one filter per channel) followed by the activation."""
    y = torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, x.size(1))
    return ACTIVATIONS[activation](y)


# ---- classification losses ---------------------------------------------------------------------
def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """torchvision's ``sigmoid_focal_loss``, op for op (the mean of an empty input is 0)."""
    p = torch.sigmoid(inputs)
    ce_loss = torch.nn.functional.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


# ---- detector post-processing (torchvision's algorithms, image by image) ------------------------
def ssd_postprocess(
    bbox_regression: Tensor,
    cls_logits: Tensor,
    anchors: Tensor,
    image_size,
    score_thresh=0.01,
    nms_thresh=0.45,
    topk_candidates=400,
    detections_per_img=200,
    batched_nms=batched_nms,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """torchvision ``SSD.postprocess_detections``: decode (weights 10, 10, 5, 5), clip, softmax, per
    class the top-k scores above the threshold, class-wise NMS, the best ``detections_per_img``."""
    boxes = torch.stack(
        [
            clip_boxes_to_image(box_decode_torchvision(d, anchors, (10.0, 10.0, 5.0, 5.0)), image_size)
            for d in bbox_regression
        ]
    )
    return multiclass_nms(
        boxes,
        cls_logits.softmax(-1),
        score_thresh,
        nms_thresh,
        topk_candidates,
        detections_per_img,
        background_class=0,
        batched_nms=batched_nms,
    )


def retinanet_postprocess(
    bbox_regression: Tensor,
    cls_logits: Tensor,
    anchors: Tensor,
    level_counts,
    image_size,
    score_thresh=0.05,
    nms_thresh=0.5,
    topk_candidates=1000,
    detections_per_img=300,
    batched_nms=batched_nms,
) -> list[dict[str, Tensor]]:
    """torchvision ``RetinaNet.postprocess_detections``: per level the top-k (anchor, class) scores above
    the threshold, decoded and clipped; class-wise NMS over all levels; the best ``detections_per_img``."""
    num_classes = cls_logits.shape[-1]
    out = []
    for deltas_b, logits_b in zip(bbox_regression, cls_logits, strict=True):
        boxes, scores, labels = [], [], []
        for deltas, logits, level_anchors in zip(
            deltas_b.split(level_counts),
            logits_b.split(level_counts),
            anchors.split(level_counts),
            strict=True,
        ):
            s = torch.sigmoid(logits).flatten()
            keep = torch.where(s > score_thresh)[0]
            s = s[keep]
            s, order = s.topk(min(topk_candidates, keep.numel()))
            idx = keep[order]
            anchor_idx = torch.div(idx, num_classes, rounding_mode="floor")
            b = box_decode_torchvision(deltas[anchor_idx], level_anchors[anchor_idx], (1.0, 1.0, 1.0, 1.0))
            boxes.append(clip_boxes_to_image(b, image_size))
            scores.append(s)
            labels.append(idx % num_classes)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return out


# ---- masks -------------------------------------------------------------------------------------
def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, img_shape: tuple[int, int], padding: int = 1
) -> Tensor:
    """torchvision's (models/detection/roi_heads.py): pad, expand the boxes, then mask by mask resize
    into a zeroed image and stack. Boxes must lie where torchvision's slicing works (not beyond the
    image's right or bottom edge)."""
    m = masks.shape[-1]
    scale = float(m + 2 * padding) / m
    padded = torch.nn.functional.pad(masks, (padding,) * 4)
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    expanded = torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], 1).to(torch.int64)
    im_h, im_w = img_shape
    pasted = []
    for mask, box in zip(padded, expanded.tolist(), strict=True):
        w, h = max(box[2] - box[0] + 1, 1), max(box[3] - box[1] + 1, 1)
        resized = torch.nn.functional.interpolate(
            mask[None], size=(h, w), mode="bilinear", align_corners=False
        )
        image = torch.zeros((im_h, im_w), dtype=masks.dtype, device=masks.device)
        x0, x1 = max(box[0], 0), min(box[2] + 1, im_w)
        y0, y1 = max(box[1], 0), min(box[3] + 1, im_h)
        image[y0:y1, x0:x1] = resized[0, 0, y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]]
        pasted.append(image)
    if not pasted:
        return masks.new_empty((0, 1, im_h, im_w))
    return torch.stack(pasted)[:, None]


def paste_masks_in_image_detectron2(
    masks: Tensor, boxes: Tensor, image_shape: tuple[int, int], threshold: float = 0.5
) -> Tensor:
    """detectron2's (layers/mask_ops.py) CPU path: mask by mask, grid_sample over the box's region."""
    img_h, img_w = image_shape
    out = torch.zeros(len(masks), img_h, img_w, dtype=torch.bool if threshold >= 0 else torch.uint8)
    for i in range(len(masks)):
        box = boxes[i : i + 1]
        x0_int, y0_int = torch.clamp(box.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
        x1_int = torch.clamp(box[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32)
        y1_int = torch.clamp(box[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32)
        x0, y0, x1, y1 = torch.split(box, 1, dim=1)
        img_y = (torch.arange(y0_int, y1_int, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
        img_x = (torch.arange(x0_int, x1_int, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
        gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
        gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
        grid = torch.stack([gx, gy], dim=3).to(masks.dtype)
        value = torch.nn.functional.grid_sample(masks[i : i + 1, None], grid, align_corners=False)[0, 0]
        value = value >= threshold if threshold >= 0 else (value * 255).to(torch.uint8)
        out[i, y0_int:y1_int, x0_int:x1_int] = value
    return out


def masks_to_boxes(masks: Tensor) -> Tensor:
    """torchvision.ops.masks_to_boxes (0.29)."""
    _, h, w = masks.shape
    rows, cols = masks.bool().any(2), masks.bool().any(1)
    y1 = rows.float().argmax(1)
    x1 = cols.float().argmax(1)
    y2 = (h - 1) - rows.float().flip(1).argmax(1)
    x2 = (w - 1) - cols.float().flip(1).argmax(1)
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    boxes[~rows.any(1)] = 0
    return boxes


# ---- rotated RoIAlign ------------------------------------------------------------------------------
def roi_align_rotated(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int
) -> Tensor:
    """ROIAlignRotated written with F.grid_sample (the eager formulation): detectron2's geometry, a fixed
    ``sampling_ratio`` grid per bin rotated about the shifted centre; border padding (RoIAlign reads
    the border pixel for samples in [-1, 0] and [size - 1, size]) times a mask zeroing samples beyond
    [-1, size]; image by image, so the input is expanded (a view) rather than gathered per RoI."""
    ph, pw = output_size
    g = sampling_ratio
    _, c, h, w = input.shape
    out = input.new_zeros(rois.shape[0], c, ph, pw)
    for b in range(input.shape[0]):
        pick = (rois[:, 0] == b).nonzero()[:, 0]
        if not len(pick):
            continue
        r = rois[pick]
        cx, cy = r[:, 1] * spatial_scale - 0.5, r[:, 2] * spatial_scale - 0.5
        rw, rh = r[:, 3] * spatial_scale, r[:, 4] * spatial_scale
        theta = r[:, 5] * math.pi / 180.0
        cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
        steps_y = (torch.arange(ph * g, dtype=input.dtype) + 0.5) / (ph * g)
        steps_x = (torch.arange(pw * g, dtype=input.dtype) + 0.5) / (pw * g)
        yy = (-rh / 2)[:, None] + steps_y[None] * rh[:, None]
        xx = (-rw / 2)[:, None] + steps_x[None] * rw[:, None]
        y = yy[:, :, None] * cos - xx[:, None, :] * sin + cy[:, None, None]
        x = yy[:, :, None] * sin + xx[:, None, :] * cos + cx[:, None, None]
        grid = torch.stack([(x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1], -1)
        inside = ((y >= -1) & (y <= h) & (x >= -1) & (x <= w)).to(input.dtype)[:, None]
        image = input[b : b + 1].expand(len(pick), -1, -1, -1)
        sampled = (
            torch.nn.functional.grid_sample(image, grid, "bilinear", "border", align_corners=False) * inside
        )
        out[pick] = sampled.view(len(pick), c, ph, g, pw, g).mean((3, 5))
    return out
