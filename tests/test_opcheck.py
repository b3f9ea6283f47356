"""torch.library.opcheck on every torch.ops.pydet operator (schema, fake kernel, autograd registration,
AOT dispatch with dynamic shapes), plus torch.compile and torch.export of code that uses them."""

import pytest
import torch
from helpers import random_boxes

import pydet.ops as ops

pd = torch.ops.pydet


def sample_calls(device):
    """(op, args) pairs covering every operator, with gradients requested where they exist."""
    b = random_boxes(6, device=device, seed=1)
    c = random_boxes(5, device=device, seed=2)
    rotated = torch.cat([b, b[:, :1] * 3.6], 1)  # cxcywhr: centre, size, degrees

    def g(t):
        return t.clone().requires_grad_()

    calls = [
        (pd.box_area, (g(b),)),
        (pd.box_area, ((b * 100).to(torch.int8),)),
        (pd.box_area, (g(b), "cxcywh")),
        (pd.box_convert, (g(b), "xyxy", "cxcywh")),
        (pd.box_convert, (g(b), "xywh", "xywh")),
        (pd.box_convert, ((b * 100).int(), "xyxy", "cxcywh")),
        (pd.box_convert, (g(rotated), "cxcywhr", "xyxyxyxy")),
        (pd.box_convert, (g(torch.cat([b, b], 1)), "xyxyxyxy", "cxcywhr")),
        (pd.clip_boxes_to_image, (g(b), [40, 60])),
        (pd.remove_small_boxes, (b, 20.0)),
        (pd._box_area_backward, (torch.ones(6, device=device), b, "xywh")),
        (pd._box_convert_backward, (torch.ones(6, 4, device=device), b, "cxcywh", "xyxy")),
        (pd._box_convert_backward, (torch.ones(6, 8, device=device), rotated, "xywhr", "xyxyxyxy")),
        (pd._clip_boxes_to_image_backward, (torch.ones(6, 4, device=device), b, [40, 60])),
        (pd.box_iou, (g(b), g(c))),
        (pd.box_iou, (g(b), g(c), "xywh")),
        (pd.box_iou, ((b * 100).int(), (c * 100).long(), "cxcywh")),
        (pd.box_iou, (rotated, rotated.flip(0), "xywhr")),
        (pd.generalized_box_iou, (g(b), g(c))),
        (pd.distance_box_iou, (g(b), g(c), 1e-7)),
        (pd.complete_box_iou, (g(b), g(c), 1e-7)),
        (pd.complete_box_iou, ((b * 100).long(), (c * 100).int(), 1e-7)),  # integer boxes (torchvision)
        (pd.generalized_box_iou_aligned, ((b * 100).short(), (b.flip(0) * 100).long())),
        (pd.distance_box_iou, (g(b.expand(2, -1, -1)), g(c[None]), 1e-7)),  # batch dims broadcast
        (pd.box_iou_aligned, (g(b), g(b.flip(0)))),
        (pd.generalized_box_iou_aligned, (g(b), g(b.flip(0)))),
        (pd.distance_box_iou_aligned, (g(b), g(b.flip(0)), 1e-7)),
        (pd.complete_box_iou_aligned, (g(b), g(b.flip(0)), 1e-7)),
        (pd.bbox_overlaps, (g(b.reshape(2, 3, 4)), g(b.reshape(2, 3, 4).flip(1)), "giou", False, 1e-6, 1)),
        (pd.bbox_overlaps, (g(b), g(b.flip(0)), "iof", True, 1e-6, 0)),
        (
            pd._pairwise_box_metric_backward,
            (torch.ones(6, 5, device=device), b, c, "ciou", 1e-7, 0.0, "xyxy"),
        ),
        (
            pd._pairwise_box_metric_backward,
            (torch.ones(6, 5, device=device), b, c, "iou", 0.0, 0.0, "cxcywh"),
        ),
        (
            pd._aligned_box_metric_backward,
            (torch.ones(6, device=device), b, b.flip(0), "mm_giou", 1e-6, 1.0, 1.0),
        ),
    ]
    scores = torch.rand(6, generator=torch.Generator().manual_seed(0)).to(device)
    cls = torch.tensor([0, 1, 0, 1, 2, 0], device=device)
    det_boxes = torch.cat([b, b]).reshape(2, 6, 4)
    det_scores = torch.rand(2, 6, 3, generator=torch.Generator().manual_seed(1)).to(device)
    rot = torch.cat([b[:, :2], b[:, 2:] - b[:, :2], torch.linspace(-60, 60, 6, device=device)[:, None]], 1)
    calls += [
        (pd.nms, (b, scores, 0.3)),
        (pd.batched_nms, (b, scores, cls, 0.3)),
        (pd.multiclass_nms, (det_boxes, det_scores, 0.1, 0.5, 4, 5, False, None, "xyxy")),
        (
            pd.multiclass_nms,
            (det_boxes[:, :, None].expand(2, 6, 3, 4), det_scores, 0.1, 0.5, -1, 3, True, 0, "cxcywh"),
        ),
        (pd.soft_nms, (b, scores, 0.3, 0.5, 0.001, "gaussian", 0)),
        (pd.nms_rotated, (rot, scores, 0.3)),
        (pd.batched_nms_rotated, (rot, scores, cls, 0.3)),
        (pd.box_iou_rotated, (rot, rot[:3])),
        (
            pd.multiclass_nms,
            (
                det_boxes,
                det_scores[..., 0],
                0.1,
                0.5,
                2,
                5,
                False,
                1,
                "xyxy",
                torch.remainder(cls, 3).expand(2, 6) - 1,
                3,
            ),
        ),
        (pd.topk_per_level, (det_scores, 4, 0.3, [4, 2])),
        (pd.topk_per_level, (det_scores[..., 0].double(), 8, None, None)),
    ]
    base = b[:3] - b[:3].mean()
    shifts = torch.arange(5.0, device=device)
    calls += [
        (pd.anchor_grid, ([base, base[:2]], [shifts, shifts[:2]], [shifts[:3], shifts], [], False, True)),
        (
            pd.anchor_grid,
            ([base.double()], [shifts.double()], [shifts.double()], [300.0, 200.0], True, False),
        ),
    ]
    ref = b + torch.tensor([0, 0, 1.0, 1.0], device=device)
    tgt = ref.flip(0)
    deltas = torch.randn(6, 8, generator=torch.Generator().manual_seed(3)).to(device)
    inf = float("inf")
    calls += [
        (pd.box_encode, (ref, tgt, "torchvision", [10.0, 10.0, 5.0, 5.0], [0.0] * 4, None)),
        (pd.box_encode, (ref, tgt[None].expand(2, 6, 4), "mmdet", [0.1, 0.1, 0.2, 0.2], [0.0] * 4, None)),
        (
            pd.box_encode,
            (
                ref,
                tgt[:4],
                "ssd",
                [0.1, 0.1, 0.2, 0.2],
                [0.0] * 4,
                torch.tensor([0, -1, 3, 2, 1, 0], device=device),
            ),
        ),
        (
            pd.box_decode,
            (ref, g(deltas), "torchvision", [10.0, 10.0, 5.0, 5.0], [0.0] * 4, -inf, 4.1, inf, None),
        ),
        (
            pd.box_decode,
            (
                ref,
                g(deltas[None].expand(2, 6, 8)),
                "mmdet",
                [0.1, 0.1, 0.2, 0.2],
                [0.0] * 4,
                -4.1,
                4.1,
                16.0,
                [50.0, 60.0],
            ),
        ),
        (
            pd.box_decode,
            (
                ref,
                g(deltas[None].expand(2, 6, 8)),
                "torchvision",
                [1.0] * 4,
                [0.0] * 4,
                -inf,
                4.1,
                inf,
                [50.0, 60.0],
                torch.tensor([[5, -1, 0, 5], [2, 2, 3, 1]], device=device),
            ),
        ),
        (
            pd._box_decode_backward,
            (
                torch.ones(3, 8, device=device),
                ref,
                deltas,
                "mmdet",
                [0.1, 0.1, 0.2, 0.2],
                [0.0] * 4,
                -inf,
                inf,
                inf,
                None,
                torch.tensor([4, -1, 4], device=device),
            ),
        ),
        (
            pd._box_decode_backward,
            (
                torch.ones(6, 8, device=device),
                ref,
                deltas,
                "ssd",
                [0.1, 0.1, 0.2, 0.2],
                [0.0] * 4,
                -inf,
                inf,
                inf,
                None,
            ),
        ),
        (pd.box_overlap_max, (c, b, None, "iou", False, 1e-6, None)),
        (
            pd.box_overlap_max,
            (
                torch.stack([c, c]),
                b,
                torch.tensor([5, 2], device=device),
                "mm_iof",
                True,
                1e-6,
                torch.tensor([True, False] * 3, device=device),
            ),
        ),
        (pd.box_overlap_ties, (c, b, pd.box_overlap_max(c, b)[2], 0.0, None, "iou", 1e-6, None)),
        (
            pd.box_overlap_ties,
            (
                torch.stack([c, c]),
                b,
                pd.box_overlap_max(torch.stack([c, c]), b, None, "mm_iou")[2],
                -inf,
                None,
                "mm_iou",
                1e-6,
                None,
            ),
        ),
    ]
    x = torch.randn(2, 3, 7, 6, device=device, dtype=torch.float64)
    w = torch.randn(3, 1, 3, 3, device=device, dtype=torch.float64)
    bias = torch.randn(3, device=device, dtype=torch.float64)
    calls += [
        (pd.depthwise_conv2d, (g(x), g(w), g(bias), [1, 1], [1, 1], [1, 1], "relu6")),
        (pd.depthwise_conv2d, (g(x), g(w), None, [2, 1], [0, 2], [2, 1], "silu")),
        (pd.depthwise_conv2d, (g(x.float()), g(w.float()), None, [2, 2], [1, 1], [1, 1], "hardswish")),
        (
            pd._depthwise_conv2d_backward,
            (
                torch.ones(2, 3, 7, 6, device=device, dtype=torch.float64),
                x,
                w,
                bias,
                [1, 1],
                [1, 1],
                [1, 1],
                "relu",
            ),
        ),
    ]
    feat = torch.randn(2, 3, 9, 11, device=device, dtype=torch.float64)
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0], [0.0]], device=device), b[:4].double() / 3], 1)
    levels = torch.tensor([1, 0, 1, 1], device=device)
    calls += [
        (pd.roi_align, (g(feat), rois, 0.5, 3, 2, -1, False)),
        (pd.roi_align, (g(feat.float()), rois.float(), 1.0, 2, 4, 2, True)),
        (pd.roi_align, (g(feat.contiguous(memory_format=torch.channels_last)), rois, 0.25, 5, 5, 0, True)),
        (
            pd._roi_align_backward,
            (torch.ones(4, 3, 3, 2, device=device).double(), rois, 0.5, 3, 2, 2, 3, 9, 11, -1, False),
        ),
        (
            pd.multi_scale_roi_align,
            ([g(feat), g(feat[:, :, ::2, ::2].contiguous())], rois, levels, [0.5, 0.25], 3, 2, 2, False),
        ),
        (
            pd._multi_scale_roi_align_backward,
            (
                torch.ones(4, 3, 2, 2, device=device).double(),
                rois,
                levels,
                [0.5, 0.25],
                2,
                2,
                [9, 11, 5, 6],
                2,
                3,
                -1,
                True,
            ),
        ),
    ]
    rotated = torch.cat(
        [
            rois[:, :3],
            rois[:, 3:5].abs() + 1,
            torch.tensor([[30.0], [-45.0], [0.0], [90.0]], device=device, dtype=torch.float64),
        ],
        1,
    )
    calls += [
        (pd.roi_align_rotated, (g(feat), rotated, 0.5, 3, 2, -1)),
        (pd.roi_align_rotated, (g(feat.float()), rotated.float(), 1.0, 2, 4, 2)),
        (
            pd._roi_align_rotated_backward,
            (torch.ones(4, 3, 3, 2, device=device).double(), rotated, 0.5, 3, 2, 2, 3, 9, 11, 2),
        ),
    ]
    masks = torch.rand(4, 1, 5, 5, device=device, dtype=torch.float64)
    calls += [
        (pd.paste_masks_in_image, (masks, b[:4].double() / 4, 20, 30, 1)),
        (pd.paste_masks_in_image, (masks.float(), b[:4] / 4, 20, 30, 0)),
        (pd.paste_masks_in_image_detectron2, (masks[:, 0], b[:4].double() / 4, 20, 30, 0.5)),
        (pd.paste_masks_in_image_detectron2, (masks[:, 0].float() > 0.5, b[:4] / 4, 20, 30, -1.0)),
        (pd.masks_to_boxes, (masks[:, 0] > 0.7,)),
        (pd.masks_to_boxes, (masks[:, 0].float(),)),
    ]
    ps_feat = torch.randn(2, 12, 9, 11, device=device, dtype=torch.float64)
    index = torch.zeros(4, 3, 3, 2, device=device, dtype=torch.int32)
    mapping = torch.zeros(4, 2, 3, 2, device=device, dtype=torch.int32)
    calls += [
        (pd.roi_pool, (g(feat), rois, 0.5, 3, 2)),
        (
            pd.roi_pool,
            (g(feat.float().contiguous(memory_format=torch.channels_last)), rois.float(), 1.0, 2, 4),
        ),
        (
            pd._roi_pool_backward,
            (torch.ones(4, 3, 3, 2, device=device).double(), rois, index, 0.5, 3, 2, 2, 3, 9, 11),
        ),
        (pd.ps_roi_pool, (g(ps_feat), rois, 0.5, 3, 2)),
        (
            pd._ps_roi_pool_backward,
            (torch.ones(4, 2, 3, 2, device=device).double(), rois, mapping, 0.5, 3, 2, 2, 12, 9, 11),
        ),
        (pd.ps_roi_align, (g(ps_feat), rois, 0.5, 3, 2, -1)),
        (pd.ps_roi_align, (g(ps_feat.float()), rois.float(), 1.0, 2, 3, 2)),
        (
            pd._ps_roi_align_backward,
            (torch.ones(4, 2, 3, 2, device=device).double(), rois, mapping, 0.5, 3, 2, 2, 2, 12, 9, 11),
        ),
    ]
    d_in = torch.randn(2, 4, 6, 7, device=device, dtype=torch.float64)
    d_weight = torch.randn(6, 2, 3, 3, device=device, dtype=torch.float64)  # 2 weight groups
    d_offset = torch.randn(2, 36, 6, 7, device=device, dtype=torch.float64) * 1.5  # 2 offset groups
    d_mask = torch.rand(2, 18, 6, 7, device=device, dtype=torch.float64)
    d_bias = torch.randn(6, device=device, dtype=torch.float64)
    conv = (1, 1, 1, 1, 1, 1, 2, 2)  # stride, padding, dilation (h, w), groups, offset groups
    calls += [
        (pd.deform_conv2d, (g(d_in), g(d_weight), g(d_offset), g(d_mask), g(d_bias), *conv, True)),
        (
            pd.deform_conv2d,
            (
                g(d_in.float().contiguous(memory_format=torch.channels_last)),
                g(d_weight[:, :, :2].float()),
                g(d_offset[:, :24, :3, :5].float()),
                torch.zeros(0, device=device),
                g(d_bias.float()),
                *(2, 1, 0, 1, 1, 2, 2, 2),
                False,
            ),
        ),
        (
            pd._deform_conv2d_backward,
            (
                torch.ones(2, 6, 6, 7, device=device).double(),
                d_in,
                d_weight,
                d_offset,
                d_mask,
                d_bias,
                *conv,
                True,
            ),
        ),
    ]
    logits = torch.randn(4, 5, device=device, dtype=torch.float64)
    labels = (torch.rand(4, 5, generator=torch.Generator().manual_seed(4)) < 0.3).double().to(device)
    calls += [
        (pd.sigmoid_focal_loss, (g(logits), labels, 0.25, 2.0, "none")),
        (pd.sigmoid_focal_loss, (g(logits), g(labels), -1.0, 1.5, "mean")),
        (pd.sigmoid_focal_loss, (g(logits.float()), labels.float(), 0.5, 0.0, "sum")),
        (
            pd._sigmoid_focal_loss_backward,
            (torch.ones(4, 5, device=device), logits, labels, 0.25, 2.0, "none", True),
        ),
        (
            pd._sigmoid_focal_loss_backward,
            (torch.ones((), device=device), logits, labels, 0.25, 2.0, "sum", False),
        ),
    ]
    for name in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"):
        for reduction in ("none", "mean", "sum"):
            calls.append((getattr(pd, name), (g(b), g(b.flip(0)), reduction, 1e-7)))
    return calls


