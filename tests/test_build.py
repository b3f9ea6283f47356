"""The compiled core: build information, the torch-version guard, the operator registry."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

import pydet


def test_build_info():
    info = pydet.build_info()
    assert info["version"] == pydet.__version__
    assert info["torch_version"] == torch.__version__
    assert isinstance(info["cuda"], bool)
    assert info["cuda"] == bool(info["cuda_archs"])
    assert info["compiler"] and info["build_type"]
    assert info["openmp"] is None or info["openmp"] >= 201107
    assert info["num_threads"] == torch.get_num_threads()
    assert info["cpu_kernel_variant"] in info["cpu_kernel_variants"]


def test_import_with_another_torch_explains_how_to_rebuild(tmp_path):
    code = "import torch; torch.__version__ = '0.0.0+other'; import pydet"
    # Run outside the source tree so the installed pydet is imported.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "ImportError: pydet was built against torch " + torch.__version__ in proc.stderr
    assert "but torch 0.0.0+other is installed" in proc.stderr
    assert "pip install --no-build-isolation --no-deps --force-reinstall --no-cache-dir" in proc.stderr


def test_version_guard_accepts_the_build_torch():
    assert pydet._version_mismatch("2.13.0+cpu", "2.13.0+cpu", "") is None
    err = pydet._version_mismatch("2.11.0+cu130", "2.13.0+cpu", "/nonexistent")
    assert isinstance(err, ImportError) and err.args[0].rstrip().endswith("pydet")


def test_operators_are_registered_under_torch_ops_pydet():
    for name in ("box_iou", "bbox_overlaps", "box_convert", "generalized_box_iou_loss"):
        op = getattr(torch.ops.pydet, name).default
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("pydet::box_iou", "Autograd")
    if pydet.build_info()["cuda"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key("pydet::box_iou", "CUDA")


# ---- CUDA selection at configure time (needs the source tree and cmake; no GPU) -----------------
SOURCE = pathlib.Path(__file__).resolve().parents[1]
needs_cmake = pytest.mark.skipif(
    shutil.which("cmake") is None or not (SOURCE / "CMakeLists.txt").exists(),
    reason="needs cmake and the sources",
)


def configure(tmp_path, **env):
    cmd = ["cmake", "-S", str(SOURCE), "-B", str(tmp_path), f"-DPython_EXECUTABLE={sys.executable}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    return proc.returncode, proc.stdout + proc.stderr


@needs_cmake
def test_pydet_cuda_required_fails_clearly_without_cuda_torch(tmp_path):
    if torch.version.cuda:
        pytest.skip("torch is a CUDA build")
    rc, out = configure(tmp_path, PYDET_CUDA="1")
    assert rc != 0
    assert "PYDET_CUDA=1 but torch" in out and "CPU-only build" in out


@needs_cmake
def test_pydet_cuda_off_builds_cpu_only(tmp_path):
    rc, out = configure(tmp_path, PYDET_CUDA="0")
    assert rc == 0, out
    assert "CUDA kernels OFF" in out


@needs_cmake
def test_pydet_cuda_rejects_unknown_values(tmp_path):
    rc, out = configure(tmp_path, PYDET_CUDA="maybe")
    assert rc != 0 and "PYDET_CUDA must be auto, 1 or 0" in out
