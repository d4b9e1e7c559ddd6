"""The trainer end to end, as real processes: single process, torchrun DDP on gloo, resume, errors."""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import SMALL, env, last_json, metrics, train

from hpsearch.params import TrainConfig
from hpsearch.sweep.slots import Slot
from hpsearch.sweep.trial import TrialProcess
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


# A wsd run of 2 epochs whose cooldown is its 2nd (0.5 x 2): a branch at epoch 1 cools over 1 epoch (0.5 x 1,
# rounded up) from the same state, lr, data order and augmentation draws as the run's own epoch 2, so its cooled
# model must measure exactly what epoch 2 does.
WSD = [*SMALL, "--cifar_stem=false", "--augment=batched", "--sched=wsd", "--cooldown_frac=0.5"]


def _split(path: Path) -> tuple[list[dict], list[dict]]:
    """A metrics file's (epoch records, rung records)."""
    records = metrics(path)
    return [r for r in records if "epoch" in r], [r for r in records if "epoch" not in r]


def _same_weights(a: Path, b: Path) -> bool:
    ma, mb = (torch.load(p / "checkpoint.pt", weights_only=False)["model"] for p in (a, b))
    return ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


def _cooled_as_the_run(epochs: list[dict], rung: dict) -> bool:
    """Whether the rung at epoch 1 (cooled over one epoch) measured what the run's own cooldown, epoch 2, did."""
    two = epochs[1]
    return (rung["rung"], rung["rung_epochs"]) == (1, 1) and all(
        rung[f"rung_{k}"] == two[k] for k in ("train_loss", "val_loss", "val_acc", "val_acc5")
    )


def test_a_cooldown_branch_leaves_the_run_as_if_it_never_branched(cifar_root: Path, tmp_path: Path):
    runs = {}
    for name, extra in (("plain", []), ("branched", ["--cooldown_at=1"])):
        out, mfile = tmp_path / name, tmp_path / name / "metrics.jsonl"  # where a sweep's trial writes it
        p = train([*WSD, f"--data_dir={cifar_root}", "--epochs=2", *extra, f"--output_dir={out}",
                   f"--metrics_file={mfile}"], tmp_path)  # fmt: skip
        assert p.returncode == 0, p.stderr
        runs[name] = (out, *_split(mfile), last_json(p.stdout))
    (plain, plain_epochs, no_rungs, _), (branched, epochs, rungs, summary) = runs["plain"], runs["branched"]
    assert no_rungs == [] and "rungs" not in runs["plain"][3]
    assert len(rungs) == 1 and _cooled_as_the_run(epochs, rungs[0])
    assert rungs[0]["rung_val_loss"] != epochs[0]["val_loss"]  # the branch trained: its model is not the stable one
    assert summary["rungs"] == rungs
    # The run went on from the stable state, untouched: every epoch and the last weights as without the branch.
    assert epochs == [{**r, "epoch_time": e["epoch_time"], "img_per_sec": e["img_per_sec"]}
                      for r, e in zip(plain_epochs, epochs, strict=True)]  # fmt: skip
    assert _same_weights(plain, branched)
    assert torch.load(branched / "checkpoint.pt", weights_only=False)["rungs"] == rungs

    # The agent's reader takes the epochs as epochs, the rung's values with the record of its epoch.
    reader = TrialProcess(tmp_path / "branched", {}, Slot(gpus=None, nproc=1))
    rung_values = {k: v for k, v in rungs[0].items() if k.startswith("rung_")}
    assert reader.new_epochs() == [{**epochs[0], **rung_values}, *epochs[1:]]


def test_resume_after_a_branch_continues_its_history(cifar_root: Path, tmp_path: Path):
    base = [*WSD, f"--data_dir={cifar_root}", "--epochs=3"]
    ref = train([*base, f"--output_dir={tmp_path / 'ref'}"], tmp_path)  # never branched, never stopped
    assert ref.returncode == 0, ref.stderr

    out, mfile = tmp_path / "out", tmp_path / "m.jsonl"
    args = [*base, "--cooldown_at=1", f"--output_dir={out}", f"--metrics_file={mfile}"]
    proc = subprocess.Popen([sys.executable, "-m", "hpsearch.train", *args], cwd=tmp_path, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:  # epoch 1 and its branch done
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    stopped_after = torch.load(out / "checkpoint.pt", weights_only=False)["epoch"]
    assert stopped_after < 3

    p = train([*args, "--resume=true"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"resumed from {out / 'checkpoint.pt'} after epoch {stopped_after}" in p.stdout
    assert "rung 1" not in p.stdout  # the checkpoint holds the rung: its branch is not run again
    epochs, rungs = _split(mfile)
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and [r["rung"] for r in rungs] == [1]
    assert last_json(p.stdout)["rungs"] == rungs
    assert _same_weights(tmp_path / "ref", out)


def _wandb_records(run_dir: Path) -> list:
    """The records of an offline W&B run's transaction log (LevelDB's log format: 32 KiB blocks of chunks, each
    with a 7-byte header: CRC, length, type 1 = whole, 2-4 = first, middle, last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    out, pos, chunks, block = [], 7, b"", 32768  # after the file's own 7-byte header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks, pos = chunks + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            out.append(pb.Record.FromString(chunks))
            chunks = b""
    return out


def test_two_ddp_workers_run_a_branch_and_wandb_plots_rungs_apart(cifar_root: Path, tmp_path: Path):
    out, mfile = tmp_path / "out", tmp_path / "m.jsonl"
    args = [*WSD, f"--data_dir={cifar_root}", "--epochs=2", "--cooldown_at=1", "--augment=pil", "--wandb=offline",
            f"--output_dir={out}", f"--metrics_file={mfile}"]  # fmt: skip
    e = env()
    e.pop("WANDB_MODE")
    p = train(args, tmp_path, nproc=2, env=e)
    assert p.returncode == 0, p.stderr
    assert last_json(p.stdout)["world_size"] == 2
    epochs, rungs = _split(mfile)
    assert [r["epoch"] for r in epochs] == [1, 2] and len(rungs) == 1 and _cooled_as_the_run(epochs, rungs[0])

    records = _wandb_records(next((out / "wandb").glob("offline-run-*")))
    axes = {r.metric.name: r.metric.step_metric for r in records if r.HasField("metric") and r.metric.name}
    assert axes["rung/val_acc"] == "rung" and axes["rung/val_loss"] == "rung"
    rows = [
        {i.nested_key[0]: json.loads(i.value_json) for i in r.history.item} for r in records if r.HasField("history")
    ]
    assert [(row["epoch"], row.get("rung")) for row in rows] == [(1, 1), (2, None)]
    assert rows[0]["rung/val_acc"] == rungs[0]["rung_val_acc"] and rows[0]["val_acc"] == epochs[0]["val_acc"]


def test_cooldown_branches_without_wsd_exit_2_before_any_worker_trains(cifar_root: Path, tmp_path: Path):
    p = train([*SMALL, f"--data_dir={cifar_root}", "--epochs=3", "--cooldown_at=2"], tmp_path, nproc=2)
    assert p.returncode != 0
    msg = "hpsearch train: error: cooldown_at: cooldown branches need sched wsd (sched is cosine); allowed: sched=wsd"
    assert msg in p.stderr and p.stderr.index(msg) < p.stderr.index("ChildFailedError")
    line = _one_error_line(train([*SMALL, "--sched=wsd", "--epochs=3", "--cooldown_at=4"], tmp_path))
    assert line == "hpsearch train: error: cooldown_at: epoch 4 is above epochs (3); allowed: epochs 1..3"


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
