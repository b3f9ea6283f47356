import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device to benchmark on: cpu (default) or cuda")


@pytest.fixture(scope="session")
def device(request):
    d = request.config.getoption("--device")
    if d.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return d
