"""``pydet bench --contended``: every case while a busy-loop process occupies one core, against the
case's own quiet single-thread time. Detection post-processing often runs beside other work (a
serving process, a DataLoader worker); a parallel region over a small input then waits for a thread
the OS has not scheduled, so an op can end up slower than on one thread."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import torch

from pydet.benchmarks.cases import Case
from pydet.benchmarks.timing import paired_median_times


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """A process spinning on one core for the duration (started and stopped here)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(cases: list[Case], device: str, min_time: float, progress=None) -> list[dict]:
    """One row per case: ``quiet_1t_ms`` (pydet on one thread, nothing else running), then with a
    busy core and the default thread count ``contended_ms`` and the baseline's ``baseline_ms``
    (torchvision where it has the op, else the eager formula), timed in alternation;
    ``slowdown`` = contended / quiet single-thread, ``vs_baseline`` = baseline / pydet."""
    inputs = [case.make(device) for case in cases]
    rows = [{"op": c.name, "size": c.size, "device": device} for c in cases]
    total = 2 * len(cases)
    with threads(1):
        for k, (case, args) in enumerate(zip(cases, inputs, strict=True)):
            if progress:
                progress(k, total, case)
            (t,) = paired_median_times(
                [lambda case=case, args=args: case.pydet(*args)], device, min_time=min_time
            )
            rows[k]["quiet_1t_ms"] = 1e3 * t
    with busy_core():
        for k, (case, args) in enumerate(zip(cases, inputs, strict=True)):
            if progress:
                progress(len(cases) + k, total, case)
            baseline = case.torchvision or case.reference
            fns = [lambda case=case, args=args: case.pydet(*args)]
            if baseline:
                fns.append(lambda baseline=baseline, args=args: baseline(*args))
            times = [1e3 * t for t in paired_median_times(fns, device, min_time=min_time)]
            row = rows[k]
            row["contended_ms"] = times[0]
            row["slowdown"] = times[0] / row["quiet_1t_ms"]
            if baseline:
                row["baseline"] = "torchvision" if case.torchvision else "eager formula"
                row["baseline_ms"] = times[1]
                row["vs_baseline"] = times[1] / times[0]
    if progress:
        progress(total, total, None)
    return rows


def format_table(rows: list[dict]) -> str:
    header = ["op", "size", "quiet 1-thread ms", "contended ms", "slowdown", "baseline ms", "vs baseline"]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r["op"],
                r["size"],
                f"{r['quiet_1t_ms']:.3f}",
                f"{r['contended_ms']:.3f}",
                f"{r['slowdown']:.2f}x",
                f"{r['baseline_ms']:.3f} ({r['baseline']})" if "baseline_ms" in r else "-",
                f"{r['vs_baseline']:.1f}x" if "vs_baseline" in r else "-",
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = [
        " | ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    ]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)
