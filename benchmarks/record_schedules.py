"""Record a curve table of real images at several schedules per configuration (a benchmark, not a test), so that
how a rung is read (truncated, compressed, cooled) is chosen by measurement:
`python -m benchmarks.record_schedules [--out FILE.jsonl] [--configs 32] [--twice 8] [--epochs 40] [--jobs 2]`.

Fashion-MNIST (Debian's dataset-fashion-mnist), a fixed subset, timm's smallest ResNet, and aug.yaml's space scaled
down (lr, weight decay, CutMix, MixUp, AutoAugment or RandAugment, label smoothing). Configuration 0 is the
reference recipe (SGD, lr 0.25 at batch 512 scaled linearly to the batch here, wd 1e-3, AutoAugment, CutMix 1.0);
the others are drawn with seed 0. For each configuration, with every epoch's record kept:
- `cosine`: a cosine run of E epochs (the reference value) and, compressed, of E/8, E/4 and E/2 epochs, each a
  whole schedule (warmup included) from scratch;
- `wsd`: warmup-stable-decay runs of E epochs with cooldowns of 10% and of 20%, each with cooldown branches (of
  its own fraction) at E/8, E/4 and E/2; a branch's value is the run's `rungs`, its own end the top rung.
The first `--twice` configurations run a second seed, so the noise is known.

One run a line, `{"config": {...}, "history": [...], "rungs": [...], "summary": {...}}`, where config holds the
searched parameters and the schedule (sched, epochs, warmup_epochs, cooldown_frac, cooldown_at) and the seed: a
curve table `hpsearch simulate --curves` reads. Lines are appended as runs end, so a stopped recording is taken up
again by running the same command; the finished file is rewritten in (configuration, seed, run) order. `--device`
and `--jobs` make it a GPU run as well (each job one process on the device).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "sweeps" / "simulate" / "fashion-schedules.jsonl"
BATCH = 128
REFERENCE = {"lr": 0.25 * BATCH / 512, "weight_decay": 1e-3, "cutmix": 1.0, "mixup": 0.0, "aa": "original",
             "smoothing": 0.0}  # fmt: skip
FIXED = {"dataset": "fashion_mnist", "model": "test_resnet", "cifar_stem": False, "batch_size": BATCH,
         "momentum": 0.9, "hflip": 0.7, "warmup_epochs": 1, "workers": 0}  # fmt: skip


def draw(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """The reference recipe and n - 1 configurations of the scaled-down aug.yaml space."""
    rng = random.Random(seed)
    configs = [dict(REFERENCE)]
    while len(configs) < n:
        configs.append(
            {
                "lr": round(math.exp(rng.uniform(math.log(0.01), math.log(0.5))), 5),
                "weight_decay": round(math.exp(rng.uniform(math.log(1e-4), math.log(5e-3))), 6),
                "cutmix": rng.choice([0.0, 0.5, 1.0]),
                "mixup": rng.choice([0.0, 0.2, 0.5]),
                "aa": rng.choice(["none", "original", "rand-m9-n2-mstd0.5"]),
                "smoothing": rng.choice([0.0, 0.1]),
            }
        )
    return configs


def schedules(epochs: int) -> list[dict[str, Any]]:
    """The runs of one configuration: cosine at E/8, E/4, E/2 and E; wsd at E with 10% and 20% cooldowns."""
    rungs = ",".join(str(epochs // d) for d in (8, 4, 2))
    runs = [{"sched": "cosine", "epochs": epochs // d} for d in (8, 4, 2, 1)]
    runs += [{"sched": "wsd", "epochs": epochs, "cooldown_frac": f, "cooldown_at": rungs} for f in (0.1, 0.2)]
    return runs


def plan(configs: int, twice: int, epochs: int) -> list[dict[str, Any]]:
    """Every run to record, in the table's order: each configuration's runs at seed 0, then the second seeds."""
    return [
        {**params, "seed": seed, **run}
        for seed in (0, 1)
        for params in draw(configs)[: configs if seed == 0 else twice]
        for run in schedules(epochs)
    ]


def run_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def record(config: dict[str, Any], args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Train one run with the trainer as a sweep would run it; its line of the table."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        flags = {**FIXED, **config, "train_subset": args.train_subset, "val_split": args.val_split,
                 "data_dir": args.data_dir, "device": args.device, "wandb": "disabled", "output_dir": tmp,
                 "metrics_file": str(metrics)}  # fmt: skip
        argv = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in flags.items()]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_SILENT": "true"}
        done = subprocess.run([sys.executable, "-m", "hpsearch.train", *argv], capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
        lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "config": config,
        "history": [r for r in lines if "epoch" in r],
        "rungs": [r for r in lines if "rung" in r and "epoch" not in r],
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--configs", type=int, default=32)
    ap.add_argument("--twice", type=int, default=8, help="configurations recorded with a second seed")
    ap.add_argument("--epochs", type=int, default=40, help="E, the full length")
    ap.add_argument("--train-subset", type=int, default=1000)
    ap.add_argument("--val-split", type=int, default=1000)
    ap.add_argument("--data-dir", default=str(Path.home() / ".cache" / "hpsearch" / "data"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    args = ap.parse_args(argv)

    runs = plan(args.configs, args.twice, args.epochs)
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    have = {run_key(line["config"]) for line in done}
    todo = [config for config in runs if run_key(config) not in have]
    print(f"{len(todo)} runs to record ({len(have)} already in {args.out}) on {platform.node()}", flush=True)
    t0 = time.time()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool, args.out.open("a") as fh:
        futures = {pool.submit(record, config, args, args.threads): config for config in todo}
        for n, future in enumerate(as_completed(futures), 1):
            line = future.result()
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            done.append(line)
            print(f"{n}/{len(todo)}  {time.time() - t0:.0f}s  {run_key(line['config'])}", flush=True)
    order = {run_key(config): i for i, config in enumerate(runs)}
    done.sort(key=lambda line: order.get(run_key(line["config"]), len(order)))
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in done))
    tmp.replace(args.out)
    print(f"recorded {len(todo)} runs in {(time.time() - t0) / 3600:.2f} h; {len(done)} in {args.out}", flush=True)


if __name__ == "__main__":
    main()