def _id(call):
    op, args = call
    return op.__name__ + "-" + "-".join(str(a) for a in args if isinstance(a, str))


CALLS_CPU = sample_calls("cpu")


def test_every_operator_is_covered():
    covered = {op.__name__.split(".")[0] for op, _ in CALLS_CPU}
    declared = {
        name
        for name in dir(torch.ops.pydet)
        if isinstance(getattr(torch.ops.pydet, name), torch._ops.OpOverloadPacket)
    }
    assert declared <= covered, declared - covered


@pytest.mark.parametrize("index", range(len(CALLS_CPU)), ids=[_id(c) for c in CALLS_CPU])
def test_opcheck(index, device):
    op, args = sample_calls(device)[index]
    torch.library.opcheck(op, args)


def detector_postprocess(pred_boxes, gt_boxes, image_size: tuple[int, int]):
    """A small function mixing the box ops, to compile and export."""
    boxes = ops.clip_boxes_to_image(ops.box_convert(pred_boxes, "cxcywh", "xyxy"), image_size)
    iou = ops.box_iou(boxes, gt_boxes)
    best = iou.max(dim=1).values
    loss = ops.generalized_box_iou_loss(boxes, gt_boxes[:1], "mean")
    overlaps = ops.bbox_overlaps(boxes[None], gt_boxes[None], "giou")
    return best, loss, overlaps, ops.box_area(boxes)


