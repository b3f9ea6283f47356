"""Every anchor generator against (a) its library's documented examples and known configurations,
(b) a float64 formula of what the anchors mean, and (c) the library's own code path (the
meshgrid + broadcast formula, transcribed here) bit for bit."""

import itertools
import math
import re

import numpy as np
import pytest
import torch
from helpers import FLOAT_DTYPES, assert_same
from hypothesis import given
from hypothesis import strategies as st

import pydet.benchmarks.reference as R
from pydet.anchors import detectron2 as d2
from pydet.anchors import mmdet, supergradients, torchvision


def close64(got: torch.Tensor, want: torch.Tensor) -> None:
    """float32 anchors equal the float64 formula to float32 rounding of the inputs and each step."""
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=4e-7 * scale)


def locations(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column and row index of every cell, location-major, float64."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return x.reshape(-1), y.reshape(-1)


def location_major(base: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor) -> torch.Tensor:
    shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], 1)
    return (shifts[:, None, :] + base[None]).reshape(-1, 4)


# ==== mmdet ========================================================================================
def test_mmdet_documented_examples():
    gen = mmdet.AnchorGenerator([16], [1.0], [1.0], [9])
    expected = torch.tensor(
        [[-4.5, -4.5, 4.5, 4.5], [11.5, -4.5, 20.5, 4.5], [-4.5, 11.5, 4.5, 20.5], [11.5, 11.5, 20.5, 20.5]]
    )
    (got,) = gen.grid_priors([(2, 2)], device="cpu")
    assert_same(got, expected)
    gen = mmdet.AnchorGenerator([16, 32], [1.0], [1.0], [9, 18])
    got = gen.grid_priors([(2, 2), (1, 1)], device="cpu")
    assert_same(got[0], expected)
    assert_same(got[1], torch.tensor([[-9.0, -9.0, 9.0, 9.0]]))
    legacy = mmdet.LegacyAnchorGenerator([16], [1.0], [1.0], [9], center_offset=0.5)
    with pytest.warns(UserWarning, match="grid_anchors"):
        (got,) = legacy.grid_anchors(((2, 2),), device="cpu")
    assert_same(
        got,
        torch.tensor(
            [[0.0, 0.0, 8.0, 8.0], [16.0, 0.0, 24.0, 8.0], [0.0, 16.0, 8.0, 24.0], [16.0, 16.0, 24.0, 24.0]]
        ),
    )


def mmdet_formula(
    strides, ratios, scales, base_sizes, scale_major, center_offset, centers, featmap_sizes, legacy=False
):
    """mmdet's anchors in float64: per base size, ratio and scale, a box of (w, h) = base * scale *
    (1 / sqrt(ratio), sqrt(ratio)) around the cell centre, shifted by (x * stride_w, y * stride_h)."""
    out = []
    for level, ((sw, sh), (fh, fw)) in enumerate(zip(strides, featmap_sizes, strict=True)):
        size = float(base_sizes[level])
        d = 1.0 if legacy else 0.0  # V1: widths and heights minus one
        cx, cy = (
            centers[level]
            if centers is not None
            else (center_offset * (size - d), center_offset * (size - d))
        )
        pairs = (
            [(r, s) for r in ratios for s in scales]
            if scale_major
            else [(r, s) for s in scales for r in ratios]
        )
        boxes = []
        for r, s in pairs:
            w, h = size * s / math.sqrt(r), size * s * math.sqrt(r)
            boxes.append([cx - 0.5 * (w - d), cy - 0.5 * (h - d), cx + 0.5 * (w - d), cy + 0.5 * (h - d)])
        base = torch.tensor(boxes, dtype=torch.float64)
        if legacy:
            base = base.round()
        x, y = locations(fh, fw)
        out.append(location_major(base, x * sw, y * sh))
    return out


