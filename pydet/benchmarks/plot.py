"""``pydet bench --plot``: the speed-ups as grouped bars, one group per case (needs matplotlib)."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

# (row key, legend label): one bar per baseline the case has
_SERIES = (("speedup", "vs eager PyTorch reference"), ("speedup_vs_torchvision", "vs torchvision"))


def plot_speedups(rows: list[dict], env: dict, path: str) -> None:
    """Write a PNG of every case's speed-ups on a log axis, with a line at 1x (no faster than the
    baseline) and, after ``--repeat``, the range over the runs as error bars. Cases without a
    baseline have nothing to show and are left out."""
    rows = [r for r in rows if any(key in r for key, _ in _SERIES)]
    series = [(key, label) for key, label in _SERIES if any(key in r for r in rows)]
    # A figure on the Agg canvas directly, not pyplot: no display needed and no global backend switched.
    fig = Figure(figsize=(max(6.0, 0.35 * len(rows) + 2.0), 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for s, (key, label) in enumerate(series):
        have = [(k, r) for k, r in enumerate(rows) if key in r]
        offset = (s - (len(series) - 1) / 2) * width
        err = None
        if all(f"{key}_min" in r for _, r in have):  # after --repeat: the range over the runs
            err = [[r[key] - r[f"{key}_min"] for _, r in have], [r[f"{key}_max"] - r[key] for _, r in have]]
        xs, ys = [k + offset for k, _ in have], [r[key] for _, r in have]
        ax.bar(xs, ys, width, yerr=err, capsize=2 if err else 0, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}x"))
    ax.set_ylabel("speed-up of pydet (baseline time / pydet time)")
    ax.set_xticks(
        range(len(rows)),
        [r["op"] + f"[{r['size']}]" + ("" if r["agrees_with_reference"] else " (MISMATCH)") for r in rows],
        rotation=60,
        ha="right",
        rotation_mode="anchor",
        fontsize=8,
    )
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.grid(axis="y", which="both", alpha=0.3)
    if series:
        ax.legend()
    where = env.get("gpu") or f"{env['processor']}, CPU variant {env['pydet'].get('cpu_capability', '?')}"
    ax.set_title(
        f"pydet bench on {env['device']} ({where}), {env['threads']} threads\n"
        f"torch {env['torch']}, torchvision {env.get('torchvision') or 'not installed'}, {env['date'][:10]}",
        fontsize=9,
    )
    fig.savefig(path, dpi=120)
