"""pytest-benchmark suite for the box/IoU family: the same workloads as ``pydet bench``
(pydet.benchmarks.cases), each timed for pydet, the eager formula and torchvision (when installed).

    pytest bench/ --benchmark-group-by=group [--device cuda]
"""

import pytest

from pydet.benchmarks.cases import box_cases
from pydet.benchmarks.timing import synchronize

CASES = box_cases()
IMPLS = {"pydet": 20, "reference": 3, "torchvision": 3}  # rounds: the eager formulas take seconds


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_boxes(benchmark, case, impl, device):
    fn = getattr(case, impl)
    if fn is None:
        pytest.skip(f"no {impl} counterpart (torchvision not installed?)")
    inputs = case.make(device)

    def run():
        fn(*inputs)
        synchronize(device)

    benchmark.group = case.id
    benchmark.pedantic(run, rounds=IMPLS[impl], warmup_rounds=1)
