"""The trainer end to end, as real processes: single process, torchrun DDP on gloo, resume, errors."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import SMALL, env, last_json, metrics, train

from hpsearch.params import TrainConfig
from hpsearch.train.data import ToDevice, load_dataset
from hpsearch.train.loop import evaluate
from hpsearch.train.model import build_model


def test_ddp_two_workers_count_each_validation_image_once(cifar_root: Path, tmp_path: Path):
    out, mfile = tmp_path / "out", tmp_path / "metrics.jsonl"
    p = train(
        [
            *SMALL,
            f"--data_dir={cifar_root}",
            "--epochs=2",
            f"--output_dir={out}",
            f"--metrics_file={mfile}",
            "--val_split=0",
        ],  # (validate on the 101 test images: an odd count)
        tmp_path,
        nproc=2,
    )
    assert p.returncode == 0, p.stderr
    summary = last_json(p.stdout)
    assert summary["world_size"] == 2 and summary["epochs"] == 2
    last = metrics(mfile)[-1]
    assert [r["epoch"] for r in metrics(mfile)] == [1, 2]

    # One process evaluates the checkpoint the two workers saved: the hit counts must agree, and
    # with 101 images (odd) a padded sampler would have counted one image twice.
    cfg = TrainConfig(model="test_resnet", data_dir=str(cifar_root), val_split=0)
    data = load_dataset(cfg)
    model = build_model(cfg, data.num_classes)
    model.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=False)["model"])
    x = torch.from_numpy(data.val.images).permute(0, 3, 1, 2)
    _, acc, _ = evaluate(model, x, torch.from_numpy(data.val.labels), ToDevice(data, torch.device("cpu")), 32, False)
    n = len(data.val)
    assert n == 101
    hits_ddp, hits_one = last["val_acc"] * n / 100, acc * n / 100
    assert abs(hits_ddp - round(hits_ddp)) < 1e-6
    assert round(hits_ddp) == round(hits_one)
    assert abs(summary["test_acc"] * n / 100 - round(summary["test_acc"] * n / 100)) < 1e-6  # the same, at the end


def test_learns_real_digits_and_logs_an_offline_wandb_run(tmp_path: Path):
    out = tmp_path / "out"
    args = [
        "--dataset=digits",
        "--model=test_resnet",
        "--cifar_stem=false",  # 4x cheaper steps; it still learns digits in 3 epochs
        "--epochs=3",
        "--batch_size=64",
        "--lr=0.1",
        "--aa=none",
        "--cutmix=0",
        "--hflip=0",
        "--warmup_epochs=0",
        "--workers=0",
        "--wandb=offline",
        f"--output_dir={out}",
    ]
    e = env()
    e.pop("WANDB_MODE")
    p = train(args, tmp_path, env=e)
    assert p.returncode == 0, p.stderr
    summary = last_json(p.stdout)
    assert summary["best_acc"] > 40, summary  # 10 classes: chance is 10%
    for key in ("best_acc", "best_epoch", "epochs", "world_size", "img_per_sec", "wall_s"):
        assert key in summary
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1


def test_resume_after_kill_finishes_the_same_schedule(tmp_path: Path):
    base = [
        "--dataset=synthetic",
        "--train_subset=1024",
        "--val_subset=64",
        "--model=test_resnet",
        "--cifar_stem=false",
        "--batch_size=32",
        "--workers=0",
        "--aa=none",
        "--epochs=3",
        "--warmup_epochs=1",
    ]
    ref = train([*base, f"--output_dir={tmp_path / 'ref'}", f"--metrics_file={tmp_path / 'ref.jsonl'}"], tmp_path)
    assert ref.returncode == 0, ref.stderr

    out, mfile = tmp_path / "out", tmp_path / "m.jsonl"
    args = [*base, f"--output_dir={out}", f"--metrics_file={mfile}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch.train", *args],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:  # epoch 1 saved (written async)
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert (out / "checkpoint.pt").exists()

    p = train([*args, "--resume=true"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "resumed from" in p.stdout
    assert last_json(p.stdout)["epochs"] == 3
    got, want = metrics(mfile), metrics(tmp_path / "ref.jsonl")
    assert [r["epoch"] for r in got] == [1, 2, 3]
    assert [round(r["lr"], 12) for r in got] == [round(r["lr"], 12) for r in want]


def test_divergence_stops_at_once_with_the_epoch_and_step(cifar_root: Path, tmp_path: Path):
    mfile = tmp_path / "m.jsonl"
    p = train(
        [
            *SMALL,
            f"--data_dir={cifar_root}",
            "--epochs=50",
            "--lr=1e30",
            f"--metrics_file={mfile}",
            f"--output_dir={tmp_path / 'out'}",
        ],
        tmp_path,
    )
    assert p.returncode == 1
    assert "diverged: non-finite training loss at epoch 1, step" in p.stderr
    assert not mfile.exists() or metrics(mfile) == []


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("hpsearch train: error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_unknown_key_names_it_and_what_is_allowed(tmp_path: Path):
    line = _one_error_line(train(["--learning-rate=0.1"], tmp_path))
    assert "unknown key 'learning_rate'" in line and "allowed:" in line and "weight_decay" in line


def test_bad_value_names_key_and_range(tmp_path: Path):
    line = _one_error_line(train(["--momentum=1.5"], tmp_path))
    assert "momentum: '1.5'" in line and "< 1" in line
    line = _one_error_line(train(["--sched", "linear"], tmp_path))
    assert "sched" in line and "cosine" in line


def test_corrupt_cifar_file_is_named(cifar_root: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(cifar_root, broken)
    train_file = broken / "cifar-100-python" / "train"
    train_file.write_bytes(train_file.read_bytes()[:5000])  # truncated download
    line = _one_error_line(train([*SMALL, f"--data_dir={broken}"], tmp_path))
    assert str(train_file) in line and "not a readable CIFAR" in line


def test_indivisible_batch_under_torchrun_prints_the_workers_line_first(cifar_root: Path, tmp_path: Path):
    p = train([*SMALL, f"--data_dir={cifar_root}", "--batch_size=33"], tmp_path, nproc=2)
    assert p.returncode != 0
    msg = "hpsearch train: error: batch_size: 33 does not split across 2 ranks; allowed: a multiple of 2"
    assert msg in p.stderr
    assert p.stderr.index(msg) < p.stderr.index("ChildFailedError")


def test_help_lists_every_hyperparameter(tmp_path: Path):
    p = subprocess.run([sys.executable, "-m", "hpsearch.cli", "train", "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for key in TrainConfig.__dataclass_fields__:
        assert f"--{key}=" in p.stdout
