"""Runs benchmark cases side by side in one process and formats the results."""

from __future__ import annotations

import csv
import datetime
import json
import platform
import statistics
import sys
from collections.abc import Iterable

import torch

import pydet
from pydet.benchmarks.cases import Case
from pydet.benchmarks.timing import copy_moving, paired_median_times


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    return 0


def _agree(a, b, atol: float = 1e-5) -> bool:
    if isinstance(a, (tuple, list)):
        return all(_agree(x, y, atol) for x, y in zip(a, b, strict=True))
    a, b = a.cpu(), b.cpu()
    if not (a.is_floating_point() and b.is_floating_point()):
        return torch.equal(a.long(), b.long())
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=1e-4, atol=atol, equal_nan=True)


def run_case(case: Case, device: str, min_time: float) -> dict:
    inputs = case.make(device)
    out = case.pydet(*inputs)
    row = {"op": case.name, "size": case.size, "device": device}
    if device == "cpu":  # the SIMD variant the kernels ran (PYDET_CPU_CAPABILITY narrows it)
        row["cpu_capability"] = pydet.build_info()["cpu_capability"]
    # pydet and its baselines are timed in alternation, so they share the machine's drifts.
    fns = [lambda: case.pydet(*inputs)]
    row["agrees_with_reference"] = True
    if case.reference is not None:
        row["agrees_with_reference"] = _agree(out, case.reference(*inputs), case.agree_atol)
        fns.append(lambda: case.reference(*inputs))
    if case.torchvision is not None:
        fns.append(lambda: case.torchvision(*inputs))
    if case.memory_bound:
        # the floor: a copy moving the bytes the op reads + writes, timed in the same alternation
        moved = _nbytes(inputs) + _nbytes(out)
        fns.append(copy_moving(moved, device))
    times = [1e3 * t for t in paired_median_times(fns, device, min_time=min_time)]
    row["pydet_ms"] = times.pop(0)
    if case.reference is not None:
        row["reference_ms"] = times.pop(0)
        row["speedup"] = row["reference_ms"] / row["pydet_ms"]
    if case.torchvision is not None:
        row["torchvision_ms"] = times.pop(0)
        row["speedup_vs_torchvision"] = row["torchvision_ms"] / row["pydet_ms"]
    if case.memory_bound:
        row["bytes_moved"] = moved
        row["floor_ms"] = times.pop(0)
        row["copy_gbps"] = moved / row["floor_ms"] / 1e6
        row["x_floor"] = row["pydet_ms"] / row["floor_ms"]
        row["copy_fraction"] = 1 / row["x_floor"]  # the fraction of the copy's bandwidth the op achieves
    return row


_BASELINES = (("reference_ms", "speedup"), ("torchvision_ms", "speedup_vs_torchvision"))


def merge_runs(runs: list[dict]) -> dict:
    """One row from several runs of a case: the median of each function's medians, and for each
    speed-up the median and the range (``speedup_min``/``speedup_max``) of the runs' paired ratios,
    which stay meaningful when the machine's speed drifts between runs."""
    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])
    row["agrees_with_reference"] = all(r["agrees_with_reference"] for r in runs)
    row["pydet_ms"] = statistics.median(r["pydet_ms"] for r in runs)
    for ms, speedup in _BASELINES:
        if ms in row:
            row[ms] = statistics.median(r[ms] for r in runs)
            ratios = [r[speedup] for r in runs]
            row[speedup] = statistics.median(ratios)
            row[f"{speedup}_min"], row[f"{speedup}_max"] = min(ratios), max(ratios)
    if "floor_ms" in row:  # like the speed-ups: the median of the runs' paired ratios
        row["floor_ms"] = statistics.median(r["floor_ms"] for r in runs)
        row["x_floor"] = statistics.median(r["x_floor"] for r in runs)
        row["copy_fraction"] = 1 / row["x_floor"]
    return row


def run(cases: Iterable[Case], device: str, min_time: float, *, repeat: int = 1, progress=None) -> list[dict]:
    """One row per case. With ``repeat`` > 1 the whole list is timed that many times over, so the runs
    of a case lie minutes apart rather than back to back and their spread shows the machine's drift
    too; ``merge_runs`` combines them. ``progress(k, total, case)`` is called before each of the
    ``total`` timings and once more with ``case=None`` at the end."""
    cases = list(cases)
    total = repeat * len(cases)
    runs: list[list[dict]] = [[] for _ in cases]
    for r in range(repeat):
        for k, case in enumerate(cases):
            if progress:
                progress(r * len(cases) + k, total, case)
            runs[k].append(run_case(case, device, min_time))
    if progress:
        progress(total, total, None)
    return [merge_runs(rs) for rs in runs]


def environment(device: str) -> dict:
    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pydet": pydet.build_info(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except Exception:
        env["torchvision"] = None
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _speedup(row: dict, key: str) -> str:
    """``12.3x``, or ``12.3x (11.8–12.9)`` with the range over repeated runs."""
    if key not in row:
        return "-"
    text = f"{row[key]:.1f}x"
    if f"{key}_min" in row:
        text += f" ({row[f'{key}_min']:.1f}–{row[f'{key}_max']:.1f})"
    return text


def format_table(rows: list[dict]) -> str:
    has_tv = any("torchvision_ms" in r for r in rows)
    header = ["op", "size", "pydet ms", "baseline ms", "speed-up"]
    if has_tv:
        header += ["torchvision ms", "vs tv"]
    header += ["floor ms", "of copy bw"]
    lines = [header]
    for r in rows:
        line = [
            r["op"] + ("" if r["agrees_with_reference"] else " (MISMATCH)"),
            r["size"],
            _fmt(r["pydet_ms"], ".3f"),
            _fmt(r.get("reference_ms"), ".3f"),
            _speedup(r, "speedup"),
        ]
        if has_tv:
            line += [_fmt(r.get("torchvision_ms"), ".3f"), _speedup(r, "speedup_vs_torchvision")]
        line += [_fmt(r.get("floor_ms"), ".3f"), _fmt(r.get("copy_fraction"), ".0%")]
        lines.append(line)
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
    out = []
    for k, row in enumerate(lines):
        out.append(
            " | ".join(
                str(c).ljust(w) if i < 2 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if k == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[dict]) -> str:
    """The same table as Markdown, for README.md and bench/results/."""
    text = format_table(rows).splitlines()
    head = "| " + " | ".join(c.strip() for c in text[0].split(" | ")) + " |"
    sep = "|" + "|".join("---" for _ in text[0].split(" | ")) + "|"
    body = ["| " + " | ".join(c.strip() for c in line.split(" | ")) + " |" for line in text[2:]]
    return "\n".join([head, sep, *body])


def write_csv(path: str, rows: list[dict]) -> None:
    """One line per case; columns are the union of the rows' keys (first-seen order)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, env: dict, rows: list[dict], memory_rows: list[dict] = ()) -> None:
    doc = {"environment": env, "results": rows}
    if memory_rows:
        doc["peak_memory"] = list(memory_rows)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
