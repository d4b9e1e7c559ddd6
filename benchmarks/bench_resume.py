"""What a pause and a promotion cost a trial (a benchmark, not a test): `python -m benchmarks.bench_resume
[--repeats 5] [--epochs 6] [--rung 2] [--set KEY=VALUE ...]`.

Each repeat is a sweep of one configuration of hpsearch's trainer (digits on timm's test_resnet, as the tests run
it; `--set` changes any of its parameters, e.g. `--set dataset=fashion_mnist train_subset=4000`) under a promotion
study with one rung (`--rung`, eta 2), run by a real `hpsearch agent` with one slot, one CPU thread per trial. The
trial reaches the rung alone (a cohort of one) and pauses. As soon as the agent's line says so, a result that
reached the rung elsewhere, below it, is told to the sweep (a prior: what another agent's trial would have
recorded meanwhile), so the agent's next claim promotes the trial. Should that claim come first, the repeat is said
and run again.

The times are those the product writes: the store's (each epoch's record, the trial's start and end), the agent's
lines and the trainer's first line after start-up ("no checkpoint at" / "resumed from"), each stamped as it
arrives here (the trial's stdout.log looked at every 20 ms), and the trainer's epoch_time (metrics.jsonl). The
pause's end and the first run's records are read from the store at the pause: the promotion overwrites them (its
claim sets `started` and clears `ended`; the resumed run records its checkpoint's epochs again). Seconds, per
repeat:
- epoch: an ordinary epoch, record to record within one process (its first epoch excluded), averaged (the agent
  reads the trainer's records every 0.5 s: epochs shorter than that come two to a round, and this reads 0);
- overhead: from the rung epoch's record to the promoted run's next one, less `epoch`; its parts (they add up):
  end (the decision, SIGTERM until the process is gone, the pause recorded; the checkpoint is on disk before the
  rung's record), claim (the agent's next round, its promotion decision and claim), start (process, imports, data,
  model, checkpoint loaded: to "resumed from"), first (the first epoch, its checkpoint, the agent's read);
- new start, new first: the same two for the trial's first run (a new trial: no checkpoint);
- train, train first: the trainer's own epoch_time of an ordinary epoch and of the promoted run's first;
- imports: the trainer's imports alone, in a fresh interpreter after the agent exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from hpsearch.sweep.spec import read_code
from hpsearch.sweep.store import Store, Trial

TRIAL = {"dataset": "digits", "model": "test_resnet", "cifar_stem": False, "batch_size": 64, "workers": 0,
         "aa": "none", "warmup_epochs": 0, "val_split": 100, "lr": 0.1}  # fmt: skip
STUDY = """import optuna
from hpsearch.sweep.promotion import PromotingHalving


def study(sweep):
    return optuna.create_study(direction="maximize", pruner=PromotingHalving({rung}, 2))
"""
TICK = 0.02  # seconds between looks at the agent's lines and the trial's stdout.log
STARTED, PROMOTED = (re.compile(rf"^trial (\S+) {what} ") for what in ("started on", "promoted on"))
PAUSED = re.compile(r"^trial (\S+) paused by .* after epoch (\d+);")
COLUMNS = ("epoch", "overhead", "end", "claim", "start", "first", "new start", "new first", "train", "train first",
           "imports")  # fmt: skip
IMPORTS = "import time; t = time.perf_counter(); import hpsearch.train.loop; print(time.perf_counter() - t)"


class Tail:
    """The lines appended to a file, each with the time it was first seen here."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines = path, 0, []

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        now = time.time()
        self.lines += [(now, line.decode(errors="replace")) for line in chunk[:end].splitlines()]

    def first(self, prefix: str) -> float:
        return next(t for t, line in self.lines if line.startswith(prefix))