def test_compile_fullgraph_dynamic(device):
    torch._dynamo.reset()
    compiled = torch.compile(detector_postprocess, fullgraph=True, dynamic=True)
    for n in (7, 13, 29):  # several sizes through one dynamic graph
        pred = random_boxes(n, device=device, seed=n).requires_grad_()
        gt = random_boxes(4, device=device, seed=99)
        eager = detector_postprocess(pred, gt, (60, 80))
        got = compiled(pred, gt, (60, 80))
        for e, c in zip(eager, got, strict=True):
            torch.testing.assert_close(c, e, equal_nan=True)
        got[1].backward()
        assert pred.grad is not None and torch.isfinite(pred.grad).all()


class Postprocess(torch.nn.Module):
    def forward(self, pred_boxes, gt_boxes):
        return detector_postprocess(pred_boxes, gt_boxes, (60, 80))


def test_export_with_dynamic_batch(device):
    pred, gt = random_boxes(9, device=device), random_boxes(4, device=device, seed=3)
    n = torch.export.Dim("n", min=2)
    exported = torch.export.export(Postprocess(), (pred, gt), dynamic_shapes=({0: n}, None))
    ops_in_graph = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "pydet.box_iou.default" in ops_in_graph
    other = random_boxes(21, device=device, seed=5)
    for e, c in zip(Postprocess()(other, gt), exported.module()(other, gt), strict=True):
        torch.testing.assert_close(c, e, equal_nan=True)


