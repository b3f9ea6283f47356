"""`pydet train`: a few steps end to end, checkpoints (atomic, resumable), clear errors, and two
processes under torchrun (DistributedDataParallel on gloo) ending with identical weights."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch

from pydet import checkpoint as ckpt
from pydet import train

# A model and data small enough for a few steps in a second or two.
TINY = [
    "--train-images",
    "8",
    "--val-images",
    "4",
    "--image-size",
    "64",
    "--width-mult",
    "0.25",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "1",
]


def test_train_writes_checkpoint_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([*TINY, "--epochs", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert 0.0 <= metrics["mAP50"] <= 1.0 and 0.0 <= metrics["mAP"] <= metrics["mAP50"]
    checkpoint = ckpt.load_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["model"] == "ssdlite320_mobilenet_v2"
    assert checkpoint["classes"] == ["circle", "square", "triangle", "cross"]
    assert checkpoint["image_size"] == 64
    model, _ = ckpt.model_from_checkpoint(out / "last.pt")
    assert model.transform.fixed_size == (64, 64)
    assert "mAP@.5" in capsys.readouterr().out


def test_resume_continues_the_schedule(tmp_path):
    out = tmp_path / "run"
    assert train.main([*TINY, "--epochs", "1", "--out", str(out), "--no-eval"]) == 0
    first = ckpt.load_checkpoint(out / "last.pt")
    args = [*TINY, "--epochs", "2", "--out", str(out), "--no-eval", "--resume", str(out / "last.pt")]
    assert train.main(args) == 0
    second = ckpt.load_checkpoint(out / "last.pt")
    assert second["epoch"] == 2
    assert second["scheduler"]["last_epoch"] == 4  # 2 steps per epoch, continued, not restarted
    assert first["scheduler"]["last_epoch"] == 2
    changed = [k for k, v in first["state_dict"].items() if not torch.equal(v, second["state_dict"][k])]
    assert changed


def test_resume_from_another_model_is_one_clear_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([*TINY, "--epochs", "1", "--out", str(out), "--no-eval"]) == 0
    capsys.readouterr()
    args = [*TINY, "--image-size", "96", "--resume", str(out / "last.pt"), "--out", str(out)]
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "image size 64" in err and "last.pt" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/coco"], "not a directory"),
        (["--resume", "/nonexistent/last.pt"], "checkpoint not found"),
        (["--sync-bn"], "--sync-bn needs CUDA"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    assert train.main([*TINY, "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pydet train:") and message in err and "\n" not in err


def test_resume_from_foreign_file(tmp_path, capsys):
    bogus = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bogus)
    assert train.main([*TINY, "--out", str(tmp_path), "--resume", str(bogus)]) == 2
    assert "not a pydet training checkpoint" in capsys.readouterr().err


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"epoch": 1})

    def interrupted(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["epoch"] == 1  # the previous checkpoint survived
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # and no temporary is left


def test_lr_schedule_warms_up_then_decays_to_zero():
    factors = [train.lr_factor(s, 10, 100) for s in range(101)]
    assert factors[0] == pytest.approx(0.001) and factors[10] == 1.0 and factors[100] == pytest.approx(0.0)
    assert all(a <= b for a, b in itertools.pairwise(factors[:11]))
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))


def test_torchrun_two_processes_agree_on_weights(tmp_path):
    """Two gloo processes, a few steps each on different shards: DDP must leave identical weights."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pydet.train",
        *TINY,
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # cwd: `-m` puts the working directory first on sys.path, and the source checkout's pydet/ has no
    # compiled core
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    digests = metrics["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert metrics["steps"] == 4  # 8 images / (2 processes x batch 2) = 2 steps per epoch
    assert "mAP" in metrics  # evaluated over both ranks' shares of the val split
    assert result.stdout.count("epoch 1/2:") == 1  # rank 0 logs, rank 1 does not


def _write_coco_split(root, split: str, n: int) -> None:
    """A COCO-format split (json + PNG folder) drawn from SyntheticShapes."""
    from PIL import Image

    from pydet.data import SyntheticShapes, coco_ground_truth

    shapes = SyntheticShapes(n, 64, split=split, seed=1, min_size=16, max_size=48)
    doc = coco_ground_truth(shapes)
    (root / split).mkdir(parents=True)
    for entry, (image, _) in zip(doc["images"], shapes, strict=True):
        entry["file_name"] = f"{entry['id']:04d}.png"
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / split / entry["file_name"])
    (root / f"{split}.json").write_text(json.dumps(doc))


def test_train_on_a_coco_format_directory(tmp_path):
    data = tmp_path / "coco"
    _write_coco_split(data, "train", 8)
    _write_coco_split(data, "val", 4)
    out = tmp_path / "run"
    args = [*TINY, "--data", str(data), "--image-size", "64", "--epochs", "1", "--out", str(out)]
    assert train.main(args) == 0
    assert ckpt.load_checkpoint(out / "last.pt")["classes"] == ["circle", "square", "triangle", "cross"]
    assert "mAP50" in json.loads((out / "metrics.json").read_text())


def test_coco_directory_without_annotations(tmp_path, capsys):
    (tmp_path / "coco").mkdir()
    assert train.main([*TINY, "--data", str(tmp_path / "coco"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no train annotations" in err and "instances_train2017.json" in err


def test_cli_forwards_train(capsys):
    from pydet import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--object-size" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "train a detector" in capsys.readouterr().out


def test_amp_trains_and_evaluates(tmp_path):
    """bfloat16 autocast on CPU (float16 with a gradient scaler on CUDA)."""
    out = tmp_path / "run"
    assert train.main([*TINY, "--epochs", "1", "--amp", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
