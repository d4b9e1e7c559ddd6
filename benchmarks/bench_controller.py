"""How a sweep's decisions scale (a benchmark, not a test): `python -m benchmarks.bench_controller [--db URL]
[--trials 40 1000 5000] [--epochs 250]`.

For each N, fills a store (SQLite in a temporary folder, or the PostgreSQL database --db names, which gets new
sweeps) with N trials of sweeps/aug.yaml's search space: every trial with E epochs of history but the four still
running (half-way) and a third stopped early. Then, for each engine (W&B's random, grid and bayes with hyperband;
Optuna's default study, and TPE alone, with its Hyperband and ASHA pruners, and with promotion), times what an
agent asks: `next_trial` (a claim: the engine's suggestion and the store's exactly-once write) and `decide` (asked after
every epoch of every running trial: each timed call follows a new epoch of that trial, as in an agent). The first
call is a fresh agent's (cold: it reads the whole sweep); the warm figure is the best of --repeat later calls.
Then `report`.
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
from hpsearch.sweep.spec import read_code, sweeps
from hpsearch.sweep.store import Series, State, Store, Sweep

REPO = Path(__file__).resolve().parents[1]  # the checkout this file lives in: sweeps/ and studies are read from it
AUG = REPO / "sweeps" / "aug.yaml"
RUNNING = 4
HYPERBAND = {"type": "hyperband", "min_iter": 25, "eta": 2}
ENGINES = {  # name -> how the sweep's config differs from aug.yaml's space
    "random": {"method": "random", "early_terminate": HYPERBAND},
    "grid": {"method": "grid", "early_terminate": HYPERBAND},
    "bayes": {"method": "bayes", "early_terminate": HYPERBAND},
    "optuna": {"method": "custom", "scheduler": {"engine": "optuna"}},  # the default study
    "optuna tpe": {
        "method": "custom",
        "scheduler": {"engine": "optuna", "source": "hpsearch/studies.py", "optimizer": "tpe"},
    },  # fmt: skip
    "optuna hyperband": {
        "method": "custom",
        "scheduler": {"engine": "optuna", "source": "hpsearch/studies.py", "optimizer": "tpe_hyperband"},
    },  # fmt: skip
    "optuna asha": {
        "method": "custom",
        "scheduler": {"engine": "optuna", "source": "hpsearch/studies.py", "optimizer": "tpe_asha"},
    },  # fmt: skip
    "optuna promote": {
        "method": "custom",
        "scheduler": {"engine": "optuna", "source": "hpsearch/studies.py", "optimizer": "promote"},
    },  # fmt: skip
}


def space(engine: str) -> dict:
    config = yaml.safe_load(AUG.read_text())
    for key in ("run_cap", "early_terminate", "scheduler"):  # its search is each engine's below
        config.pop(key, None)
    config.update(ENGINES[engine])
    if engine == "grid":  # grid needs discrete values: 3 of each continuous one (34,992 points)
        config["parameters"]["lr"] = {"values": [0.05, 0.15, 0.5]}
        config["parameters"]["weight_decay"] = {"values": [1e-4, 5e-4, 2e-3]}
    return config


def _optuna_attrs(config: dict) -> Callable[[dict], dict]:
    """The attrs an Optuna engine keeps with a trial of these params (its record of the study's trial)."""
    if config["method"] != "custom":
        return lambda params: {}
    from optuna.distributions import distribution_to_json
    from wandb.sdk.sweeps.scheduler.optuna import search_space_from_sweep_config

    dist = {k: distribution_to_json(d) for k, d in search_space_from_sweep_config(config["parameters"]).items()}
    return lambda params: {"optuna": {"params": params, "distributions": dist, "system_attrs": {}, "user_attrs": {}}}


def fill(store: Store, config: dict, n: int, epochs: int, seed: int = 0) -> Sweep:
    """A sweep with `n` trials already run: params as W&B's random search draws them, a val_acc curve each."""
    rng = random.Random(seed)
    sweep = store.add_sweep(config, "local", name=f"bench-{config['method']}-{n}", code=read_code(config, REPO))
    draw = sweeps.SweepConfig({k: v for k, v in config.items() if k != "scheduler"} | {"method": "random"})
    attrs = _optuna_attrs(config)
    trials, history = [], []
    for seq in range(1, n + 1):
        params = {k: v["value"] for k, v in sweeps.next_run(draw, []).config.items()}
        state = State.RUNNING if seq > n - RUNNING else State.STOPPED if seq % 3 == 0 else State.FINISHED
        done = epochs // 2 if state == State.RUNNING else rng.randint(25, epochs // 2) if seq % 3 == 0 else epochs
        top, acc, records = rng.uniform(40, 85), 1.0, []
        for epoch in range(1, done + 1):
            acc = min(top, acc + rng.uniform(0, 2 * top / epochs * 4))
            records.append({"epoch": epoch, "val_acc": acc, "best_acc": acc, "val_loss": 5 - acc / 25, "lr": 0.1})
        tid = f"{sweep.id}-{seq}"
        trials.append({"id": tid, "sweep_id": sweep.id, "seq": seq, "params": json.dumps(params), "state": state,
                       "agent": "bench", "created": 0.0, "started": 0.0, "heartbeat": time.time() + 3600,
                       "summary": json.dumps(records[-1]), "epochs": done, "revision": done,
                       "series": Series.of([(r["epoch"], r["val_acc"]) for r in records]).pack(),
                       "attrs": json.dumps(attrs(params))})  # fmt: skip
        history += [{"t": tid, "e": r["epoch"], "m": json.dumps(r)} for r in records]
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO trials (id, sweep_id, seq, params, state, agent, created, started, heartbeat, summary, "
                "epochs, revision, series, attrs) VALUES (:id, :sweep_id, :seq, :params, :state, :agent, :created, "
                ":started, :heartbeat, :summary, :epochs, :revision, :series, :attrs)"
            ),
            trials,
        )
        conn.execute(sa.text("INSERT INTO history (trial_id, epoch, metrics) VALUES (:t, :e, :m)"), history)
    return sweep


