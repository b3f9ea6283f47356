"""The `pydet` command line: bench output files and info."""

import csv
import json
import sys

import pytest
import torch
from PIL import Image

import pydet
from pydet.cli import main


def test_bench_writes_json_and_csv(tmp_path, capsys):
    json_path, csv_path = tmp_path / "bench.json", tmp_path / "bench.csv"
    code = main(
        [
            "bench",
            "--quick",
            "--filter",
            "box_area",
            "--min-time",
            "0.01",
            "--json",
            str(json_path),
            "--csv",
            str(csv_path),
        ]
    )
    assert code == 0
    rows = json.loads(json_path.read_text())["results"]
    assert rows and all(r["op"] == "box_area" for r in rows)
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["size"] for r in table] == [r["size"] for r in rows]
    assert float(table[0]["pydet_ms"]) > 0
    assert "box_area" in capsys.readouterr().out


def test_bench_with_no_matching_case_fails_clearly(capsys):
    assert main(["bench", "--filter", "no-such-op"]) == 2
    assert "no case matches" in capsys.readouterr().err


def test_info_prints_the_build(capsys):
    assert main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["torch_version"] == torch.__version__


def test_bench_repeat_reports_the_spread_of_the_speedup(tmp_path, capsys):
    json_path, csv_path = tmp_path / "bench.json", tmp_path / "bench.csv"
    args = ["bench", "--filter", "box_area", "--min-time", "0.01", "--repeat", "2"]
    assert main([*args, "--json", str(json_path), "--csv", str(csv_path)]) == 0
    doc = json.loads(json_path.read_text())
    assert doc["environment"]["repeat"] == 2
    (row,) = doc["results"]
    assert row["speedup_min"] <= row["speedup"] <= row["speedup_max"]
    assert 0 < row["copy_fraction"] == pytest.approx(1 / row["x_floor"])
    with open(csv_path, newline="") as f:
        assert float(next(csv.DictReader(f))["speedup_max"]) == pytest.approx(row["speedup_max"])
    out, err = capsys.readouterr()
    assert f"({row['speedup_min']:.1f}–{row['speedup_max']:.1f})" in out
    assert "[2/2" in err  # one progress line per timing where stderr is not a terminal


def test_bench_contended_times_against_the_quiet_single_thread(tmp_path, capsys):
    json_path = tmp_path / "contended.json"
    args = ["bench", "--contended", "--filter", "box_area", "--min-time", "0.01", "--json", str(json_path)]
    assert main(args) == 0
    doc = json.loads(json_path.read_text())
    assert doc["environment"]["contended"] is True
    (row,) = doc["results"]
    assert row["slowdown"] == pytest.approx(row["contended_ms"] / row["quiet_1t_ms"])
    assert row["baseline"] == "eager formula" and row["vs_baseline"] > 0
    assert "quiet 1-thread ms" in capsys.readouterr().out


def test_bench_header_names_the_cpu_variant(capsys):
    assert main(["bench", "--filter", "box_area", "--min-time", "0.01"]) == 0
    info = pydet.build_info()
    assert f"CPU variant {info['cpu_capability']} = {info['cpu_kernel_variant']}" in capsys.readouterr().out


def test_bench_plot_writes_a_png(tmp_path):
    png = tmp_path / "speedups.png"
    assert main(["bench", "--filter", "box_area", "--min-time", "0.01", "--plot", str(png)]) == 0
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 100


def test_bench_plot_without_matplotlib_fails_before_timing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["bench", "--filter", "box_area", "--plot", "out.png"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == ["pydet bench: --plot needs matplotlib: pip install matplotlib"]
