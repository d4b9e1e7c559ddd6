"""A training script for the tests of coordination (many agents, leases, faults, SLURM): a sweep's own `program`,
as W&B sweep files name one, that keeps hpsearch's trainer contract without torch, so it starts in a tenth of a
second where the trainer spends seconds importing torch and timm. What the tests of the trainer itself check
(learning, DDP, resume of model and optimizer) runs the real trainer.

The contract, as hpsearch.train keeps it: `--key=value` flags; one JSON line per epoch appended to --metrics_file
(a resumed run first drops the lines after its checkpoint); a checkpoint in --output_dir written atomically every
epoch and resumed from with --resume=true; the summary as the last stdout line; `hpsearch train: error: ...` lines
on stderr. Each epoch takes --epoch_s seconds; val_acc grows with lr; --fail_at=N exits 1 in epoch N.

--hold=PATH holds a trial at a recorded epoch for as long as the test needs: after each epoch, the trainer waits
while PATH exists, unless PATH names a later epoch to hold at (empty: the first). A trial that must still run when
a decision reaches it (a stop, a signal, a kill) waits on the test's event instead of on the machine being fast.

--log_wandb=true logs each epoch to a W&B run (as --wandb says) through the trainer's own W&B code,
hpsearch.train.metrics, which needs no torch.
"""

import json
import os
import sys
import time
from pathlib import Path

flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
epochs, epoch_s, lr = int(flags.get("epochs", 3)), float(flags.get("epoch_s", 0.2)), float(flags.get("lr", 0.1))
out = Path(flags["output_dir"])
out.mkdir(parents=True, exist_ok=True)
ckpt, metrics = out / "checkpoint.pt", Path(flags["metrics_file"])
primary = os.environ.get("RANK", "0") == "0"

start, last = 0, None
if flags.get("resume") == "true" and ckpt.exists():
    start, last = (json.loads(ckpt.read_text()).get(k) for k in ("epoch", "record"))
    print(f"resumed from {ckpt} after epoch {start}", flush=True)
elif flags.get("resume") == "true":
    print(f"no checkpoint at {ckpt}: starting from epoch 0", flush=True)
if primary and metrics.exists():
    kept = [line for line in metrics.read_text().splitlines(keepends=True) if json.loads(line)["epoch"] <= start]
    if last and not any(json.loads(line)["epoch"] == start for line in kept):  # ended between checkpoint and record
        kept.append(json.dumps(last) + "\n")
    metrics.with_suffix(".tmp").write_text("".join(kept))
    os.replace(metrics.with_suffix(".tmp"), metrics)

hold = flags.get("hold")


def held(epoch: int) -> bool:
    try:
        return epoch >= int(Path(hold).read_text().strip() or 1)
    except FileNotFoundError:
        return False


log = None
if primary and flags.get("log_wandb") == "true":
    from hpsearch.params import TrainConfig
    from hpsearch.train.metrics import TrialLog

    log = TrialLog(TrainConfig(wandb=flags.get("wandb", "auto"), output_dir=str(out), lr=lr), start, None)
best = 0.0
for epoch in range(start + 1, epochs + 1):
    t0 = time.time()
    time.sleep(epoch_s)
    if int(flags.get("fail_at", 0)) == epoch:
        print(f"hpsearch train: error: failing at epoch {epoch} as asked", file=sys.stderr, flush=True)
        sys.exit(1)
    acc = min(99.0, 100 * lr * epoch / epochs)
    best = max(best, acc)
    record = {"epoch": epoch, "val_acc": acc, "best_acc": best, "val_loss": 5 - acc / 25, "train_loss": 1.0,
              "lr": lr, "epoch_time": time.time() - t0, "img_per_sec": 1000.0}  # fmt: skip
    if primary:  # the checkpoint first, as the trainer: a process ended once its record is read resumes after it
        ckpt.with_suffix(".tmp").write_text(json.dumps({"epoch": epoch, "record": record}))
        os.replace(ckpt.with_suffix(".tmp"), ckpt)
        with open(metrics, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if log:
            log.epoch(record, epochs)
    while hold and held(epoch):
        time.sleep(0.05)
if primary:
    summary = {"best_acc": best, "epochs": epochs, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}  # fmt: skip
    if log:
        log.finish(summary)  # (prints the summary line too)
    else:
        print(json.dumps(summary), flush=True)
