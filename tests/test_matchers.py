"""Matchers and assigners: the fused (no-matrix) path equals the matrix path bit for bit, and the
matrix path equals each library's code (transcribed below) on random and adversarial inputs: ties
(duplicate ground truth, identical anchors), NaN qualities, empty and single ground truth, batches."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from helpers import box_arrays, random_boxes
from hypothesis import given
from hypothesis import strategies as st

import pydet.ops as ops
from pydet.benchmarks.reference import match_torchvision as tv_matcher
from pydet.matchers import detectron2 as d2
from pydet.matchers import mmdet as mm
from pydet.matchers import torchvision as tv


# ---- the libraries' code paths -------------------------------------------------------------------
def tv_ssd_matcher(q, threshold):
    matches = tv_matcher(q, threshold, threshold, False)
    _, best = q.max(dim=1)
    for m in range(best.size(0)):  # sequential index_put: the last ground truth wins
        matches[best[m]] = m
    return matches


def d2_matcher(q, thresholds, labels, allow_low):
    thresholds = [-float("inf"), *thresholds, float("inf")]
    matched_vals, matches = q.max(dim=0)
    match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
    for label, low, high in zip(labels, thresholds[:-1], thresholds[1:], strict=True):
        match_labels[(matched_vals >= low) & (matched_vals < high)] = label
    if allow_low:
        highest, _ = q.max(dim=1)
        _, inds = torch.nonzero(q == highest[:, None], as_tuple=True)
        match_labels[inds] = 1
    return matches, match_labels


def mm_assign(overlaps, pos, neg, min_pos, gt_max_assign_all, low_quality, gt_labels):
    num_gts, num_bboxes = overlaps.shape
    assigned = overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
    max_overlaps, argmax = overlaps.max(dim=0)
    gt_max, gt_argmax = overlaps.max(dim=1)
    if isinstance(neg, float):
        assigned[(max_overlaps >= 0) & (max_overlaps < neg)] = 0
    else:
        assigned[(max_overlaps >= neg[0]) & (max_overlaps < neg[1])] = 0
    pos_inds = max_overlaps >= pos
    assigned[pos_inds] = argmax[pos_inds] + 1
    if low_quality:
        for i in range(num_gts):
            if gt_max[i] >= min_pos:
                if gt_max_assign_all:
                    assigned[overlaps[i, :] == gt_max[i]] = i + 1
                else:
                    assigned[gt_argmax[i]] = i + 1
    labels = assigned.new_full((num_bboxes,), -1)
    p = torch.nonzero(assigned > 0, as_tuple=False).squeeze()
    if p.numel() > 0:
        labels[p] = gt_labels[assigned[p] - 1]
    return assigned, max_overlaps, labels


# ---- inputs ---------------------------------------------------------------------------------------
@st.composite
def problems(draw, special=False):
    """(gt [M, 4], anchors [N, 4]) float32 with duplicated ground truth / identical anchors mixed in."""
    gt = torch.from_numpy(draw(box_arrays(min_n=1, max_n=12, special=special))).float()
    anchors = torch.from_numpy(draw(box_arrays(min_n=1, max_n=700, special=special))).float()
    if draw(st.booleans()):  # anchors identical to ground truth: exact best-quality ties
        anchors = torch.cat([anchors, gt, gt])
    return gt, anchors


SETTINGS = [(0.5, 0.4, True), (0.5, 0.4, False), (0.7, 0.3, True), (0.0, 0.0, True)]


@given(problems(special=True))
def test_torchvision_matcher(problem):
    gt, anchors = problem
    q = ops.box_iou(gt, anchors)
    for high, low, allow_low in SETTINGS:
        m = tv.Matcher(high, low, allow_low)
        want = tv_matcher(q.clone(), high, low, allow_low)
        assert torch.equal(m(q), want)
        assert torch.equal(m.match_boxes(gt, anchors), want)


@given(problems(special=True), st.sampled_from([0.5, 0.0, 1.0]))
def test_torchvision_ssd_matcher(problem, threshold):
    gt, anchors = problem
    q = ops.box_iou(gt, anchors)
    want = tv_ssd_matcher(q, threshold)
    m = tv.SSDMatcher(threshold)
    assert torch.equal(m(q), want)
    assert torch.equal(m.match_boxes(gt, anchors), want)


@given(problems(special=False))
def test_detectron2_matcher(problem):
    gt, anchors = problem
    q = ops.box_iou(gt, anchors)
    if not bool((q >= 0).all()):  # inverted boxes give negative IoU, which detectron2 rejects
        with pytest.raises(ValueError, match="must be >= 0"):
            d2.Matcher([0.5], [0, 1])(q)
        return
    for thresholds, labels, allow_low in (([0.4, 0.5], [0, -1, 1], True), ([0.5], [0, 1], False)):
        m = d2.Matcher(thresholds, labels, allow_low)
        want = d2_matcher(q, thresholds, labels, allow_low)
        for got in (m(q), m.match_boxes(gt, anchors)):
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@given(problems(special=True), st.booleans(), st.sampled_from([0.0, 0.3]), st.sampled_from([0.4, (0.1, 0.4)]))
def test_mmdet_max_iou_assigner(problem, gt_max_assign_all, min_pos, neg):
    gt, anchors = problem
    labels = torch.arange(gt.size(0)) * 3
    overlaps = ops.bbox_overlaps(gt, anchors)
    want = mm_assign(overlaps, 0.5, neg, min_pos, gt_max_assign_all, True, labels)
    a = mm.MaxIoUAssigner(0.5, neg, min_pos, gt_max_assign_all)
    for got in (a.assign(anchors, gt, gt_labels=labels), a.assign_wrt_overlaps(overlaps, labels)):
        assert torch.equal(got.gt_inds, want[0])
        torch.testing.assert_close(got.max_overlaps, want[1], atol=0, rtol=0, equal_nan=True)
        assert torch.equal(got.labels, want[2])


@pytest.mark.parametrize("wrt_candidates", [True, False])
def test_mmdet_ignore_regions(wrt_candidates):
    gt = random_boxes(6, seed=1)
    anchors = torch.cat([random_boxes(400, seed=2), gt])
    ignore = random_boxes(3, seed=3, scale=60)
    a = mm.MaxIoUAssigner(0.5, 0.4, ignore_iof_thr=0.3, ignore_wrt_candidates=wrt_candidates)
    got = a.assign(anchors, gt, ignore)
    overlaps = ops.bbox_overlaps(gt, anchors)
    if wrt_candidates:
        ign = ops.bbox_overlaps(anchors, ignore, "iof").max(dim=1).values
    else:
        ign = ops.bbox_overlaps(ignore, anchors, "iof").max(dim=0).values
    overlaps[:, ign > 0.3] = -1
    assert (ign > 0.3).any()
    want = mm_assign(overlaps, 0.5, 0.4, 0.0, True, True, torch.zeros(6, dtype=torch.long))
    assert torch.equal(got.gt_inds, want[0])
    assert torch.equal(got.max_overlaps, want[1])


def test_mmdet_empty():
    a = mm.MaxIoUAssigner(0.5, 0.4)
    r = a.assign(random_boxes(5), torch.empty(0, 4), gt_labels=torch.empty(0, dtype=torch.long))
    assert (
        r.gt_inds.tolist() == [0] * 5 and r.labels.tolist() == [-1] * 5 and r.max_overlaps.tolist() == [0] * 5
    )
    r = a.assign(torch.empty(0, 4), random_boxes(3))
    assert r.gt_inds.shape == (0,) and r.num_gts == 3


def mm_atss(bboxes, num_level_bboxes, gt_bboxes, topk):
    """mmdet's ATSSAssigner.assign with the full overlap matrix."""
    inf = 100000000
    num_gt, num_bboxes = gt_bboxes.size(0), bboxes.size(0)
    overlaps = ops.bbox_overlaps(bboxes, gt_bboxes)
    assigned = overlaps.new_full((num_bboxes,), 0, dtype=torch.long)
    gt_points = torch.stack(
        ((gt_bboxes[:, 0] + gt_bboxes[:, 2]) / 2.0, (gt_bboxes[:, 1] + gt_bboxes[:, 3]) / 2.0), 1
    )
    cx = (bboxes[:, 0] + bboxes[:, 2]) / 2.0
    cy = (bboxes[:, 1] + bboxes[:, 3]) / 2.0
    distances = (torch.stack((cx, cy), 1)[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()
    cands, start = [], 0
    for n in num_level_bboxes:
        _, idx = distances[start : start + n, :].topk(min(topk, n), dim=0, largest=False)
        cands.append(idx + start)
        start += n
    cand = torch.cat(cands, dim=0)
    cand_ov = overlaps[cand, torch.arange(num_gt)]
    thr = cand_ov.mean(0) + cand_ov.std(0)
    is_pos = cand_ov >= thr[None, :]
    for g in range(num_gt):
        cand[:, g] += g * num_bboxes
    ex = cx.view(1, -1).expand(num_gt, num_bboxes).contiguous().view(-1)
    ey = cy.view(1, -1).expand(num_gt, num_bboxes).contiguous().view(-1)
    cand = cand.view(-1)
    l_ = ex[cand].view(-1, num_gt) - gt_bboxes[:, 0]
    t_ = ey[cand].view(-1, num_gt) - gt_bboxes[:, 1]
    r_ = gt_bboxes[:, 2] - ex[cand].view(-1, num_gt)
    b_ = gt_bboxes[:, 3] - ey[cand].view(-1, num_gt)
    is_pos = is_pos & (torch.stack([l_, t_, r_, b_], dim=1).min(dim=1)[0] > 0.01)
    ov_inf = torch.full_like(overlaps, -inf).t().contiguous().view(-1)
    index = cand.view(-1)[is_pos.view(-1)]
    ov_inf[index] = overlaps.t().contiguous().view(-1)[index]
    ov_inf = ov_inf.view(num_gt, -1).t()
    max_overlaps, argmax = ov_inf.max(dim=1)
    assigned[max_overlaps != -inf] = argmax[max_overlaps != -inf] + 1
    return assigned, max_overlaps


@given(st.integers(0, 2**31), st.integers(1, 8))
def test_atss(seed, m):
    gt = random_boxes(m, seed=seed % 997, scale=200)
    anchors = torch.cat([random_boxes(300, seed=seed % 991 + 1, scale=200), gt])
    levels = [200, 100, anchors.size(0) - 300]
    got = mm.ATSSAssigner(9).assign(anchors, levels, gt)
    want = mm_atss(anchors, levels, gt, 9)
    assert torch.equal(got.gt_inds, want[0])
    assert torch.equal(got.max_overlaps, want[1])


# ---- batches, fused kernels -------------------------------------------------------------------------
def test_batched_equals_per_image():
    anchors = random_boxes(3000, seed=5)
    gts = [random_boxes(k, seed=10 + k) for k in (4, 0, 9, 1)]
    padded = torch.zeros(len(gts), 9, 4)
    for b, g in enumerate(gts):
        padded[b, : len(g)] = g
    padded[1, :] = float("nan")  # padding is never read
    num_gt = torch.tensor([len(g) for g in gts])
    m = tv.Matcher(0.5, 0.4, True)
    s = tv.SSDMatcher(0.5)
    d = d2.Matcher([0.4, 0.5], [0, -1, 1], True)
    got_m, got_s, got_d = (
        m.match_boxes(padded, anchors, num_gt),
        s.match_boxes(padded, anchors, num_gt),
        d.match_boxes(padded, anchors, num_gt),
    )
    for b, g in enumerate(gts):
        if len(g) == 0:
            assert (got_m[b] == -1).all() and (got_s[b] == -1).all()
            assert (got_d[0][b] == 0).all() and (got_d[1][b] == 0).all()
            continue
        assert torch.equal(got_m[b], m.match_boxes(g, anchors))
        assert torch.equal(got_s[b], s.match_boxes(g, anchors))
        assert torch.equal(got_d[0][b], d.match_boxes(g, anchors)[0])
        assert torch.equal(got_d[1][b], d.match_boxes(g, anchors)[1])


def test_match_then_encode_fused():
    anchors = random_boxes(2000, seed=6) + torch.tensor([0, 0, 1.0, 1.0])
    gt = torch.stack([random_boxes(5, seed=7), random_boxes(5, seed=8)]) + torch.tensor([0, 0, 1.0, 1.0])
    num_gt = torch.tensor([5, 3])
    matches = tv.Matcher(0.5, 0.4, True).match_boxes(gt, anchors, num_gt)
    targets = ops.box_encode(anchors, gt, "torchvision", (10, 10, 5, 5), target_index=matches)
    for b in range(2):
        want = ops.box_encode(anchors, gt[b][matches[b].clamp(min=0)], "torchvision", (10, 10, 5, 5))
        keep = matches[b] >= 0
        assert torch.equal(targets[b][keep], want[keep]) and (targets[b][~keep] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["iou", "mm_iou", "mm_iof"])
def test_overlap_reductions_equal_matrix(dtype, mode):
    gt = random_boxes(37, seed=1, dtype=dtype)
    anchors = torch.cat([random_boxes(1500, seed=2, dtype=dtype), gt, gt])  # > 2 chunks, ties
    r = ops.box_overlap_max(gt, anchors, mode=mode)
    # float16/bfloat16 boxes are matched in float32: the matrix of the float32-converted boxes
    gt, anchors = (gt.float(), anchors.float()) if dtype in (torch.float16, torch.bfloat16) else (gt, anchors)
    q = ops.box_iou(gt, anchors) if mode == "iou" else ops.bbox_overlaps(gt, anchors, mode[3:])
    for got, want in zip(r, (*q.max(dim=0), *q.max(dim=1)), strict=True):
        assert torch.equal(got, want)
    if mode == "mm_iof":
        qa = ops.bbox_overlaps(anchors, gt, "iof")
        assert torch.equal(
            ops.box_overlap_max(gt, anchors, mode=mode, anchors_first=True).anchor_max, qa.max(1).values
        )


def test_reductions_are_thread_count_independent():
    gt = random_boxes(20, seed=3)
    anchors = torch.cat([random_boxes(5000, seed=4), gt, gt])
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            r = ops.box_overlap_max(gt, anchors)
            results.append((*r, ops.box_overlap_ties(gt, anchors, r.gt_max)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


@pytest.mark.slow
def test_fused_reductions_beyond_2_31_pairs():
    """21,000 ground-truth boxes x 110,000 anchors: 2.31e9 pairs (> 2^31), as one fused call, against
    the matrix path computed in chunks of anchors (the full matrix would be 9.2 GB)."""
    m, n = 21_000, 110_000
    gt = random_boxes(m, seed=5, scale=2000.0)
    anchors = torch.cat([random_boxes(n - m, seed=6, scale=2000.0), gt])  # every gt has an exact match
    r = ops.box_overlap_max(gt, anchors)
    ties = ops.box_overlap_ties(gt, anchors, r.gt_max)
    gt_max = torch.full((m,), -float("inf"))
    gt_arg = torch.full((m,), -1, dtype=torch.int64)
    for start in range(0, n, 8192):
        q = ops.box_iou(gt, anchors[start : start + 8192])
        a_max, a_arg = q.max(dim=0)
        assert torch.equal(r.anchor_max[start : start + 8192], a_max)
        assert torch.equal(r.anchor_argmax[start : start + 8192], a_arg)
        # the last gt whose best IoU this anchor attains
        hit = q == r.gt_max[:, None]
        last = torch.where(hit.any(0), m - 1 - hit.flip(0).int().argmax(0), -1)
        assert torch.equal(ties[start : start + 8192], last)
        c_max, c_arg = q.max(dim=1)
        better = c_max > gt_max  # an earlier chunk keeps ties: the first anchor wins
        gt_max, gt_arg = torch.where(better, c_max, gt_max), torch.where(better, c_arg + start, gt_arg)
    assert m * n > 2**31 and torch.equal(r.gt_max, gt_max) and torch.equal(r.gt_argmax, gt_arg)
    assert (r.gt_max == 1).all() and (r.gt_argmax >= n - m).all()


def test_empty_inputs():
    r = ops.box_overlap_max(torch.empty(0, 4), random_boxes(5))
    assert r.anchor_max.tolist() == [-float("inf")] * 5 and r.anchor_argmax.tolist() == [-1] * 5
    r = ops.box_overlap_max(random_boxes(3), torch.empty(0, 4))
    assert r.gt_max.tolist() == [-float("inf")] * 3 and r.gt_argmax.tolist() == [-1] * 3
    with pytest.raises(ValueError, match="No ground-truth boxes"):
        tv.Matcher(0.5, 0.4).match_boxes(torch.empty(0, 4), random_boxes(5))
    with pytest.raises(ValueError, match="No proposal boxes"):
        tv.Matcher(0.5, 0.4).match_boxes(random_boxes(2), torch.empty(0, 4))
    m, lab = d2.Matcher([0.5], [0, 1]).match_boxes(torch.empty(0, 4), random_boxes(4))
    assert m.tolist() == [0] * 4 and lab.tolist() == [0] * 4


def test_bad_configs():
    with pytest.raises(ValueError, match="low_threshold"):
        tv.Matcher(0.3, 0.5)
    with pytest.raises(ValueError, match="thresholds"):
        d2.Matcher([0.5, 0.4], [0, -1, 1])
    with pytest.raises(ValueError, match="labels"):
        d2.Matcher([0.5], [0, 2])
    with pytest.raises(ValueError, match="neg_iou_thr"):
        mm.MaxIoUAssigner(0.5, (0.4, 0.1))
    with pytest.raises(ValueError, match=r"num_gt\[0\] = 5 is outside \[0, 3\]"):
        ops.box_overlap_max(random_boxes(3)[None], random_boxes(4), torch.tensor([5]))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    gt = torch.stack([random_boxes(30, seed=1), random_boxes(30, seed=2)])
    anchors = torch.cat([random_boxes(20000, seed=3), gt[0], gt[1]])
    num_gt = torch.tensor([30, 17])
    r = ops.box_overlap_max(gt, anchors, num_gt)
    rc = ops.box_overlap_max(gt.cuda(), anchors.cuda(), num_gt.cuda())
    for a, b in zip(r, rc, strict=True):
        assert torch.equal(a, b.cpu())
    t = ops.box_overlap_ties(gt, anchors, r.gt_max, 0.0, num_gt)
    assert torch.equal(
        t, ops.box_overlap_ties(gt.cuda(), anchors.cuda(), rc.gt_max, 0.0, num_gt.cuda()).cpu()
    )


def test_nan_everywhere_is_a_valid_answer():
    gt = torch.tensor([[np.nan, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    anchors = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]], dtype=torch.float32)
    q = ops.box_iou(gt, anchors)
    assert torch.equal(
        tv.Matcher(0.5, 0.4, True).match_boxes(gt, anchors), tv_matcher(q.clone(), 0.5, 0.4, True)
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from /proc")
def test_fused_matching_never_holds_the_matrix():
    # 1000 x 200,000 IoUs are 800 MB as a float32 matrix; the fused path keeps O(M + N).
    from pydet.benchmarks.memory import MATCH_WORKLOADS, peak_extra_bytes

    fused = next(setup for name, setup in MATCH_WORKLOADS.items() if "fused" in name)
    assert peak_extra_bytes(fused, 1000, 200_000, threads=2) < 50 * 2**20
