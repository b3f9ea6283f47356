"""Every CPU variant this machine can run (PYDET_CPU_CAPABILITY, simd.h) gives the same bits: each
runs tests/op_calls.py (every operator, forward and backward, on inputs spanning several vector
runs) in a fresh process, and the results must equal the widest variant's exactly. CI also runs the
op test files under each narrower variant (.ci/run)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pydet

CAPABILITIES = ("avx512", "avx2", "default")  # widest first
HERE = Path(__file__).parent


def _run(capability: str, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYDET_CPU_CAPABILITY": capability}
    cmd = [sys.executable, str(HERE / "op_calls.py"), "--device", "cpu", "--save", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=HERE)


def supported() -> list[str]:
    running = pydet.build_info()["cpu_capability"]
    return list(CAPABILITIES[CAPABILITIES.index(running) :])


def test_capability_switch_narrows_and_warns(tmp_path):
    for capability in supported():
        env = {**os.environ, "PYDET_CPU_CAPABILITY": capability}
        code = "import pydet; print(pydet.build_info()['cpu_capability'])"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        assert out.stdout.strip() == capability and not out.stderr, out.stderr
    compiled = len(pydet.build_info()["cpu_kernel_variants"]) == len(CAPABILITIES)
    too_wide = "asks for more than this CPU supports" if compiled else "was not compiled into this build"
    for asked, why in (("sse9", "is not a CPU capability pydet knows"), ("avx512", too_wide)):
        if asked in supported():
            continue
        env = {**os.environ, "PYDET_CPU_CAPABILITY": asked}
        code = "import pydet"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        assert f"PYDET_CPU_CAPABILITY={asked} {why}" in out.stderr and "running" in out.stderr, out.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYDET_CPU_CAPABILITY"}
    env["ATEN_CPU_CAPABILITY"] = "default"
    code = "import pydet; print(pydet.build_info()['cpu_capability'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.stdout.strip() == "default", out.stderr


@pytest.mark.skipif(len(supported()) < 2, reason="this build or CPU has one variant")
def test_every_variant_gives_the_same_bits(tmp_path):
    results = {}
    for capability in supported():
        proc = _run(capability, tmp_path / f"{capability}.pt")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"on cpu ({capability})" in proc.stdout, proc.stdout
        results[capability] = torch.load(tmp_path / f"{capability}.pt")
    widest, *narrower = supported()
    for capability in narrower:
        for k, (want, got) in enumerate(zip(results[widest], results[capability], strict=True)):
            for w, g in zip(want, got, strict=True):
                torch.testing.assert_close(
                    g,
                    w,
                    rtol=0,
                    atol=0,
                    equal_nan=True,
                    msg=lambda m, k=k, c=capability: f"call {k}, {c}: {m}",
                )
