"""Throughput benchmark (not a test): `python -m hpsearch.bench [--epochs 4] [--model resnet50] ...`

(a) the training step alone: forward, soft-target loss, backward and SGD step on random tensors that
    already sit on the device, as the trainer configures them (bf16 autocast, channels_last, compile);
(b) the whole trainer (`hpsearch.train.loop.run`) on the synthetic dataset with the reference recipe's
    augmentation (AutoAugment `original`, hflip, CutMix 1.0) through the real data loader, reading the
    images/s each epoch reports (epoch 1, which compiles and starts workers, is left out).
Prints a table and the ratio (b) / (a): how much of the GPU the data path leaves unused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from timm.loss import SoftTargetCrossEntropy

from hpsearch.params import TrainConfig
from hpsearch.train.loop import make_optimizer, run
from hpsearch.train.model import build_model


def bench_step(cfg: TrainConfig, steps: int, warmup: int) -> float:
    """Images/s of the bare training step on device-resident random batches."""
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    model = build_model(cfg, 100).to(device=device, memory_format=fmt)
    optimizer = make_optimizer(model, cfg)
    fwd = torch.compile(model) if cuda and cfg.compile else model
    loss_fn = SoftTargetCrossEntropy()
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [
        (
            torch.randn(cfg.batch_size, 3, 32, 32, device=device, generator=gen).contiguous(memory_format=fmt),
            torch.softmax(torch.randn(cfg.batch_size, 100, device=device, generator=gen), dim=1),
        )
        for _ in range(4)
    ]

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
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        run(dataclasses.replace(cfg, output_dir=tmp, metrics_file=str(metrics)))
        records = [json.loads(line) for line in metrics.read_text().splitlines()][1:]
    images = cfg.train_subset // cfg.batch_size * cfg.batch_size
    return {
        "train": statistics.median(r["img_per_sec"] for r in records),
        "epoch": statistics.median(images / r["epoch_time"] for r in records),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50, help="timed steps of (a)")
    ap.add_argument("--warmup", type=int, default=15, help="untimed steps of (a)")
    ap.add_argument("--epochs", type=int, default=4, help="trainer epochs of (b); the first is not counted")
    ap.add_argument("--train-images", type=int, default=50000, help="synthetic training images per epoch")
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--aa", default="original", help="trainer's AutoAugment policy in (b)")
    ap.add_argument("--only-trainer", action="store_true", help="skip (a)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    cfg = TrainConfig(
        model=args.model,
        dataset="synthetic",
        batch_size=args.batch_size,
        epochs=args.epochs,
        train_subset=args.train_images,
        val_subset=2048,
        workers=args.workers,
        aa=args.aa,
        compile=not args.no_compile,
        device=args.device,
        wandb="disabled",
    )
    step_ips = float("nan") if args.only_trainer else bench_step(cfg, args.steps, args.warmup)
    trainer = bench_trainer(cfg)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    print(
        f"\n{args.model}, batch {args.batch_size}, {name}, compile={cfg.compile}, amp={cfg.amp}, "
        f"channels_last={cfg.channels_last}, torch {torch.__version__}"
    )
    print(f"{'measurement':<58}{'img/s':>10}{'vs (a)':>9}")
    rows = [
        ("(a) training step alone, data on the device", step_ips),
        (f"(b) trainer, aa={cfg.aa} + CutMix, {args.workers} workers, train phase", trainer["train"]),
        ("(b') trainer, whole epoch incl. eval and checkpoint", trainer["epoch"]),
    ]
    for label, ips in rows:
        print(f"{label:<58}{ips:>10,.0f}{ips / step_ips:>9.1%}")


if __name__ == "__main__":
    main()