def timed(fn: Callable[[], object], repeat: int, before: Callable[[], object] = lambda: None) -> tuple[float, float]:
    """(the first call's seconds, the best of the `repeat` later ones), `before` run untimed before each call."""
    times = []
    for _ in range(repeat + 1):
        before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times[0], min(times[1:])


def bench_engine(store: Store, engine: str, n: int, epochs: int, repeat: int) -> list[tuple[str, float, float]]:
    """(what, cold seconds, warm seconds) of one engine's decisions over `n` trials."""
    sweep = fill(store, space(engine), n, epochs)
    rows = []
    owner = controller_for(store, sweep, "bench")  # the agent that runs the trial: it records its epochs
    if owner.stops:
        running = store.trials(sweep.id)[-1]
        epoch = iter(range(running.epochs + 1, epochs))

        def new_epoch() -> None:
            e = next(epoch)
            owner.record_epochs(running, [{"epoch": e, "val_acc": 50.0, "best_acc": 50.0}])

        rows.append((f"decide ({engine})", *timed(lambda: owner.decide(running), repeat, new_epoch)))
    claimant = controller_for(store, sweep, "claimant")
    rows.append((f"next_trial ({engine})", *timed(lambda: claimant.next_trial(0), repeat)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="PostgreSQL URL (default: SQLite in a temporary folder)")
    ap.add_argument("--trials", type=int, nargs="+", default=[40, 1000])
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--report", action="store_true", help="also time `report` of a filled sweep")
    args = ap.parse_args(argv)
    if args.epochs < 50:  # stopped trials end between hyperband's first rung (25) and half-way
        ap.error(f"--epochs {args.epochs}: too few; allowed: 50 or more")
    print(f"store: {'PostgreSQL' if args.db else 'SQLite'}; times in ms (cold: a fresh agent's first call)")
    print(f"{'trials':>7}  {'what':<30} {'cold':>9} {'warm':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, args.db)
        for n in args.trials:
            rows = [row for engine in args.engines for row in bench_engine(store, engine, n, args.epochs, args.repeat)]
            if args.report:
                from hpsearch.report import report

                sweep = fill(store, space("random"), n, args.epochs)  # (untimed: the sweep is there already)
                t0 = time.perf_counter()
                report(store, sweep, "html")
                rows.append(("report (html)", time.perf_counter() - t0, math.nan))
            for what, cold, warm in rows:
                print(f"{n:>7}  {what:<30} {cold * 1000:>9.0f} {warm * 1000:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