# ---- every operator under torch.compile(fullgraph=True, dynamic=True) and torch.export ------------
class _Call(torch.nn.Module):
    """``op(*args)`` with the tensors of ``args`` (also inside lists) as the module's inputs and the
    rest as constants, so that torch.export sees each operator call with its real arguments."""

    def __init__(self, op, args):
        super().__init__()
        self.op = op
        self.leaves, self.spec = torch.utils._pytree.tree_flatten(args)
        self.tensor_at = [k for k, leaf in enumerate(self.leaves) if isinstance(leaf, torch.Tensor)]

    def tensors(self):
        return [self.leaves[k] for k in self.tensor_at]

    def forward(self, *tensors):
        leaves = list(self.leaves)
        for k, t in zip(self.tensor_at, tensors, strict=True):
            leaves[k] = t
        return self.op(*torch.utils._pytree.tree_unflatten(leaves, self.spec))


def _detached(args):
    return torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.detach(), args)


@pytest.mark.parametrize("index", range(len(CALLS_CPU)), ids=[_id(c) for c in CALLS_CPU])
def test_compile_dynamic_and_export(index, device):
    """Every call of sample_calls: torch.compile(fullgraph=True, dynamic=True) through AOT autograd,
    and torch.export, give the eager results (data-dependent output sizes included)."""
    op, args = sample_calls(device)[index]
    call = _Call(op, _detached(args))
    expected = call(*call.tensors())
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(call, fullgraph=True, dynamic=True, backend="aot_eager")(*call.tensors())
    exported = torch.export.export(call, tuple(call.tensors())).module()(*call.tensors())
    for got in (compiled, exported):
        for g, e in zip(
            torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(expected), strict=True
        ):
            torch.testing.assert_close(g, e, equal_nan=True, rtol=0, atol=0)
