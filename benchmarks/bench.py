"""Throughput benchmark (not a test): `python -m benchmarks.bench [--epochs 4] [--model resnet50] ...`

(a) the training step alone: forward, soft-target loss, backward and SGD step on random tensors that
    already sit on the device, as the trainer configures them (bf16 autocast, channels_last, compile);
(a-ref) the step as `../shared/gpu/baseline.py` (from the checkout's root) times it (torch SGD over one
    parameter group, hard-label cross-entropy), same model and settings: the difference between the two is the
    step's own cost;
(b) the whole trainer (`hpsearch.train.loop.run`) on the synthetic dataset with the reference recipe's
    augmentation (AutoAugment `original`, hflip, CutMix 1.0), once per data path in --paths:
    `pil` (DataLoader workers), `batched` (augmentation on the device, no workers), and `PATH@N`, the same
    in a child process pinned to the first N cores this process may use (sched_setaffinity), as when
    several GPUs share a node's cores. Images/s are the median of the epochs after the first (which
    compiles and starts workers): the train phase, and (b') the whole epoch with evaluation and checkpoint.
Prints a table and each row's ratio to (a): how much of the GPU the data path leaves unused.

A CPU smoke run (tests/test_benchmarks.py runs one): python -m benchmarks.bench --device cpu --model test_resnet
--batch-size 32 --steps 2 --warmup 1 --epochs 2 --train-images 256 --val-images 64 --no-compile --paths pil batched
batched@2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpsearch.params import TrainConfig  # (torch, timm and the trainer are imported where used: --help needs none)

REPO = Path(__file__).resolve().parents[1]  # the checkout: the pinned child runs this module from there


def bench_step(cfg: TrainConfig, steps: int, warmup: int, reference: bool = False) -> float:
    """Images/s of the bare training step on device-resident random batches: the trainer's step, or with
    `reference` baseline.py's (torch SGD on all parameters alike, integer labels)."""
    import torch
    import torch.nn as nn
    from timm.loss import SoftTargetCrossEntropy

    from hpsearch.train.loop import make_optimizer
    from hpsearch.train.model import build_model

    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    cuda = device.type == "cuda"
    if cuda:  # as the trainer (and baseline.py) set them
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    fmt = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(cfg, 100).to(device=device, memory_format=fmt)
    if reference:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        loss_fn: nn.Module = nn.CrossEntropyLoss()
    else:
        optimizer, loss_fn = make_optimizer(model, cfg), SoftTargetCrossEntropy()
    fwd = torch.compile(model) if cuda and cfg.compile else model
    gen = torch.Generator(device=device).manual_seed(0)
    batches = []
    for _ in range(4):
        x = torch.randn(cfg.batch_size, 3, 32, 32, device=device, generator=gen).contiguous(memory_format=fmt)
        if reference:
            y = torch.randint(0, 100, (cfg.batch_size,), device=device, generator=gen)
        else:
            y = torch.softmax(torch.randn(cfg.batch_size, 100, device=device, generator=gen), dim=1)
        batches.append((x, y))

    def step(i: int) -> torch.Tensor:
        x, y = batches[i % 4]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and cfg.amp):
            loss = loss_fn(fwd(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for i in range(warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert torch.isfinite(loss).item()
    return cfg.batch_size * steps / dt


def bench_trainer(cfg: TrainConfig) -> dict[str, float]:
    """Median images/s of the trainer's epochs after the first (train phase, and whole epoch)."""
    from hpsearch.train.loop import run

    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        run(dataclasses.replace(cfg, output_dir=tmp, metrics_file=str(metrics)))
        records = [json.loads(line) for line in metrics.read_text().splitlines()][1:]
    images = cfg.train_subset // cfg.batch_size * cfg.batch_size
    return {
        "train": statistics.median(r["img_per_sec"] for r in records),
        "epoch": statistics.median(images / r["epoch_time"] for r in records),
    }


def bench_pinned(args: argparse.Namespace, path: str, cores: int) -> dict[str, float]:
    """bench_trainer for `path` in a child process that may use only the first `cores` of ours. The child
    starts pinned, so torch's thread pool and the PIL path's default worker count see those cores only."""
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    child = [sys.executable, "-m", "benchmarks.bench", "--trainer-json", "--paths", path]
    for flag in ("model", "batch_size", "epochs", "train_images", "val_images", "workers", "aa", "device"):
        child += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    child += ["--no-compile"] if args.no_compile else []
    p = subprocess.run(
        child,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, allowed),
        check=True,
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50, help="timed steps of (a)")
    ap.add_argument("--warmup", type=int, default=15, help="untimed steps of (a)")
    ap.add_argument("--epochs", type=int, default=4, help="trainer epochs of (b); the first is not counted")
    ap.add_argument("--train-images", type=int, default=50000, help="synthetic training images per epoch")
    ap.add_argument("--val-images", type=int, default=2048, help="synthetic validation images")
    ap.add_argument("--workers", type=int, default=-1, help="PIL path's loader workers (-1: the trainer's default)")
    ap.add_argument("--aa", default="original", help="trainer's AutoAugment policy in (b)")
    ap.add_argument(
        "--paths", nargs="+", default=["pil", "batched", "batched@2"], help="data paths of (b): pil, batched, P@CORES"
    )
    ap.add_argument("--only-trainer", action="store_true", help="skip (a) and (a-ref)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--trainer-json", action="store_true", help=argparse.SUPPRESS)  # bench_pinned's child
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error(f"--epochs {args.epochs}: too few; allowed: 2 or more (the first, which compiles, is not counted)")
    import torch

    cfg = TrainConfig(
        model=args.model,
        dataset="synthetic",
        batch_size=args.batch_size,
        epochs=args.epochs,
        train_subset=args.train_images,
        val_subset=args.val_images,
        workers=args.workers,
        aa=args.aa,
        compile=not args.no_compile,
        device=args.device,
        wandb="disabled",
    )
    if args.trainer_json:
        print(json.dumps(bench_trainer(dataclasses.replace(cfg, augment=args.paths[0]))))
        return
    nan = float("nan")
    step_ips = nan if args.only_trainer else bench_step(cfg, args.steps, args.warmup)
    ref_ips = nan if args.only_trainer else bench_step(cfg, args.steps, args.warmup, reference=True)
    rows = [("(a) training step alone, data on the device", step_ips), ("(a-ref) baseline.py's step", ref_ips)]
    for spec in args.paths:
        path, _, cores = spec.partition("@")
        if cores:
            result = bench_pinned(args, path, int(cores))
        else:
            result = bench_trainer(dataclasses.replace(cfg, augment=path))
        workers = "0 workers" if path == "batched" else f"workers {args.workers} (-1 = default)"
        where = f", pinned to {cores} cores" if cores else ""
        rows.append((f"(b) trainer, {path} path, {workers}{where}, train phase", result["train"]))
        rows.append(("(b') the same, whole epoch incl. eval and checkpoint", result["epoch"]))
    cuda = torch.cuda.is_available() and args.device != "cpu"
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(
        f"\n{args.model}, batch {args.batch_size}, aa={cfg.aa} + CutMix {cfg.cutmix}, {name}, "
        f"{len(os.sched_getaffinity(0))} cores, compile={cfg.compile}, amp={cfg.amp}, "
        f"channels_last={cfg.channels_last}, torch {torch.__version__}"
    )
    print(f"{'measurement':<80}{'img/s':>10}{'vs (a)':>9}")
    for label, ips in rows:
        print(f"{label:<80}{ips:>10,.0f}{ips / step_ips:>9.1%}")


if __name__ == "__main__":
    main()
