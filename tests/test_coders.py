"""Box coders: every convention against its library's eager formula (transcribed below as the float64
reference and, in float32, the library's own operation order), round trips, batching, class-specific
deltas, gathered targets, gradients, devices."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from helpers import random_boxes
from hypothesis import given
from hypothesis import strategies as st

from pydet.benchmarks.reference import box_decode_torchvision as tv_decode
from pydet.benchmarks.reference import box_encode_torchvision as tv_encode
from pydet.coders import Box2BoxTransform, BoxCoder, DeltaXYWHBBoxCoder, SSDBoxCoder
from pydet.ops import box_decode, box_encode

CLIP = math.log(1000.0 / 16)


# ---- the libraries' formulas (eager PyTorch, same operation order) --------------------------------
def mm_encode(proposals, gt, means, stds):
    px = (proposals[..., 0] + proposals[..., 2]) * 0.5
    py = (proposals[..., 1] + proposals[..., 3]) * 0.5
    pw = proposals[..., 2] - proposals[..., 0]
    ph = proposals[..., 3] - proposals[..., 1]
    gx = (gt[..., 0] + gt[..., 2]) * 0.5
    gy = (gt[..., 1] + gt[..., 3]) * 0.5
    gw = gt[..., 2] - gt[..., 0]
    gh = gt[..., 3] - gt[..., 1]
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return deltas.sub_(deltas.new_tensor(means)).div_(deltas.new_tensor(stds))


def mm_decode(
    rois, deltas, means, stds, max_shape=None, wh_ratio_clip=16 / 1000, add_ctr_clamp=False, ctr_clamp=32
):
    num_bboxes, num_classes = deltas.size(0), deltas.size(1) // 4
    deltas = deltas.reshape(-1, 4)
    denorm = deltas * deltas.new_tensor(stds).view(1, -1) + deltas.new_tensor(means).view(1, -1)
    dxy, dwh = denorm[:, :2], denorm[:, 2:]
    rois_ = rois.repeat(1, num_classes).reshape(-1, 4)
    pxy = (rois_[:, :2] + rois_[:, 2:]) * 0.5
    pwh = rois_[:, 2:] - rois_[:, :2]
    dxy_wh = pwh * dxy
    max_ratio = np.abs(np.log(wh_ratio_clip))
    if add_ctr_clamp:
        dxy_wh = torch.clamp(dxy_wh, max=ctr_clamp, min=-ctr_clamp)
        dwh = torch.clamp(dwh, max=max_ratio)
    else:
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    bboxes = torch.cat([gxy - (gwh * 0.5), gxy + (gwh * 0.5)], dim=-1)
    if max_shape is not None:
        bboxes[..., 0::2].clamp_(min=0, max=max_shape[1])
        bboxes[..., 1::2].clamp_(min=0, max=max_shape[0])
    return bboxes.reshape(num_bboxes, -1)


def ssd_encode(dboxes, loc, scale_xy=0.1, scale_wh=0.2):  # super-gradients SSDLoss._norm_relative_bbox
    gxy = ((loc[..., :2] - dboxes[..., :2]) / dboxes[..., 2:]) / scale_xy
    gwh = (loc[..., 2:] / dboxes[..., 2:]).log() / scale_wh
    return torch.cat((gxy, gwh), dim=-1)


def ssd_decode(dboxes, bboxes_in, scale_xy=0.1, scale_wh=0.2):  # super-gradients SSDHead (before * img_size)
    bboxes_in = bboxes_in * torch.tensor([scale_xy, scale_xy, scale_wh, scale_wh], dtype=bboxes_in.dtype)
    xy = bboxes_in[..., :2] * dboxes[..., 2:] + dboxes[..., :2]
    wh = bboxes_in[..., 2:].exp() * dboxes[..., 2:]
    return torch.cat((xy, wh), dim=-1)


def boxes_pair(n, seed, dtype=torch.float64):
    return random_boxes(n, seed=seed, dtype=dtype) + torch.tensor([0, 0, 1.0, 1.0], dtype=dtype), (
        random_boxes(n, seed=seed + 1, dtype=dtype) + torch.tensor([0, 0, 1.0, 1.0], dtype=dtype)
    )


def cxcywh(b):
    return torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)


# Only the outputs that go through exp/log may differ, by the last ulp of exp/log (both within 1 ulp
# of the exact value), carried through the following arithmetic (x1 = cx - w/2 can cancel, so the
# error is relative to the box's magnitude); the centre deltas are compared bit for bit. Outputs
# through log are compared with the float64 formula: torch's own float32 log of a strided column was
# seen 1.3e-4 off (relative) in about one process in ten here, so the float32 formula is no oracle.
def assert_coded(got, want):
    eps = torch.finfo(got.dtype).eps
    finite = want[torch.isfinite(want)]
    scale = finite.abs().max().item() if finite.numel() else 1.0
    torch.testing.assert_close(
        got.to(want.dtype), want, atol=16 * eps * scale, rtol=16 * eps, equal_nan=True, check_dtype=False
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (0.5, 2.0, 3.0, 0.25)])
def test_torchvision_encode(dtype, weights):
    anchors, gt = boxes_pair(3000, 1, dtype)
    got = BoxCoder(weights).encode_single(gt, anchors)
    want = tv_encode(gt, anchors, weights)
    torch.testing.assert_close(got[:, :2], want[:, :2], atol=0, rtol=0)
    exact = tv_encode(gt.double(), anchors.double(), weights)  # through log: see assert_coded
    torch.testing.assert_close(
        got[:, 2:].double(), exact[:, 2:], atol=4 * torch.finfo(dtype).eps * weights[2], rtol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("classes", [1, 3])
def test_torchvision_decode(dtype, classes):
    anchors, _ = boxes_pair(2000, 3, dtype)
    g = torch.Generator().manual_seed(4)
    codes = (torch.randn(2000, 4 * classes, generator=g, dtype=torch.float64) * 3).to(dtype)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    got = coder.decode_single(codes, anchors)
    assert_coded(got, tv_decode(codes, anchors, coder.weights))
    # the list API reshapes to [N, C, 4]
    assert coder.decode(codes, [anchors[:1500], anchors[1500:]]).shape == (2000, classes, 4)
    parts = coder.encode([anchors[:5], anchors[5:9]], [anchors[:5], anchors[5:9]])
    assert [p.shape for p in parts] == [(5, 4), (4, 4)] and all(p.abs().max() == 0 for p in parts)


def test_torchvision_clamps_from_above_only():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    codes = torch.tensor([[0.0, 0.0, 100.0, -100.0]])
    out = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(codes, anchors)
    torch.testing.assert_close(out, tv_decode(codes, anchors, (1, 1, 1, 1)))
    assert out[0, 2] - out[0, 0] == pytest.approx(10 * 1000 / 16, rel=1e-6)  # clamped at log(1000/16)
    assert out[0, 3] - out[0, 1] < 1e-30  # exp(-100): not clamped from below


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torchvision_decode_clipped_in_the_same_pass(dtype):
    """max_shape with the torchvision coding: clip_boxes_to_image of the decoded boxes, bit for bit,
    and its gradient; the SSD coding (cx, cy, w, h) has no corners to clip."""
    from pydet.ops import clip_boxes_to_image

    anchors, _ = boxes_pair(2000, 5, dtype)
    codes = (torch.randn(2000, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 3).to(
        dtype
    )
    codes[:5, 0] = math.nan
    codes = codes.requires_grad_()
    w, clip = (10.0, 10.0, 5.0, 5.0), (-math.inf, CLIP)
    fused = box_decode(anchors, codes, "torchvision", w, wh_clip=clip, max_shape=(300, 500))
    decoded = box_decode(anchors, codes, "torchvision", w, wh_clip=clip)
    plain = clip_boxes_to_image(decoded.view(2000, 2, 4), (300, 500)).view(2000, 8)
    torch.testing.assert_close(fused, plain, atol=0, rtol=0, equal_nan=True)
    assert fused[:, 0::2].nan_to_num().max() <= 500 and fused[:, 1::2].max() <= 300
    g = torch.randn_like(fused)
    torch.testing.assert_close(
        torch.autograd.grad(fused, codes, g)[0], torch.autograd.grad(plain, codes, g)[0], equal_nan=True
    )
    with pytest.raises(ValueError, match="the 'ssd' coding decodes"):
        box_decode(cxcywh(anchors), codes, "ssd", max_shape=(300, 500))


def test_detectron2_matches_torchvision_and_decodes_in_float32():
    anchors, gt = boxes_pair(500, 5)
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(
        t.get_deltas(anchors, gt), BoxCoder(t.weights).encode_single(gt, anchors), atol=0, rtol=0
    )
    out = t.apply_deltas(t.get_deltas(anchors, gt), anchors)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, gt.float(), atol=1e-3, rtol=1e-5)
    with pytest.raises(TypeError):
        t.get_deltas([1, 2, 3, 4], gt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mmdet_encode(dtype):
    anchors, gt = boxes_pair(3000, 7, dtype)
    means, stds = (0.1, -0.2, 0.0, 0.05), (0.1, 0.1, 0.2, 0.2)
    got = DeltaXYWHBBoxCoder(means, stds).encode(anchors, gt)
    assert got.dtype == torch.float32  # mmdet's .float()
    want = mm_encode(anchors.float(), gt.float(), means, stds)
    torch.testing.assert_close(got[:, :2], want[:, :2], atol=0, rtol=0)
    exact = mm_encode(anchors.float().double(), gt.float().double(), means, stds)  # see assert_coded
    torch.testing.assert_close(got[:, 2:].double(), exact[:, 2:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("add_ctr_clamp", [False, True])
@pytest.mark.parametrize("max_shape", [None, (300, 500)])
@pytest.mark.parametrize("classes", [1, 2])
def test_mmdet_decode(dtype, add_ctr_clamp, max_shape, classes):
    anchors, _ = boxes_pair(1000, 9, dtype)
    g = torch.Generator().manual_seed(10)
    deltas = (torch.randn(1000, 4 * classes, generator=g, dtype=torch.float64) * 4).to(dtype)
    means, stds = (0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.2, 0.2)
    coder = DeltaXYWHBBoxCoder(means, stds, add_ctr_clamp=add_ctr_clamp, ctr_clamp=16)
    got = coder.decode(anchors, deltas, max_shape=max_shape)
    want = mm_decode(anchors, deltas, means, stds, max_shape, add_ctr_clamp=add_ctr_clamp, ctr_clamp=16)
    assert_coded(got, want)
    # batched form: rois [B, N, 4], deltas [B, N, 4C] equal per-image decoding; per-image max_shape
    batched = coder.decode(
        anchors.expand(2, -1, -1), deltas.expand(2, -1, -1), max_shape=[(300, 500), (100, 50)]
    )
    want2 = mm_decode(anchors, deltas, means, stds, (100, 50), add_ctr_clamp=add_ctr_clamp, ctr_clamp=16)
    assert_coded(batched[1], want2)


@pytest.mark.parametrize(
    "max_shape, batch",
    [([(300, 500), (100, 50), (20, 20)], 2), ([(300, 500)], 2), ([(300, 500), (100, 50)], None)],
)
def test_mmdet_decode_per_image_shapes_must_match_the_batch(max_shape, batch):
    """mmdet asserts one (h, w) per image; a mismatch must not broadcast or clip every image to one shape."""
    anchors, _ = boxes_pair(10, 9, torch.float32)
    deltas = torch.zeros(10, 4)
    if batch is not None:
        anchors, deltas = anchors.expand(batch, -1, -1), deltas.expand(batch, -1, -1)
    with pytest.raises(ValueError, match=r"DeltaXYWHBBoxCoder.decode: max_shape holds \d+ \(h, w\) pairs"):
        DeltaXYWHBBoxCoder().decode(anchors, deltas, max_shape=max_shape)


def test_ssd_matches_super_gradients():
    anchors, gt = boxes_pair(2000, 11, torch.float32)
    priors, boxes = cxcywh(anchors) / 300, cxcywh(gt) / 300
    coder = SSDBoxCoder()
    loc = coder.encode(priors, boxes[None].expand(3, -1, -1))
    assert loc.shape == (3, 2000, 4)
    want = ssd_encode(priors, boxes)
    torch.testing.assert_close(loc[0, :, :2], want[:, :2], atol=0, rtol=0)
    assert_coded(loc[2], ssd_encode(priors.double(), boxes.double()))
    pred = torch.randn(2, 2000, 4, generator=torch.Generator().manual_seed(0))
    assert_coded(coder.decode(priors, pred), ssd_decode(priors, pred))


@given(
    st.integers(0, 2**31), st.sampled_from(["torchvision", "mmdet", "ssd"]), st.sampled_from([0, 1, 17, 200])
)
def test_round_trip(seed, coding, n):
    anchors, gt = boxes_pair(n, seed % 1000)
    weights = (10.0, 10.0, 5.0, 5.0) if coding == "torchvision" else (0.1, 0.1, 0.2, 0.2)
    deltas = box_encode(anchors, gt, coding, weights)
    back = box_decode(anchors, deltas, coding, weights)
    torch.testing.assert_close(back, gt, atol=1e-9, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_computes_in_float32(dtype):
    anchors, gt = boxes_pair(100, 13, torch.float32)
    got = box_encode(anchors.to(dtype), gt.to(dtype), "mmdet", (0.1, 0.1, 0.2, 0.2))
    assert got.dtype == dtype
    want = box_encode(anchors.to(dtype).float(), gt.to(dtype).float(), "mmdet", (0.1, 0.1, 0.2, 0.2)).to(
        dtype
    )
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_non_contiguous_and_broadcast_reference():
    anchors, gt = boxes_pair(64, 15)
    wide = torch.cat([anchors, anchors], 1)[:, 4:]  # row stride 8: a strided view of the same values
    assert not wide.is_contiguous()
    base = box_encode(anchors.clone(), gt)
    torch.testing.assert_close(box_encode(wide, gt), base, atol=0, rtol=0)
    batched = box_encode(anchors, gt[None].expand(3, -1, -1))
    torch.testing.assert_close(batched, base.expand(3, -1, -1), atol=0, rtol=0)
    deltas = base.t().contiguous().t()  # column-major
    torch.testing.assert_close(box_decode(anchors, deltas), box_decode(anchors, base), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("coding", ["torchvision", "mmdet", "ssd"])
def test_vectorised_runs_equal_the_strided_path(dtype, coding):
    """Contiguous rows run in runs of 8 (float) / 4 (double) boxes on AVX-512, split into their
    (x1, y1) and (x2, y2) pairs, with a row-by-row tail, restarting at every image; strided rows go
    one by one. Every length around those boundaries, with a reference shared by the images and one
    per image, gives the same bits both ways, forward and backward."""
    g = torch.Generator().manual_seed(21)
    for n in [*range(0, 34), 47, 48, 49]:
        anchors = (random_boxes(2 * n, seed=n, dtype=torch.float64) + torch.tensor([0, 0, 1.0, 1.0]))[:n]
        anchors = cxcywh(anchors) if coding == "ssd" else anchors
        anchors = anchors.to(dtype)
        deltas = (torch.randn(3, n, 4, generator=g, dtype=torch.float64) * 2).to(dtype)
        per_image = anchors[None].repeat(3, 1, 1)
        for reference in (anchors, per_image):
            # same values, row stride 8: the strided path
            strided = torch.cat([deltas, deltas], -1)[..., 4:].requires_grad_()
            dense = deltas.clone().requires_grad_()
            want = box_decode(reference, strided, coding, (2.0, 2.0, 3.0, 3.0))
            got = box_decode(reference, dense, coding, (2.0, 2.0, 3.0, 3.0))
            torch.testing.assert_close(got, want, atol=0, rtol=0, equal_nan=True)
            upstream = torch.randn(got.shape, generator=g, dtype=torch.float64).to(dtype)
            torch.testing.assert_close(
                torch.autograd.grad(got, dense, upstream)[0],
                torch.autograd.grad(want, strided, upstream)[0],
                atol=0,
                rtol=0,
                equal_nan=True,
            )
            targets = reference.flip(-2)
            strided_targets = torch.cat([targets, targets], -1)[..., 4:]
            torch.testing.assert_close(
                box_encode(reference, targets, coding),
                box_encode(reference, strided_targets, coding),
                atol=0,
                rtol=0,
                equal_nan=True,
            )


def test_gathered_targets_equal_indexing():
    anchors = random_boxes(300, seed=16, dtype=torch.float64) + torch.tensor(
        [0, 0, 1.0, 1.0], dtype=torch.float64
    )
    gt = random_boxes(7, seed=17, dtype=torch.float64) + torch.tensor([0, 0, 1.0, 1.0], dtype=torch.float64)
    idx = torch.randint(-2, 7, (2, 300), generator=torch.Generator().manual_seed(0))
    got = box_encode(anchors, gt[None].expand(2, -1, -1), "torchvision", (10, 10, 5, 5), target_index=idx)
    for b in range(2):
        want = box_encode(anchors, gt[idx[b].clamp(min=0)], "torchvision", (10, 10, 5, 5))
        want[idx[b] < 0] = 0
        torch.testing.assert_close(got[b], want, atol=0, rtol=0)
    with pytest.raises(ValueError, match="target_index holds 7 but targets has only 7 boxes"):
        box_encode(anchors, gt, target_index=torch.full((300,), 7))


@pytest.mark.parametrize("coding", ["torchvision", "mmdet", "ssd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("classes", [1, 3])
def test_gathered_decode_equals_decoding_the_gathered_rows(coding, dtype, batched, classes):
    anchors, _ = boxes_pair(400, 41, dtype)
    if coding == "ssd":
        anchors = cxcywh(anchors)
    g = torch.Generator().manual_seed(42)
    shape = (2, 400, 4 * classes) if batched else (400, 4 * classes)
    deltas = (torch.randn(shape, generator=g) * 1.5).to(dtype)
    idx = torch.randint(-1, 400, (2, 700) if batched else (700,), generator=g)  # repeats, padding
    if batched:
        anchors = torch.stack([anchors, anchors.flip(0)])  # a reference per image too
    kwargs = {} if coding == "ssd" else {"max_shape": (300.0, 350.0)}
    got = box_decode(anchors, deltas, coding, (10, 10, 5, 5), wh_clip=(-3.0, 3.0), index=idx, **kwargs)
    rows = idx.clamp(min=0)
    if batched:
        ref_rows = anchors.gather(1, rows[..., None].expand(-1, -1, 4))
        delta_rows = deltas.gather(1, rows[..., None].expand(-1, -1, 4 * classes))
    else:
        ref_rows, delta_rows = anchors[rows], deltas[rows]
    want = box_decode(ref_rows, delta_rows, coding, (10, 10, 5, 5), wh_clip=(-3.0, 3.0), **kwargs)
    want[idx < 0] = 0
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_gathered_decode_index_checks_and_gradient():
    anchors, _ = boxes_pair(6, 43)
    deltas = torch.randn(
        2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    ).requires_grad_()
    idx = torch.tensor([[5, -1, 0, 5, 5], [2, 2, 3, 1, -4]])  # rows gathered several times, padding
    with pytest.raises(
        ValueError, match=re.escape("pydet.box_decode: index holds 6 but deltas has only 6 rows")
    ):
        box_decode(anchors, deltas, index=torch.tensor([[0, 6], [0, 0]]))
    assert torch.autograd.gradcheck(
        lambda d: box_decode(anchors, d, "mmdet", (0.5, 2.0, 0.7, 1.3), max_shape=(60.0, 80.0), index=idx),
        (deltas,),
    )
    # the gradient of the gathered decode is that of decoding the gathered rows, summed per source row
    out = box_decode(anchors, deltas, "torchvision", (1, 1, 1, 1), index=idx)
    w = torch.randn_like(out) * (idx >= 0)[..., None]
    (grad,) = torch.autograd.grad(out, deltas, w)
    rows = deltas.gather(1, idx.clamp(min=0)[..., None].expand(-1, -1, 8))
    (want,) = torch.autograd.grad(
        box_decode(anchors[idx.clamp(min=0)], rows, "torchvision", (1, 1, 1, 1)), deltas, w
    )
    torch.testing.assert_close(grad, want)
    empty = box_decode(anchors, deltas, index=torch.empty(2, 0, dtype=torch.int64))
    assert empty.shape == (2, 0, 8)


@pytest.mark.parametrize("coding", ["torchvision", "mmdet", "ssd"])
def test_decode_gradcheck(coding):
    anchors, _ = boxes_pair(6, 19)
    if coding == "ssd":
        anchors = cxcywh(anchors)
    deltas = torch.randn(
        6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    ).requires_grad_()
    kwargs = {
        "torchvision": dict(max_shape=(60.0, 80.0)),
        "mmdet": dict(wh_clip=(-1.5, 1.5), center_clamp=5.0, max_shape=(60.0, 80.0)),
        "ssd": {},
    }[coding]
    assert torch.autograd.gradcheck(
        lambda d: box_decode(anchors, d, coding, (0.5, 2.0, 0.7, 1.3), **kwargs), (deltas,)
    )


def test_decode_gradient_matches_autograd_of_the_formula():
    anchors, _ = boxes_pair(500, 21)
    deltas = (
        torch.randn(500, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    ).requires_grad_()
    ours = box_decode(anchors, deltas, "torchvision", (10, 10, 5, 5), wh_clip=(-math.inf, CLIP))
    ref = tv_decode(deltas, anchors, (10, 10, 5, 5))
    g = torch.randn_like(ours)
    torch.testing.assert_close(
        torch.autograd.grad(ours, deltas, g, retain_graph=True)[0],
        torch.autograd.grad(ref, deltas, g, retain_graph=True)[0],
    )
    # each axis' outputs pull back to that axis' deltas only: an infinite gradient on y1, y2 leaves
    # the gradient of dx, dw finite, as autograd of the formula does
    g[:, 1::2] = math.inf
    got, want = torch.autograd.grad(ours, deltas, g)[0], torch.autograd.grad(ref, deltas, g)[0]
    assert torch.isfinite(got[:, 0::2]).all()
    torch.testing.assert_close(got, want, equal_nan=True)


def test_empty():
    e = torch.empty(0, 4)
    assert box_encode(e, e).shape == (0, 4)
    assert box_decode(e, torch.empty(0, 8)).shape == (0, 8)
    assert box_decode(e, torch.empty(2, 0, 4)).shape == (2, 0, 4)


@pytest.mark.cuda
@pytest.mark.parametrize("coding", ["torchvision", "mmdet", "ssd"])
def test_cuda_matches_cpu(coding):
    anchors, gt = boxes_pair(5000, 23, torch.float32)
    w = (10.0, 10.0, 5.0, 5.0)
    d = box_encode(anchors, gt, coding, w)
    torch.testing.assert_close(
        box_encode(anchors.cuda(), gt.cuda(), coding, w).cpu(), d, atol=1e-5, rtol=1e-6
    )
    torch.testing.assert_close(
        box_decode(anchors.cuda(), d.cuda(), coding, w).cpu(),
        box_decode(anchors, d, coding, w),
        atol=1e-4,
        rtol=1e-6,
    )
    idx = torch.randint(-1, 5000, (3000,), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(
        box_decode(anchors.cuda(), d.cuda(), coding, w, index=idx.cuda()).cpu(),
        box_decode(anchors, d, coding, w, index=idx),
        atol=1e-4,
        rtol=1e-6,
    )
