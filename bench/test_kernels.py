"""pytest-benchmark suite over the workloads of ``pydet bench`` (pydet.benchmarks.cases, its
``--heavy`` cases included): boxes and IoU, NMS, anchors, box coding and matching, separable
convolution, detector post-processing and whole detectors, each timed for pydet, the baseline (the
eager formula or the reference kernel) and torchvision (when installed).

    pytest bench/ --benchmark-group-by=group [--device cuda] [-k anchors]
"""

import pytest

from pydet.benchmarks.cases import all_cases
from pydet.benchmarks.timing import synchronize

CASES = all_cases()
IMPLS = {"pydet": 20, "reference": 3, "torchvision": 3}  # rounds: the baselines take up to seconds


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", CASES, ids=[f"{c.family}-{c.id}" for c in CASES])
def test_kernel(benchmark, case, impl, device):
    fn = getattr(case, impl)
    if fn is None:
        pytest.skip(f"no {impl} counterpart (torchvision not installed?)")
    inputs = case.make(device)

    def run():
        fn(*inputs)
        synchronize(device)

    benchmark.group = case.id
    benchmark.pedantic(run, rounds=IMPLS[impl], warmup_rounds=1)