@st.composite
def mmdet_configs(draw):
    levels = draw(st.integers(1, 4))
    stride_values = st.sampled_from([4, 8, 16, 32, 64, 128])
    square = draw(st.booleans())
    strides = [
        draw(stride_values) if square else (draw(stride_values), draw(stride_values)) for _ in range(levels)
    ]
    ratios = draw(st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 1 / 3]), min_size=1, max_size=3))
    kwargs = dict(strides=strides, ratios=ratios, scale_major=draw(st.booleans()))
    if draw(st.booleans()):
        kwargs["scales"] = draw(st.lists(st.sampled_from([1.0, 2.0, 4.0, 8.0, 0.5]), min_size=1, max_size=3))
    else:
        kwargs["octave_base_scale"] = draw(st.sampled_from([4, 8]))
        kwargs["scales_per_octave"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        kwargs["base_sizes"] = [draw(st.sampled_from([8, 16, 24, 100])) for _ in range(levels)]
    if draw(st.booleans()):
        kwargs["centers"] = [
            (draw(st.sampled_from([0.0, 3.5, 8.0])), draw(st.sampled_from([0.0, 4.0]))) for _ in range(levels)
        ]
    else:
        kwargs["center_offset"] = draw(st.sampled_from([0.0, 0.5, 1.0]))
    sizes = [(draw(st.integers(0, 6)), draw(st.integers(0, 6))) for _ in range(levels)]
    return kwargs, sizes


@given(config=mmdet_configs(), legacy=st.booleans())
def test_mmdet_anchor_generator_formula(config, legacy):
    kwargs, sizes = config
    gen = (mmdet.LegacyAnchorGenerator if legacy else mmdet.AnchorGenerator)(**kwargs)
    scales = gen.scales.double().tolist()
    want = mmdet_formula(
        gen.strides,
        kwargs["ratios"],
        scales,
        gen.base_sizes,
        gen.scale_major,
        gen.center_offset,
        gen.centers,
        sizes,
        legacy,
    )
    got = gen.grid_priors(sizes, device="cpu")
    assert [g.shape[0] for g in got] == [
        h * w * n for (h, w), n in zip(sizes, gen.num_base_priors, strict=True)
    ]
    for g, w in zip(got, want, strict=True):
        # legacy rounding of float32 vs float64 base anchors may differ by one at exact .5 ties
        close64(g, w) if not legacy else torch.testing.assert_close(g.double(), w, rtol=0, atol=1.0)


@given(config=mmdet_configs(), dtype=st.sampled_from(FLOAT_DTYPES))
def test_mmdet_grid_is_mmdets_code_path(config, dtype):
    """mmdet's single_level_grid_priors: base.to(dtype) + (arange.to(dtype) * stride) meshgrid."""
    kwargs, sizes = config
    gen = mmdet.AnchorGenerator(**kwargs)
    got = gen.grid_priors(sizes, dtype=dtype, device="cpu")
    for level, ((fh, fw), (sw, sh)) in enumerate(zip(sizes, gen.strides, strict=True)):
        shift_x = torch.arange(0, fw).to(dtype) * sw
        shift_y = torch.arange(0, fh).to(dtype) * sh
        want = R.anchor_grid([gen.base_anchors[level].to(dtype)], [shift_x], [shift_y])
        assert_same(got[level], want)
        assert_same(gen.single_level_grid_priors((fh, fw), level, dtype=dtype, device="cpu"), want)


@given(config=mmdet_configs(), seed=st.integers(0, 2**31))
def test_mmdet_sparse_priors_pick_grid_rows(config, seed):
    kwargs, sizes = config
    gen = mmdet.AnchorGenerator(**kwargs)
    level = seed % len(sizes)
    grid = gen.grid_priors(sizes, device="cpu")[level]
    idx = torch.randint(
        0, max(1, grid.shape[0]), (min(7, grid.shape[0]),), generator=torch.Generator().manual_seed(seed)
    )
    assert_same(gen.sparse_priors(idx, sizes[level], level, device="cpu"), grid[idx])


def test_mmdet_properties_and_octave_scales():
    gen = mmdet.AnchorGenerator(
        [8, 16, 32, 64, 128], [0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3
    )
    assert gen.num_levels == 5 and gen.num_base_anchors == gen.num_base_priors == [9] * 5
    torch.testing.assert_close(gen.scales, torch.tensor([4.0, 4 * 2 ** (1 / 3), 4 * 2 ** (2 / 3)]))
    # RetinaNet at 800 x 1344: P3-P7, 201,600 anchors
    sizes = [(math.ceil(800 / s), math.ceil(1344 / s)) for s in (8, 16, 32, 64, 128)]
    assert sum(a.shape[0] for a in gen.grid_priors(sizes, device="cpu")) == 201_600
    ratio_major = mmdet.AnchorGenerator([16], [0.5, 2.0], [1.0, 2.0], scale_major=False).base_anchors[0]
    scale_major = mmdet.AnchorGenerator([16], [0.5, 2.0], [1.0, 2.0]).base_anchors[0]
    assert_same(ratio_major[[0, 2, 1, 3]], scale_major)


def test_mmdet_valid_flags():
    gen = mmdet.AnchorGenerator([8, (16, 8)], [0.5, 1.0], [2.0])
    flags = gen.valid_flags([(5, 6), (5, 3)], (30, 20), device="cpu")
    # level 0: valid rows ceil(30/8)=4 of 5, cols ceil(20/8)=3 of 6; level 1: rows 4 of 5, cols 2 of 3
    for f, (h, w), (vh, vw) in zip(flags, [(5, 6), (5, 3)], [(4, 3), (4, 2)], strict=True):
        cell = torch.zeros(h, w, dtype=torch.bool)
        cell[:vh, :vw] = True
        assert_same(f, cell.reshape(-1).repeat_interleave(2))


def test_mmdet_ssd300_coco():
    gen = mmdet.SSDAnchorGenerator(
        strides=[8, 16, 32, 64, 100, 300],
        ratios=([2], [2, 3], [2, 3], [2, 3], [2], [2]),
        basesize_ratio_range=(0.15, 0.9),
        input_size=300,
        scale_major=False,
    )
    assert gen.base_sizes == [21, 45, 99, 153, 207, 261]
    assert gen.num_base_anchors == [4, 6, 6, 6, 4, 4]
    anchors = gen.grid_priors([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], device="cpu")
    assert sum(a.shape[0] for a in anchors) == 8732
    # level 0, first cell, centred at 4: small square (21), large square sqrt(21*45), then ratio (h/w)
    # 1/2 (wide) and 2 (tall)
    s, big = 21.0, math.sqrt(21 * 45)
    w2, h2 = s * math.sqrt(2), s / math.sqrt(2)
    want = torch.tensor(
        [
            [4 - s / 2, 4 - s / 2, 4 + s / 2, 4 + s / 2],
            [4 - big / 2, 4 - big / 2, 4 + big / 2, 4 + big / 2],
            [4 - w2 / 2, 4 - h2 / 2, 4 + w2 / 2, 4 + h2 / 2],
            [4 - h2 / 2, 4 - w2 / 2, 4 + h2 / 2, 4 + w2 / 2],
        ],
        dtype=torch.float64,
    )
    close64(anchors[0][:4], want)


def test_mmdet_ssd512_and_voc_tables():
    strides512 = [8, 16, 32, 64, 128, 256, 512]
    ratios512 = ([2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2])
    gen = mmdet.SSDAnchorGenerator(strides512, ratios512, basesize_ratio_range=(0.1, 0.9), input_size=512)
    assert gen.base_sizes == [20, 51, 133, 215, 296, 378, 460]
    gen = mmdet.SSDAnchorGenerator(
        [8, 16, 32, 64, 100, 300], ([2], [2, 3], [2, 3], [2, 3], [2], [2]), basesize_ratio_range=(0.2, 0.9)
    )
    assert gen.base_sizes == [30, 60, 111, 162, 213, 264]


def test_mmdet_yolo_and_responsible_flags():
    gen = mmdet.YOLOAnchorGenerator(
        strides=[32, 16], base_sizes=[[(116, 90), (156, 198)], [(30, 61), (62, 45)]]
    )
    assert_same(gen.base_anchors[0], torch.tensor([[-42.0, -29.0, 74.0, 61.0], [-62.0, -83.0, 94.0, 115.0]]))
    anchors = gen.grid_priors([(2, 3), (4, 6)], device="cpu")
    assert [a.shape[0] for a in anchors] == [12, 48]
    gt = torch.tensor([[30.0, 10.0, 50.0, 30.0]])  # centre (40, 20): cell (0, 1) at stride 32, (1, 2) at 16
    flags = gen.responsible_flags([(2, 3), (4, 6)], gt, device="cpu")
    want0 = torch.zeros(6, dtype=torch.uint8)
    want0[1] = 1
    want1 = torch.zeros(24, dtype=torch.uint8)
    want1[1 * 6 + 2] = 1
    assert_same(flags[0], want0.repeat_interleave(2))
    assert_same(flags[1], want1.repeat_interleave(2))


@pytest.mark.parametrize("with_stride", [False, True])
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_mmdet_point_generator(with_stride, offset):
    gen = mmdet.MlvlPointGenerator([8, (16, 32)], offset=offset)
    points = gen.grid_priors([(3, 4), (2, 5)], device="cpu", with_stride=with_stride)
    for p, (h, w), (sw, sh) in zip(points, [(3, 4), (2, 5)], [(8, 8), (16, 32)], strict=True):
        x, y = locations(h, w)
        want = [(x + offset) * sw, (y + offset) * sh]
        if with_stride:
            want += [torch.full_like(x, sw), torch.full_like(x, sh)]
        assert_same(p, torch.stack(want, 1).float())
    idx = torch.tensor([0, 7, 9])
    assert_same(gen.sparse_priors(idx, (2, 5), 1, device="cpu"), points[1][idx, :2])
    flags = gen.valid_flags([(3, 4), (2, 5)], (20, 40), device="cpu")
    assert (
        flags[0].reshape(3, 4)[:, :].all()
        and flags[1].reshape(2, 5)[0, :3].all()
        and not flags[1].reshape(2, 5)[:, 3:].any()
    )


def test_mmdet_helpers():
    anchors = torch.tensor([[-1.0, 0.0, 5.0, 5.0], [0.0, 0.0, 10.0, 8.0], [2.0, 2.0, 9.0, 9.0]])
    valid = torch.tensor([True, True, False])
    assert mmdet.anchor_inside_flags(anchors, valid, (9, 10)).tolist() == [False, False, False]
    assert mmdet.anchor_inside_flags(anchors, valid, (9, 10), allowed_border=1).tolist() == [
        True,
        True,
        False,
    ]
    assert mmdet.anchor_inside_flags(anchors, valid, (9, 10), allowed_border=-1).tolist() == [
        True,
        True,
        False,
    ]
    x1, y1, x2, y2 = mmdet.calc_region(torch.tensor([0.0, 0.0, 10.0, 20.0]), 0.25)
    assert (x1.item(), y1.item(), x2.item(), y2.item()) == (2, 5, 8, 15)
    x1, _, x2, _ = mmdet.calc_region(torch.tensor([-8.0, 0.0, 40.0, 20.0]), 0.0, featmap_size=(10, 30))
    assert (x1.item(), x2.item()) == (0, 30)
    per_image = [torch.arange(10).reshape(5, 2), torch.arange(10, 20).reshape(5, 2)]
    levels = mmdet.images_to_levels(per_image, [3, 2])
    assert_same(levels[0], torch.stack([per_image[0][:3], per_image[1][:3]]))
    assert_same(levels[1], torch.stack([per_image[0][3:], per_image[1][3:]]))


# ==== torchvision ==================================================================================
def test_torchvision_cell_anchors_are_rounded():
    gen = torchvision.AnchorGenerator(sizes=((32,),), aspect_ratios=((0.5, 1.0, 2.0),))
    assert_same(
        gen.cell_anchors[0],
        torch.tensor([[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]),
    )
    gen = torchvision.AnchorGenerator(sizes=((32, 64),), aspect_ratios=((0.5, 1.0),))
    assert gen.cell_anchors[0][:, 2].tolist() == [23.0, 45.0, 16.0, 32.0]  # ratio-major: sizes vary fastest


def torchvision_grid_code_path(cell_anchors, grid_sizes, image_size, dtype):
    """torchvision AnchorGenerator.grid_anchors, transcribed."""
    strides = [(image_size[0] // max(g[0], 1), image_size[1] // max(g[1], 1)) for g in grid_sizes]
    anchors = []
    for size, stride, base in zip(grid_sizes, strides, cell_anchors, strict=True):
        shifts_x = torch.arange(0, size[1], dtype=torch.int32) * torch.tensor(stride[1])
        shifts_y = torch.arange(0, size[0], dtype=torch.int32) * torch.tensor(stride[0])
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        anchors.append((shifts.view(-1, 1, 4) + base.to(dtype).view(1, -1, 4)).reshape(-1, 4))
    return torch.cat(anchors)


@given(
    levels=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=4),
    image=st.tuples(st.integers(32, 200), st.integers(32, 200)),
    dtype=st.sampled_from(FLOAT_DTYPES),
)
def test_torchvision_anchor_generator(levels, image, dtype):
    sizes = tuple((16 * 2**k, 16 * 2**k * 1.5) for k in range(len(levels)))
    gen = torchvision.AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(levels))
    grids = levels
    images = torch.zeros(2, 3, *image)
    feats = [torch.zeros(2, 4, h, w, dtype=dtype) for h, w in grids]
    out = gen(torchvision.ImageList(images, [image, image]), feats)
    assert len(out) == 2 and out[0] is out[1] and out[0].dtype == dtype
    assert_same(out[0], torchvision_grid_code_path(gen.cell_anchors, grids, image, dtype))
    # float64 meaning: rounded cell anchors of size s and ratio r, shifted by (x, y) * (image // grid)
    want = []
    for (h, w), ss in zip(grids, sizes, strict=True):
        base = []
        for r in (0.5, 1.0, 2.0):
            for s in ss:
                hw, hh = s / math.sqrt(r) / 2, s * math.sqrt(r) / 2
                base.append([-hw, -hh, hw, hh])
        x, y = locations(h, w)
        stride_x, stride_y = image[1] // max(w, 1), image[0] // max(h, 1)
        want.append(
            location_major(torch.tensor(base, dtype=torch.float64).round(), x * stride_x, y * stride_y)
        )
    if dtype in (torch.float32, torch.float64):
        close64(out[0], torch.cat(want))


def test_torchvision_retinanet_800x1344():
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512])
    gen = torchvision.AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    feats = [torch.zeros(1, 1, math.ceil(800 / s), math.ceil(1344 / s)) for s in (8, 16, 32, 64, 128)]
    (anchors,) = gen(torch.zeros(1, 3, 800, 1344), feats)
    assert anchors.shape == (201_600, 4) and gen.num_anchors_per_location() == [9] * 5


def torchvision_default_boxes_code_path(gen, grid_sizes, image_size, dtype):
    """torchvision DefaultBoxGenerator._grid_default_boxes + forward, transcribed."""
    default_boxes = []
    for k, f_k in enumerate(grid_sizes):
        if gen.steps is not None:
            x_f_k, y_f_k = image_size[1] / gen.steps[k], image_size[0] / gen.steps[k]
        else:
            y_f_k, x_f_k = f_k
        shifts_x = ((torch.arange(0, f_k[1]) + 0.5) / x_f_k).to(dtype=dtype)
        shifts_y = ((torch.arange(0, f_k[0]) + 0.5) / y_f_k).to(dtype=dtype)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shifts = torch.stack(
            (shift_x.reshape(-1), shift_y.reshape(-1)) * len(gen._wh_pairs[k]), dim=-1
        ).reshape(-1, 2)
        wh = gen._wh_pairs[k].clamp(min=0, max=1) if gen.clip else gen._wh_pairs[k]
        default_boxes.append(torch.cat((shifts, wh.repeat(f_k[0] * f_k[1], 1)), dim=1))
    boxes = torch.cat(default_boxes, dim=0)
    x_y_size = torch.tensor([image_size[1], image_size[0]])
    return torch.cat(
        [(boxes[:, :2] - 0.5 * boxes[:, 2:]) * x_y_size, (boxes[:, :2] + 0.5 * boxes[:, 2:]) * x_y_size], -1
    )


SSD300_GRIDS = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_torchvision_ssd300_default_boxes(dtype):
    gen = torchvision.DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    feats = [torch.zeros(1, 1, h, w, dtype=dtype) for h, w in SSD300_GRIDS]
    (boxes,) = gen(torch.zeros(1, 3, 300, 300), feats)
    assert boxes.shape == (8732, 4) and gen.num_anchors_per_location() == [4, 6, 6, 6, 4, 4]
    assert_same(boxes, torchvision_default_boxes_code_path(gen, SSD300_GRIDS, (300, 300), dtype))


@given(
    levels=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=4),
    image=st.tuples(st.integers(50, 400), st.integers(50, 400)),
    with_steps=st.booleans(),
    clip=st.booleans(),
    ratios=st.lists(st.sampled_from([2, 3, 1.5]), min_size=0, max_size=2),
)
def test_torchvision_default_box_generator(levels, image, with_steps, clip, ratios):
    steps = [8 * 2**k for k in range(len(levels))] if with_steps else None
    gen = torchvision.DefaultBoxGenerator(
        [ratios] * len(levels), min_ratio=0.2, max_ratio=0.95, steps=steps, clip=clip
    )
    feats = [torch.zeros(1, 1, h, w) for h, w in levels]
    (boxes,) = gen(torch.zeros(1, 3, *image), feats)
    assert_same(boxes, torchvision_default_boxes_code_path(gen, levels, image, torch.float32))
    want = []  # float64 meaning: SSD paper sizes around ((x + 0.5) / f_x, (y + 0.5) / f_y), in pixels
    for k, (h, w) in enumerate(levels):
        s, s_next = gen.scales[k], gen.scales[k + 1]
        wh = [(s, s), (math.sqrt(s * s_next),) * 2] + [
            p
            for a in ratios
            for p in ((s * math.sqrt(a), s / math.sqrt(a)), (s / math.sqrt(a), s * math.sqrt(a)))
        ]
        wh = torch.tensor(wh, dtype=torch.float64)
        wh = wh.clamp(0, 1) if clip else wh
        fx, fy = (image[1] / steps[k], image[0] / steps[k]) if with_steps else (w, h)
        x, y = locations(h, w)
        centre = torch.stack([(x + 0.5) / fx, (y + 0.5) / fy], 1)
        box = torch.cat([centre[:, None] - wh[None] / 2, centre[:, None] + wh[None] / 2], 2).reshape(-1, 4)
        want.append(box * torch.tensor([image[1], image[0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(boxes.double(), torch.cat(want), rtol=1e-6, atol=1e-4)


# ==== super-gradients ===============================================================================
def supergradients_code_path(fig_size, feat_size, steps, scales, aspect_ratios):
    """NVIDIA's (steps given) / super-gradients' DefaultBoxes.__init__, transcribed."""
    boxes = []
    for idx, sfeat in enumerate(feat_size):
        if steps is not None:
            sk1, sk2 = scales[idx] / fig_size, scales[idx + 1] / fig_size
            sizes = [(sk1, sk1), (math.sqrt(sk1 * sk2),) * 2]
            for alpha in aspect_ratios[idx]:
                w, h = sk1 * math.sqrt(alpha), sk1 / math.sqrt(alpha)
                sizes += [(w, h), (h, w)]
            f = (fig_size / np.array(steps))[idx]
        else:
            sk1, sk2 = scales[idx], scales[idx + 1]
            sizes = [(sk1, sk1), (math.sqrt(sk1 * sk2),) * 2]
            for alpha in aspect_ratios[idx]:
                w, h = sk1 * math.sqrt(alpha), sk1 / math.sqrt(alpha)
                sizes += [(w, h), (h, w)]
            sizes = np.array(sizes) / fig_size
            f = sfeat
        for w, h in sizes:
            for i, j in itertools.product(range(sfeat), repeat=2):
                boxes.append(((j + 0.5) / f, (i + 0.5) / f, w, h))
    xywh = torch.tensor(boxes, dtype=torch.float).reshape(-1, 4)
    xywh.clamp_(min=0, max=1)
    ltrb = xywh.clone()
    ltrb[:, 0] = xywh[:, 0] - 0.5 * xywh[:, 2]
    ltrb[:, 1] = xywh[:, 1] - 0.5 * xywh[:, 3]
    ltrb[:, 2] = xywh[:, 0] + 0.5 * xywh[:, 2]
    ltrb[:, 3] = xywh[:, 1] + 0.5 * xywh[:, 3]
    return xywh, ltrb


def test_supergradients_ssd300_and_ssdlite_320():
    ssd = supergradients.dboxes300_coco()
    xywh, ltrb = supergradients_code_path(
        300,
        [38, 19, 10, 5, 3, 1],
        [8, 16, 32, 64, 100, 300],
        [21, 45, 99, 153, 207, 261, 315],
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    )
    assert ssd("xywh").shape == (8732, 4) and ssd.num_anchors == [4, 6, 6, 6, 4, 4]
    assert_same(ssd("xywh"), xywh)
    assert_same(ssd("ltrb"), ltrb)
    assert_same(ssd("xyxy"), ltrb)
    assert (ssd.scale_xy, ssd.scale_wh) == (0.1, 0.2)
    lite = supergradients.dboxes_ssdlite_320()
    xywh, ltrb = supergradients_code_path(
        320, [20, 10, 5, 3, 2, 1], None, [32, 82, 133, 184, 235, 285, 336], [[2, 3]] * 6
    )
    assert lite("xywh").shape == (3234, 4) and lite.num_anchors == [6] * 6
    assert_same(lite("xywh"), xywh)
    assert_same(lite("ltrb"), ltrb)


def test_supergradients_returns_copies():
    boxes = supergradients.dboxes300_coco()
    boxes("xywh").zero_()
    assert boxes("xywh").abs().sum() > 0


@given(
    fig=st.sampled_from([300, 320, 512]),
    feats=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    with_steps=st.booleans(),
    ratios=st.lists(st.sampled_from([2, 3]), min_size=0, max_size=2, unique=True),
)
def test_supergradients_default_boxes(fig, feats, with_steps, ratios):
    scales = [int(fig * (0.1 + 0.2 * k)) for k in range(len(feats) + 1)]
    steps = [max(1, fig // max(f, 1)) for f in feats] if with_steps else None
    boxes = supergradients.DefaultBoxes(fig, feats, steps, scales, [ratios] * len(feats))
    xywh, ltrb = supergradients_code_path(fig, feats, steps, scales, [ratios] * len(feats))
    assert_same(boxes("xywh"), xywh)
    assert_same(boxes("ltrb"), ltrb)


# ==== detectron2 ===================================================================================
RETINANET_SIZES = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]


def detectron2_code_path(gen, grid_sizes):
    """detectron2 DefaultAnchorGenerator._grid_anchors, transcribed."""
    out = []
    for (h, w), stride, base in zip(grid_sizes, gen.strides, gen.cell_anchors, strict=True):
        if h == 0 or w == 0:  # detectron2 raises on an empty map; pydet gives no anchors
            out.append(torch.empty(0, 4))
            continue
        shifts_x = torch.arange(gen.offset * stride, w * stride, step=stride, dtype=torch.float32)
        shifts_y = torch.arange(gen.offset * stride, h * stride, step=stride, dtype=torch.float32)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
    return out


def test_detectron2_retinanet_800x1344():
    gen = d2.DefaultAnchorGenerator(
        sizes=RETINANET_SIZES, aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128], offset=0.0
    )
    grids = [(math.ceil(800 / s), math.ceil(1344 / s)) for s in gen.strides]
    anchors = gen([torch.zeros(1, 256, h, w) for h, w in grids])
    assert (
        sum(a.shape[0] for a in anchors) == 201_600
        and gen.num_anchors == [9] * 5
        and gen.num_cell_anchors == [9] * 5
    )
    for got, want in zip(anchors, detectron2_code_path(gen, grids), strict=True):
        assert_same(got, want)
    # size-major cell anchors: size 32, ratio 0.5 first: w = sqrt(1024 / 0.5), h = 0.5 w
    w = math.sqrt(32**2 / 0.5)
    close64(gen.cell_anchors[0][0], torch.tensor([-w / 2, -w / 4, w / 2, w / 4], dtype=torch.float64))


@given(
    levels=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=4),
    offset=st.sampled_from([0.0, 0.5, 0.25]),
    per_level=st.booleans(),
)
def test_detectron2_default_anchor_generator(levels, offset, per_level):
    strides = [4 * 2**k for k in range(len(levels))]
    sizes = [[16 * 2**k, 24 * 2**k] for k in range(len(levels))] if per_level else [[32, 48]]
    ratios = [[0.5, 1.0, 2.0]] if per_level else [0.5, 1.0, 2.0]
    gen = d2.DefaultAnchorGenerator(sizes=sizes, aspect_ratios=ratios, strides=strides, offset=offset)
    anchors = gen([torch.zeros(1, 1, h, w) for h, w in levels])
    for level, (got, want, (h, w)) in enumerate(
        zip(anchors, detectron2_code_path(gen, levels), levels, strict=True)
    ):
        assert_same(got, want)
        base = []
        for s in sizes[level if per_level else 0]:
            for r in (0.5, 1.0, 2.0):
                bw = math.sqrt(s * s / r)
                base.append([-bw / 2, -r * bw / 2, bw / 2, r * bw / 2])
        x, y = locations(h, w)
        close64(
            got,
            location_major(
                torch.tensor(base, dtype=torch.float64),
                (x + offset) * strides[level],
                (y + offset) * strides[level],
            ),
        )


@pytest.mark.cuda
@pytest.mark.cuda
def test_generators_cpu_equals_cuda():
    gen = mmdet.AnchorGenerator(
        [8, 16, 32, 64, 128], [0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3
    )
    sizes = [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)]
    for dtype in FLOAT_DTYPES:
        for c, g in zip(
            gen.grid_priors(sizes, dtype, "cpu"), gen.grid_priors(sizes, dtype, "cuda"), strict=True
        ):
            assert_same(g.cpu(), c)
    d2gen = d2.DefaultAnchorGenerator(
        sizes=RETINANET_SIZES, aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]
    )
    cpu = d2gen([torch.zeros(1, 1, h, w) for h, w in sizes])
    cuda = d2gen.cuda()([torch.zeros(1, 1, h, w, device="cuda") for h, w in sizes])
    for c, g in zip(cpu, cuda, strict=True):
        assert g.device.type == "cuda"
        assert_same(g.cpu(), c)
    tv = torchvision.DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]], steps=[8, 16, 32, 64, 100, 300]
    )
    (c,) = tv(torch.zeros(1, 3, 300, 300), [torch.zeros(1, 1, h, w) for h, w in SSD300_GRIDS])
    (g,) = tv(
        torch.zeros(1, 3, 300, 300, device="cuda"),
        [torch.zeros(1, 1, h, w, device="cuda") for h, w in SSD300_GRIDS],
    )
    assert_same(g.cpu(), c)


