import os

import pytest
from helpers import HAS_CUDA
from hypothesis import HealthCheck, settings

# Hypothesis budgets: "default" for local runs and CI, "thorough" for a long soak
# (HYPOTHESIS_PROFILE=thorough), "quick" for a smoke run.
_common = dict(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.register_profile("default", max_examples=60, **_common)
settings.register_profile("quick", max_examples=10, **_common)
settings.register_profile("thorough", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# A test with a CUDA path carries the `cuda` mark (directly, or as the "cuda" device parameter): it is
# skipped without a CUDA device, and `pytest -m cuda` (the GPU kit, .ci/gpu) selects all of them.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_collection_modifyitems(config, items):
    large = os.environ.get("PYDET_TEST_LARGE") == "1"
    skip_large = pytest.mark.skip(reason="large input; set PYDET_TEST_LARGE=1 to run")
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device and pydet's CUDA kernels")
    for item in items:
        if "slow" in item.keywords and not large:
            item.add_marker(skip_large)
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)
