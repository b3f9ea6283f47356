"""The anchor_grid kernel: bit-exact against the meshgrid + broadcast formula in every dtype and
layout, non-contiguous and empty inputs, 64-bit sizes, CPU == CUDA; the generators' grid cache;
torch.compile of anchor generation."""

import threading

import numpy as np
import pytest
import torch
from helpers import FLOAT_DTYPES, assert_same
from hypothesis import given
from hypothesis import strategies as st

import pydet.benchmarks.reference as R
from pydet.anchors import GridCache
from pydet.anchors.detectron2 import DefaultAnchorGenerator
from pydet.anchors.mmdet import AnchorGenerator
from pydet.ops import anchor_grid


@st.composite
def grid_inputs(draw):
    """Levels of random base anchors and shifts (float64 numpy), with optional per-level scales."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.integers(1, 4))
    magnitude = draw(st.sampled_from([1.0, 1e3, 1e-3, 1e6]))
    base, sx, sy = [], [], []
    for _ in range(levels):
        a, h, w = draw(st.integers(0, 5)), draw(st.integers(0, 7)), draw(st.integers(0, 7))
        base.append(rng.normal(size=(a, 4)) * magnitude)
        sx.append(rng.uniform(0, 1, size=w) * magnitude * 10)
        sy.append(rng.uniform(0, 1, size=h) * magnitude * 10)
    scales = []
    if draw(st.booleans()):
        scales = [float(v) for v in rng.choice([1.0, 300.0, 1333.0, 0.1, 4097.0], size=2 * levels)]
    return base, sx, sy, scales


def as_tensors(inputs, dtype, device="cpu"):
    """grid_inputs() as lists of tensors of ``dtype`` on ``device`` (base, shifts_x, shifts_y), and the scales."""
    *arrays, scales = inputs
    return (*([torch.from_numpy(a).to(dtype).to(device) for a in level] for level in arrays), scales)


@given(
    inputs=grid_inputs(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    anchor_major=st.booleans(),
    shift_corners=st.booleans(),
)
def test_matches_meshgrid_formula_bit_for_bit(inputs, dtype, anchor_major, shift_corners):
    base, sx, sy, scales = as_tensors(inputs, dtype)
    got = anchor_grid(base, sx, sy, scales, anchor_major, shift_corners)
    assert_same(got, R.anchor_grid(base, sx, sy, scales, anchor_major, shift_corners))


def test_non_contiguous_inputs():
    base = torch.randn(4, 8)[:, ::2]  # strided columns
    base_t = torch.randn(4, 3).t()  # transposed
    sx = torch.arange(20.0)[::3]
    sy = torch.arange(12.0).flip(0)[::2]
    assert not any(t.is_contiguous() for t in (base, base_t, sx, sy))
    levels = ([base, base_t], [sx, sx[1:]], [sy, sy[1:]])
    for anchor_major in (False, True):
        assert_same(
            anchor_grid(*levels, anchor_major=anchor_major), R.anchor_grid(*levels, anchor_major=anchor_major)
        )


@pytest.mark.parametrize("threads", [1, 3, 7])
@pytest.mark.parametrize("anchor_major", [False, True])
def test_tasks_split_cells_and_levels(threads, anchor_major):
    """Large odd-sized levels, so the CPU tasks (equal row ranges) start and end inside cells."""
    g = torch.Generator().manual_seed(threads)
    levels = [(7, 53, 97), (5, 31, 43), (1, 3, 5), (9, 20, 11), (3, 1, 1)]  # (A, H, W)
    base = [torch.randn(a, 4, generator=g) * 50 for a, _, _ in levels]
    sx = [torch.rand(w, generator=g) * 800 for _, _, w in levels]
    sy = [torch.rand(h, generator=g) * 800 for _, h, _ in levels]
    scales = [1.5, 0.25] * len(levels)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for corners in (True, False):
            got = anchor_grid(base, sx, sy, scales, anchor_major, corners)
            assert_same(got, R.anchor_grid(base, sx, sy, scales, anchor_major, corners))
    finally:
        torch.set_num_threads(previous)


def test_empty_levels_give_empty_rows():
    base = torch.rand(3, 4)
    out = anchor_grid(
        [base, base], [torch.arange(0.0), torch.arange(2.0)], [torch.arange(5.0), torch.arange(0.0)]
    )
    assert out.shape == (0, 4)
    out = anchor_grid([torch.empty(0, 4)], [torch.arange(3.0)], [torch.arange(3.0)])
    assert out.shape == (0, 4)
    mixed = anchor_grid(
        [base, base], [torch.arange(0.0), torch.arange(2.0)], [torch.arange(5.0), torch.arange(1.0)]
    )
    assert_same(mixed, R.anchor_grid([base], [torch.arange(2.0)], [torch.arange(1.0)]))


@pytest.mark.cuda
@pytest.mark.cuda
@given(
    inputs=grid_inputs(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    anchor_major=st.booleans(),
    corners=st.booleans(),
)
def test_cpu_equals_cuda(inputs, dtype, anchor_major, corners):
    cpu = anchor_grid(*as_tensors(inputs, dtype), anchor_major, corners)
    cuda = anchor_grid(*as_tensors(inputs, dtype, "cuda"), anchor_major, corners)
    assert_same(cuda.cpu(), cpu)


@pytest.mark.slow
@pytest.mark.parametrize("anchor_major", [False, True])
def test_more_than_2_31_elements(anchor_major):
    """9 anchors on a 7,800 x 7,700 map: 540.5M rows, 2.16G elements (8.6 GB) -- 64-bit offsets."""
    base = torch.arange(36.0).reshape(9, 4)
    sx, sy = torch.arange(7700.0), torch.arange(7800.0) * 2
    out = anchor_grid([base], [sx], [sy], anchor_major=anchor_major)
    assert out.shape == (9 * 7700 * 7800, 4) and out.numel() > 2**31
    for a, y, x in [(8, 7799, 7699), (0, 7799, 0), (4, 4000, 5000)]:
        row = (a * 7800 + y) * 7700 + x if anchor_major else (y * 7700 + x) * 9 + a
        want = base[a] + torch.stack([sx[x], sy[y], sx[x], sy[y]])
        assert_same(out[row], want)


# ---- the grid cache -------------------------------------------------------------------------------
def test_cache_hit_returns_the_same_tensors():
    gen = AnchorGenerator([8, 16], [0.5, 1.0, 2.0], [4.0])
    first = gen.grid_priors([(10, 12), (5, 6)], device="cpu")
    second = gen.grid_priors([(10, 12), (5, 6)], device="cpu")
    assert all(a is b for a, b in zip(first, second, strict=True))
    other = gen.grid_priors([(10, 12), (5, 6)], dtype=torch.float64, device="cpu")
    assert other[0].dtype == torch.float64 and len(gen._cache) == 2


def test_in_place_edit_never_reaches_later_calls():
    gen = AnchorGenerator([8, 16], [0.5, 1.0, 2.0], [4.0])
    pristine = [t.clone() for t in gen.grid_priors([(4, 4), (2, 2)], device="cpu")]
    edited = gen.grid_priors([(4, 4), (2, 2)], device="cpu")
    edited[1].add_(1000)  # a view of the cached grid: bumps the shared version counter
    again = gen.grid_priors([(4, 4), (2, 2)], device="cpu")
    for a, b in zip(again, pristine, strict=True):
        assert_same(a, b)


def test_grids_asked_for_under_inference_mode_are_cached_for_training_too():
    gen = AnchorGenerator([8, 16], [0.5, 1.0, 2.0], [4.0])
    with torch.inference_mode():  # an evaluation before any training step
        first = gen.grid_priors([(4, 4), (2, 2)], device="cpu")
    assert not any(t.is_inference() for t in first) and len(gen._cache) == 1
    again = gen.grid_priors([(4, 4), (2, 2)], device="cpu")
    assert all(a is b for a, b in zip(first, again, strict=True))
    weight = torch.ones((), requires_grad=True)
    (again[0] * weight).sum().backward()  # inference tensors could not be saved for backward


def test_cache_is_bounded_lru():
    cache = GridCache(maxsize=2)
    made = []

    def make(key):
        def create():
            t = torch.full((1,), float(key))
            made.append(key)
            return t, t

        return create

    for key in (1, 2, 1, 3, 1, 2):
        cache.get(key, make(key))
    assert made == [1, 2, 3, 2] and len(cache) == 2
    with pytest.raises(ValueError, match="maxsize must be >= 1, got 0"):
        GridCache(0)


def test_cache_is_thread_safe():
    gen = AnchorGenerator([8, 16, 32], [0.5, 1.0, 2.0], [4.0, 8.0])
    sizes = [[(20 + k, 30), (10, 15), (5, 8)] for k in range(6)]
    want = [
        [
            t.clone()
            for t in AnchorGenerator([8, 16, 32], [0.5, 1.0, 2.0], [4.0, 8.0]).grid_priors(s, device="cpu")
        ]
        for s in sizes
    ]
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(40):
            k = int(rng.integers(0, len(sizes)))
            got = gen.grid_priors(sizes[k], device="cpu")
            if not all(torch.equal(g, w) for g, w in zip(got, want[k], strict=True)):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(gen._cache) <= gen._cache.maxsize


# ---- compile ---------------------------------------------------------------------------------------
def test_compile_fullgraph_generates_anchors(device):
    gen = AnchorGenerator([8, 16, 32], [0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)

    def anchors_for(features: list[torch.Tensor]) -> torch.Tensor:
        sizes = [f.shape[-2:] for f in features]
        return torch.cat(gen.grid_priors(sizes, dtype=features[0].dtype, device=features[0].device))

    torch._dynamo.reset()
    compiled = torch.compile(anchors_for, fullgraph=True)
    for h, w in ((32, 40), (24, 48)):
        feats = [torch.zeros(1, 2, h // s, w // s, device=device) for s in (1, 2, 4)]
        assert_same(compiled(feats), anchors_for(feats))


class AnchorsForFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.generator = DefaultAnchorGenerator(
            sizes=[[32], [64]], aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16], offset=0.5
        )

    def forward(self, p3: torch.Tensor, p4: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.generator([p3, p4]))


def test_export_anchor_generation():
    model = AnchorsForFeatures()
    feats = (torch.zeros(1, 4, 10, 12), torch.zeros(1, 4, 5, 6))
    exported = torch.export.export(model, feats)
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "pydet.anchor_grid.default" in targets
    assert_same(exported.module()(*feats), model(*feats))