# ==== bad input and empty maps =====================================================================
BAD_CONFIGS = [
    (
        lambda: mmdet.AnchorGenerator([8, 16], [1.0], [1.0], base_sizes=[8]),
        "base_sizes must have one entry per level (2), got 1",
    ),
    (
        lambda: mmdet.AnchorGenerator([8], [1.0], [1.0], octave_base_scale=4, scales_per_octave=3),
        "give either scales or (octave_base_scale and scales_per_octave), not both",
    ),
    (
        lambda: mmdet.AnchorGenerator([8], [1.0]),
        "give either scales or (octave_base_scale and scales_per_octave), not both and not neither",
    ),
    (lambda: mmdet.AnchorGenerator([0, 8], [1.0], [1.0]), "strides must be positive, got [0, 8]"),
    (
        lambda: mmdet.AnchorGenerator([(8, 16, 4)], [1.0], [1.0]),
        "strides must be a number or a (w, h) pair, got (8, 16, 4)",
    ),
    (lambda: mmdet.AnchorGenerator([8], [1.0], [-1.0]), "ratios and scales must be positive"),
    (lambda: mmdet.AnchorGenerator([8], [], [1.0]), "ratios and scales must not be empty"),
    (
        lambda: mmdet.AnchorGenerator([8], [1.0], [1.0], base_sizes=[0]),
        "base_sizes must be positive, got [0]",
    ),
    (
        lambda: mmdet.AnchorGenerator([8], [1.0], [1.0], centers=[(0, 0)], center_offset=0.5),
        "centers cannot be set when center_offset != 0",
    ),
    (
        lambda: mmdet.AnchorGenerator([8, 16], [1.0], [1.0], centers=[(0, 0)]),
        "centers must have one entry per level (2), got 1",
    ),
    (
        lambda: mmdet.AnchorGenerator([8], [1.0], [1.0], center_offset=1.5),
        "center_offset must be in [0, 1], got 1.5",
    ),
    (
        lambda: mmdet.AnchorGenerator([8], [1.0], [1.0]).grid_priors([(2, 2), (1, 1)], device="cpu"),
        "featmap_sizes must have one (h, w) per level (1), got 2",
    ),
    (
        lambda: mmdet.AnchorGenerator([8], [1.0], [1.0]).grid_priors([(-1, 2)], device="cpu"),
        "every featmap size must be (h, w) with h, w >= 0, got (-1, 2)",
    ),
    (
        lambda: mmdet.AnchorGenerator([8], [1.0], [1.0]).single_level_grid_priors((2, 2), 1, device="cpu"),
        "level_idx must be in [0, 1), got 1",
    ),
    (
        lambda: mmdet.SSDAnchorGenerator([8, 16], [[2]]),
        "strides and ratios must have the same length, got 2 and 1",
    ),
    (
        lambda: mmdet.SSDAnchorGenerator([8, 16], [[2], [2]], min_sizes=[10, 20]),
        "give both min_sizes and max_sizes, or neither",
    ),
    (lambda: mmdet.SSDAnchorGenerator([8, 16, 32], [[2]] * 3, input_size=400), "input_size must be 300"),
    (
        lambda: mmdet.YOLOAnchorGenerator([32, 16], [[(10, 13)]]),
        "base_sizes must have one list per level (2), got 1",
    ),
    (lambda: mmdet.MlvlPointGenerator([8, -16]), "strides must be positive, got [8, -16]"),
    (
        lambda: torchvision.AnchorGenerator(((32,), (64,)), ((0.5, 1.0),) * 3),
        "sizes and aspect_ratios must have one entry per level, got 2 and 3",
    ),
    (lambda: torchvision.AnchorGenerator(((0,),), ((1.0,),)), "sizes and aspect_ratios must be positive"),
    (
        lambda: torchvision.AnchorGenerator(((32,),), ((1.0,),))(
            torch.zeros(1, 3, 64, 64), [torch.zeros(1, 1, 8, 8)] * 2
        ),
        "the number of feature maps, strides and anchor levels must match, got 2, 2 and 1",
    ),
    (
        lambda: torchvision.DefaultBoxGenerator([[2], [2]], steps=[8]),
        "aspect_ratios and steps must have the same length, got 2 and 1",
    ),
    (
        lambda: torchvision.DefaultBoxGenerator([[2], [2]], scales=[0.1, 0.2]),
        "scales must have one entry per feature map plus one (3), got 2",
    ),
    (
        lambda: supergradients.DefaultBoxes(300, [38, 19], scales=[21, 45], aspect_ratios=[[2], [2]]),
        "scales must have one entry per feature map plus one (3), got 2",
    ),
    (
        lambda: supergradients.DefaultBoxes(300, [38, 19], scales=[21, 45, 99], aspect_ratios=[[2]]),
        "aspect_ratios must have one list per feature map (2), got 1",
    ),
    (
        lambda: supergradients.DefaultBoxes(
            300, [38, 19], steps=[8], scales=[21, 45, 99], aspect_ratios=[[2], [2]]
        ),
        "steps must have one entry per feature map (2), got 1",
    ),
    (
        lambda: supergradients.DefaultBoxes(0, [38], scales=[21, 45], aspect_ratios=[[2]]),
        "fig_size must be positive, got 0",
    ),
    (
        lambda: supergradients.DefaultBoxes(300, [38], scales=[21, -45], aspect_ratios=[[2]]),
        "scales and aspect_ratios must be positive",
    ),
    (
        lambda: supergradients.DefaultBoxes(300, [38], scales=[21, 45], aspect_ratios=[[2]])("cxcywh"),
        "order must be 'xywh', 'ltrb' or 'xyxy', got 'cxcywh'",
    ),
    (
        lambda: d2.DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[1.0], strides=[8, 16, 32]),
        "sizes has 2 levels but there are 3 feature maps (strides)",
    ),
    (
        lambda: d2.DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[8], offset=1.0),
        "offset must be in [0, 1), got 1.0",
    ),
    (
        lambda: d2.DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[0]),
        "strides must be positive, got [0]",
    ),
    (
        lambda: d2.DefaultAnchorGenerator(sizes=[-32], aspect_ratios=[1.0], strides=[8]),
        "sizes must be non-empty lists of positive numbers",
    ),
    (
        lambda: d2.DefaultAnchorGenerator(sizes=32, aspect_ratios=[1.0], strides=[8]),
        "sizes has to be a list, got 32",
    ),
    (
        lambda: d2.DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[8])(
            [torch.zeros(1, 1, 4, 4)] * 2
        ),
        "got 2 feature maps for 1 levels (strides)",
    ),
]