def records(store: Store, trial_id: str) -> dict[int, tuple[float, dict[str, Any]]]:
    """epoch -> (when the agent recorded it, on the database's clock; its record)."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT epoch, written, metrics FROM history WHERE trial_id = :t"), {"t": trial_id})
        return {epoch: (written, json.loads(metrics)) for epoch, written, metrics in rows}


def sweep_config(study: Path, params: dict[str, Any], epochs: int) -> dict[str, Any]:
    return {
        "method": "custom",
        "metric": {"name": "val_acc", "goal": "maximize"},
        "scheduler": {"engine": "optuna", "source": str(study), "optimizer": "study"},
        "run_cap": 1,  # one configuration: once it is paused, only a promotion can follow
        "parameters": {k: {"value": v} for k, v in {**params, "epochs": epochs}.items()},
    }


def repeat(store: Store, config: dict[str, Any], env: dict[str, str]) -> dict[str, float] | None:
    """One sweep run by one agent: the columns' seconds, or None when the agent claimed before the cohort grew."""
    sweep = store.add_sweep(config, "local", name="bench-resume", code=read_code(config))
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep.id, "--dir", str(store.root)]
    agent = subprocess.Popen(cmd, cwd=store.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []  # the agent's, as they arrive

    def read() -> None:
        for line in agent.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tail: Tail | None = None
    at_pause: tuple[Trial, int, dict[int, tuple[float, dict]]] | None = None
    seen = 0
    while reader.is_alive():
        for _, line in lines[seen:]:
            seen += 1
            if (m := STARTED.match(line)) and tail is None:
                tail = Tail(store.trial_dir(store.trial(m[1])) / "stdout.log")
            elif (m := PAUSED.match(line)) and at_pause is None:
                trial = store.trial(m[1])  # (before the promotion's claim overwrites its start and end)
                history = [{"epoch": e, "val_acc": 0.0} for e in range(1, config["parameters"]["epochs"]["value"] + 1)]
                store.add_prior(sweep.id, trial.params, history, {"val_acc": 0.0}, {"prior": "bench_resume"}, "val_acc")
                at_pause = trial, int(m[2]), records(store, trial.id)
        if tail:
            tail.poll()
        time.sleep(TICK)
    agent.wait()
    said = "\n".join(line for _, line in lines)
    if agent.returncode != 0 or at_pause is None or tail is None:
        raise SystemExit(f"bench_resume: the agent exited {agent.returncode} without a pause:\n{said}")
    if not any(PROMOTED.match(line) for _, line in lines):
        return None
    paused, k, before = at_pause  # k: the epoch it paused after (the rung, or later if read with it)
    after = records(store, paused.id)
    promoted = store.trial(paused.id)
    if promoted.state != "finished":
        raise SystemExit(f"bench_resume: the promoted trial ended {promoted.state}:\n{said}")
    # (the first run's records as they were at the pause, the promoted run's since)
    recorded = {e: r for e, r in before.items() if e <= k} | {e: r for e, r in after.items() if e > k}
    written = {e: w for e, (w, _) in recorded.items()}
    epoch_time = {e: r["epoch_time"] for e, (_, r) in recorded.items()}
    top = max(written)
    ordinary = [e for e in range(2, top + 1) if e != k + 1]  # every epoch but a process's first
    epoch = statistics.fmean(written[e] - written[e - 1] for e in ordinary)
    resumed, fresh = tail.first("resumed from "), tail.first("no checkpoint at ")
    imports = subprocess.run([sys.executable, "-c", IMPORTS], env=env, capture_output=True, text=True, check=True)
    return {
        "epoch": epoch,
        "overhead": written[k + 1] - written[k] - epoch,
        "end": paused.ended - written[k],
        "claim": promoted.started - paused.ended,
        "start": resumed - promoted.started,
        "first": written[k + 1] - resumed,
        "new start": fresh - paused.started,
        "new first": written[1] - fresh,
        "train": statistics.fmean(epoch_time[e] for e in ordinary),
        "train first": epoch_time[k + 1],
        "imports": float(imports.stdout),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=6, help="the trial's epochs")
    ap.add_argument("--rung", type=int, default=2, help="the epoch it pauses at")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="the trial's parameters (YAML values)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats}: allowed: 1 or more")
    if not 1 <= args.rung <= args.epochs - 2:  # an ordinary epoch after the promoted run's first
        ap.error(f"--rung {args.rung} with --epochs {args.epochs}: allowed: 1 <= rung <= epochs - 2")
    if bad := [kv for kv in args.set if "=" not in kv]:
        ap.error(f"--set {bad[0]}: allowed: KEY=VALUE, a parameter of hpsearch's trainer")
    params = {**TRIAL, **{k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}}
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    changed = f" ({', '.join(args.set)})" if args.set else ""
    print(f"{params['dataset']} on {params['model']}{changed}, {args.epochs} epochs, paused at {args.rung}, then "
          "promoted; one agent, one slot; seconds")  # fmt: skip
    print(f"{'repeat':>6}" + "".join(f"  {c:>11}" for c in COLUMNS), flush=True)
    done: list[dict[str, float]] = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store") as store:
        study = Path(tmp) / "study.py"
        study.write_text(STUDY.format(rung=args.rung))
        config = sweep_config(study, params, args.epochs)
        for attempt in range(1, 2 * args.repeats + 1):
            if len(done) == args.repeats:
                break
            row = repeat(store, config, env)
            if row is None:
                print(f"{attempt:>6}  no promotion: the agent claimed before the rung's cohort grew; once more")
                continue
            done.append(row)
            print(f"{attempt:>6}" + "".join(f"  {row[c]:>11.2f}" for c in COLUMNS), flush=True)
    if not done:
        raise SystemExit("bench_resume: no repeat got its promotion (the machine too loaded to tell the prior in time)")
    for what, fn in (("median", statistics.median), ("min", min), ("max", max)):
        print(f"{what:>6}" + "".join(f"  {fn(r[c] for r in done):>11.2f}" for c in COLUMNS))
    # (the cores are shared: how loaded they were says how far the figures carry)
    print(f"repeats: {len(done)}; cores: {os.cpu_count()}; load average (1 min): {load:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")  # fmt: skip


if __name__ == "__main__":
    main()
