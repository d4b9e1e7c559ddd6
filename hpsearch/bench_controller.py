"""How a sweep's decisions scale (a benchmark, not a test): `python -m hpsearch.bench_controller [--db URL]
[--trials 40 1000] [--epochs 250]`.

For each N, fills a store (SQLite in a temporary folder, or the PostgreSQL database --db names, which gets one
new sweep per N) with N trials of sweeps/aug.yaml's search space: every trial with E epochs of history but the
four still running (half-way) and a third stopped early, then times, best of --repeat warm calls, what an agent
asks of the local controller: `should_stop` (hyperband over every trial's history; once per epoch of every
running trial) and `next_trial` (a claim: random, grid, and bayes, whose model fit is the engine's own cost),
each in a fresh agent's controller, whose first (cold) call is reported apart. Then `report` of the sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
import yaml

from hpsearch.sweep.controller import controller_for
from hpsearch.sweep.spec import sweeps
from hpsearch.sweep.store import State, Store, Sweep

AUG = Path(__file__).resolve().parent.parent / "sweeps" / "aug.yaml"
RUNNING = 4


def space(method: str) -> dict:
    config = yaml.safe_load(AUG.read_text())
    config.pop("run_cap")
    config["method"] = method
    if method == "grid":  # grid needs discrete values: 3 of each continuous one (34,992 points)
        config["parameters"]["lr"] = {"values": [0.05, 0.15, 0.5]}
        config["parameters"]["weight_decay"] = {"values": [1e-4, 5e-4, 2e-3]}
    return config


def fill(store: Store, config: dict, n: int, epochs: int, seed: int = 0) -> Sweep:
    """A sweep with `n` trials already run: params as the engine draws them, a val_acc curve each."""
    rng = random.Random(seed)
    sweep = store.add_sweep(config, "local", name=f"bench-{config['method']}-{n}")
    engine = sweeps.SweepConfig({**config, "method": "random"})
    trials, history = [], []
    for seq in range(1, n + 1):
        params = {k: v["value"] for k, v in sweeps.next_run(engine, []).config.items()}
        state = State.RUNNING if seq > n - RUNNING else State.STOPPED if seq % 3 == 0 else State.FINISHED
        done = epochs // 2 if state == State.RUNNING else rng.randint(25, epochs // 2) if seq % 3 == 0 else epochs
        top, acc, records = rng.uniform(40, 85), 1.0, []
        for epoch in range(1, done + 1):
            acc = min(top, acc + rng.uniform(0, 2 * top / epochs * 4))
            records.append({"epoch": epoch, "val_acc": acc, "best_acc": acc, "val_loss": 5 - acc / 25, "lr": 0.1})
        tid = f"{sweep.id}-{seq}"
        trials.append({"id": tid, "sweep_id": sweep.id, "seq": seq, "params": json.dumps(params), "state": state,
                       "agent": "bench", "created": 0.0, "started": 0.0, "heartbeat": time.time() + 3600,
                       "summary": json.dumps(records[-1]), "epochs": done, "revision": done})  # fmt: skip
        history += [{"t": tid, "e": r["epoch"], "m": json.dumps(r)} for r in records]
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO trials (id, sweep_id, seq, params, state, agent, created, started, heartbeat, summary, "
                "epochs, revision) VALUES (:id, :sweep_id, :seq, :params, :state, :agent, :created, :started, "
                ":heartbeat, :summary, :epochs, :revision)"
            ),
            trials,
        )
        conn.execute(sa.text("INSERT INTO history (trial_id, epoch, metrics) VALUES (:t, :e, :m)"), history)
    return sweep


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    """(the first call's seconds, the later calls' seconds)."""
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times[0], times[1:]


def bench_decisions(store: Store, n: int, epochs: int, repeat: int) -> list[tuple[str, float, float]]:
    """(what, cold seconds, best warm seconds): should_stop, record_epoch, a random claim, the report."""
    t0 = time.perf_counter()
    sweep = fill(store, space("random"), n, epochs)
    rows = [(f"fill {n} x {epochs}", time.perf_counter() - t0, math.nan)]
    running = store.trials(sweep.id)[-1]
    cold, _ = timed(lambda: controller_for(store, sweep, "a").should_stop(running), 0)
    controller = controller_for(store, sweep, "a")
    controller.should_stop(running)
    rows.append(("should_stop", cold, min(timed(lambda: controller.should_stop(running), repeat)[1])))
    owner = controller_for(store, sweep, "bench")
    record = {"epoch": epochs // 2 + 1, "val_acc": 50.0, "best_acc": 50.0}
    rows.append(("record_epoch", math.nan, min(timed(lambda: owner.record_epochs(running, [record]), repeat)[1])))
    rows.append(bench_claim(store, sweep, repeat))
    from hpsearch.report import report

    t0 = time.perf_counter()
    report(store, sweep, "html")
    rows.append(("report (html)", time.perf_counter() - t0, math.nan))
    return rows


def bench_claim(store: Store, sweep: Sweep, repeat: int) -> tuple[str, float, float]:
    controller = controller_for(store, sweep, "a")
    cold, warm = timed(lambda: controller.next_trial(0), repeat)
    return f"next_trial ({sweep.config['method']})", cold, min(warm)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="PostgreSQL URL (default: SQLite in a temporary folder)")
    ap.add_argument("--trials", type=int, nargs="+", default=[40, 1000])
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"store: {'PostgreSQL' if args.db else 'SQLite'}; times in ms (cold: a fresh controller's first call)")
    print(f"{'trials':>7}  {'what':<22} {'cold':>9} {'warm':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, args.db)
        for n in args.trials:
            rows = bench_decisions(store, n, args.epochs, args.repeat)
            rows += [bench_claim(store, fill(store, space(m), n, args.epochs), args.repeat) for m in ("grid", "bayes")]
            for what, cold, warm in rows:
                print(f"{n:>7}  {what:<22} {cold * 1000:>9.0f} {warm * 1000:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
