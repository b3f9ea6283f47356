"""The `pydet` command line: bench output files and info."""

import csv
import json

import torch

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
