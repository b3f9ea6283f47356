"""Timing primitives for ``pydet bench`` and the pytest-benchmark suites."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def paired_median_times(
    fns: list[Callable[[], object]],
    device: str,
    *,
    min_time: float = 0.3,
    max_rounds: int = 2000,
    min_rounds: int = 3,
) -> list[float]:
    """Median wall time (seconds) of each of ``fns``, taken in alternating rounds until every
    function has had ``min_time``: slow drifts of a shared machine then affect all of them alike, so
    their ratios stay meaningful. In a round each function runs twice and only its second call is
    timed, so it runs as it would in a loop of its own (its caches and allocator blocks warm, not
    those the other functions left behind)."""
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (
        rounds < max_rounds and time.perf_counter() - start < 2 * min_time * len(fns)
    ):
        for fn, ts in zip(fns, times, strict=True):
            fn()
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            ts.append(time.perf_counter() - t0)
        rounds += 1
    return [statistics.median(ts) for ts in times]


def copy_moving(nbytes: int, device: str) -> Callable[[], object]:
    """A copy that reads and writes ``nbytes`` in all (a buffer of half of them into another, so its
    footprint is ``nbytes`` too), the reference for memory-bound floors. The destination is
    allocated once, so its pages are already mapped."""
    n = max(1, nbytes // 8)
    src = torch.ones(n, device=device)
    dst = torch.zeros(n, device=device)
    return lambda: dst.copy_(src)