@pytest.mark.parametrize("index", range(len(BAD_CONFIGS)))
def test_bad_configuration_names_the_argument(index):
    call, message = BAD_CONFIGS[index]
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_zero_size_feature_maps_give_empty_outputs():
    gen = mmdet.AnchorGenerator([8, 16], [0.5, 1.0], [2.0])
    empty, full = gen.grid_priors([(0, 5), (3, 3)], device="cpu")
    assert empty.shape == (0, 4) and full.shape == (18, 4)
    (tv,) = torchvision.AnchorGenerator(((32,),), ((1.0,),))(
        torch.zeros(1, 3, 64, 64), [torch.zeros(1, 1, 0, 8)]
    )
    assert tv.shape == (0, 4)
    (ssd,) = torchvision.DefaultBoxGenerator([[2]])(torch.zeros(1, 3, 64, 64), [torch.zeros(1, 1, 4, 0)])
    assert ssd.shape == (0, 4)
    assert supergradients.DefaultBoxes(300, [0, 2], scales=[21, 45, 99], aspect_ratios=[[2], [2]])(
        "xywh"
    ).shape == (16, 4)
    (d2_empty,) = d2.DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[8])(
        [torch.zeros(1, 1, 0, 0)]
    )
    assert d2_empty.shape == (0, 4)
    assert mmdet.MlvlPointGenerator([8]).grid_priors([(0, 0)], device="cpu")[0].shape == (0, 2)
