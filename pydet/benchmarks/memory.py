"""Peak extra host memory of a workload, measured in a fresh interpreter.

Each workload runs in its own ``python -c`` process: the inputs are built and a small warm-up call
loads every library; then the peak resident set is reset (Linux: ``/proc/self/clear_refs``), the
workload runs once, and the peak (``VmHWM``) minus the resident set before the call is its peak
extra memory. A fresh process keeps earlier allocations (and the allocator's cached blocks) out of
the figure; everything the call allocates, torch tensors and the kernels' own scratch alike, is
counted. Linux only.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

_HARNESS = """
import torch
from pydet.benchmarks.cases import random_boxes
def status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
torch.set_num_threads({threads})
gt, anchors = random_boxes({m}, "cpu", 0), random_boxes({n}, "cpu", 1)
{setup}
run(gt[:2], anchors[:100])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current resident set
before = status_kb("VmRSS")
out = run(gt, anchors)
print((status_kb("VmHWM") - before) * 1024)
"""

# name -> code defining run(gt, anchors); Matcher(0.5, 0.4, allow_low_quality_matches=True) as in the
# timing case.
MATCH_WORKLOADS = {
    "Matcher.match_boxes (fused, no matrix)": (
        "from pydet.matchers.torchvision import Matcher\n"
        "run = Matcher(0.5, 0.4, allow_low_quality_matches=True).match_boxes"
    ),
    "box_iou + Matcher (eager matrix path)": (
        "from pydet.benchmarks import reference as R\n"
        "def run(gt, anchors):\n"
        "    return R.match_torchvision(R.box_iou(gt, anchors), 0.5, 0.4, True)"
    ),
}


def peak_extra_bytes(setup: str, m: int, n: int, threads: int) -> int:
    """Peak extra resident memory of ``run(gt [m, 4], anchors [n, 4])`` defined by ``setup`` (Linux)."""
    code = _HARNESS.format(setup=setup, m=m, n=n, threads=threads)
    # cwd: not the source tree, whose pydet/ (no compiled core) would shadow the installed package
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()
    )
    return int(done.stdout.strip().splitlines()[-1])


def match_memory_rows(m: int = 1000, n: int = 200_000, threads: int = 2) -> list[dict]:
    """One row per matcher workload: peak extra memory for ``m`` ground truth x ``n`` anchors."""
    return [
        {
            "workload": name,
            "size": f"{m}x{n}",
            "peak_extra_mb": peak_extra_bytes(setup, m, n, threads) / 2**20,
        }
        for name, setup in MATCH_WORKLOADS.items()
    ]
