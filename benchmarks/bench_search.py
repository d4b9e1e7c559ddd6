"""How well each search finds good configurations (a benchmark, not a test), at YAHPO Gym's protocol for LCBench:
`python -m benchmarks.bench_search [--data DIR] [--tasks ...] [--workers 1 8] [--seeds 30] [--slow-seeds 10]
[--jobs 2] [--out FILE.jsonl]`, then `--table` prints docs/search.md's tables from what FILE.jsonl holds. With
`--tasks TABLE.jsonl --space SWEEP.yaml` (and `grid` among the methods where the space is discrete), the same on
a curve table of our own.

Each method is a variant of sweeps/simulate/lcbench.yaml, replayed exactly as `hpsearch simulate` replays it
(`hpsearch/simulate/replay.py`), with seeds 0..K-1 for every method alike. Every replay is one line of FILE.jsonl,
written as it ends, so a long run can be stopped and taken up again (lines already there are not run again).
Methods whose engine is slow (W&B's bayes fits a Gaussian process for every suggestion, hyperband reads every
trial for every stop) get --slow-seeds, Optuna's GP sampler --slowest-seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

from hpsearch.objective import Objective
from hpsearch.simulate.curves import CurveTable, LCBench
from hpsearch.simulate.results import best_at
from hpsearch.sweep.spec import read_code

REPO = Path(__file__).resolve().parents[1]  # the checkout this file lives in: data and sweeps are read from it
DATA = REPO / "benchmarks" / "yahpo_data"
SPACE = REPO / "sweeps" / "simulate" / "lcbench.yaml"
TASKS = ("167168", "189873", "189906", "189908")  # the YAHPO Gym paper's LCBench tasks, and Fashion-MNIST
HYPERBAND = {"type": "hyperband", "min_iter": 2, "eta": 3}


def _variant(method: str, early: dict | None = None, impute: str | None = None) -> Callable[[dict], dict]:
    def make(space: dict) -> dict:
        config = copy.deepcopy(space)
        config["method"] = method
        if early:
            config["early_terminate"] = early
        if impute:
            config["metric"]["impute"] = impute
        return config

    return make


def _study(optimizer: str) -> Callable[[dict], dict]:
    """An Optuna study of hpsearch/studies.py, as a sweep file names it."""

    def make(space: dict) -> dict:
        return {**copy.deepcopy(space), "method": "custom",
                "scheduler": {"engine": "optuna", "source": "hpsearch/studies.py", "optimizer": optimizer}}  # fmt: skip

    return make


# name -> (the sweep config from LCBench's space, its cost: 0 fast, 1 slow, 2 slowest), in the order they run
def _cooled(make: Callable[[dict], dict], fraction: float, sched: str | None = None) -> Callable[[dict], dict]:
    """A sweep on wsd with a cooldown of `fraction`: `sched` fixed here, or (None) set by a cooldown-mode study."""

    def cooled(space: dict) -> dict:
        config = make(space)
        config["parameters"].pop("sched", None)
        config["parameters"]["cooldown_frac"] = {"value": fraction}
        if sched:
            config["parameters"]["sched"] = {"value": sched}
        return config

    return cooled


METHODS: dict[str, tuple[Callable[[dict], dict], int]] = {
    "random": (_variant("random"), 0),
    "grid": (_variant("grid"), 0),  # (where the space is discrete: --space of values)
    "random + hyperband": (_variant("random", HYPERBAND), 1),  # (its stop decisions read every trial)
    "bayes": (_variant("bayes"), 1),
    "optuna tpe": (_study("tpe"), 1),
    "optuna tpe + hyperband": (_study("tpe_hyperband"), 1),
    "optuna tpe + asha": (_study("tpe_asha"), 1),
    "bayes + hyperband": (_variant("bayes", HYPERBAND), 1),
    "bayes + hyperband, impute latest": (_variant("bayes", HYPERBAND, "latest"), 1),
    "optuna gp": (_study("gp"), 2),  # (a second or more per suggestion)
    "optuna promote": (_study("promote"), 1),  # pause and promote (rungs at a 9th and a 3rd of the epochs)
    "optuna promote_low": (_study("promote_low"), 1),  # (and a 27th)
    "optuna promote_gp": (_study("promote_gp"), 2),
    # (on a table recorded at several schedules: rungs at E/8, E/4, E/2, read truncated or on cooled branches)
    "optuna promote_halving": (_study("promote_halving"), 1),
    "optuna promote_halving_cooldown 10%": (_cooled(_study("promote_halving_cooldown"), 0.1), 1),
    "optuna promote_halving_cooldown 20%": (_cooled(_study("promote_halving_cooldown"), 0.2), 1),
    "optuna promote_halving_compressed": (_study("promote_halving_compressed"), 1),  # (each rung a whole run)
    # (Hyperband's brackets over promotion)
    "optuna promote_hyperband": (_study("promote_hyperband"), 1),
    "optuna promote_halving_hyperband": (_study("promote_halving_hyperband"), 1),
    "optuna promote_halving_hyperband_compressed": (_study("promote_halving_hyperband_compressed"), 1),
    "optuna promote_halving_hyperband_cooldown 20%": (_cooled(_study("promote_halving_hyperband_cooldown"), 0.2), 1),
    "optuna gp, wsd 20%": (_cooled(_study("gp"), 0.2, "wsd"), 2),  # (full length, on the schedule cooldown mode runs)
    "optuna tpe, wsd 20%": (_cooled(_study("tpe"), 0.2, "wsd"), 1),
}

_sources: dict[str, Any] = {}  # per worker process: one surrogate per task


def _run(data: str, space: str, task: str, method: str, workers: int, seed: int) -> dict[str, Any]:
    """One replay; `task` an LCBench task, or a curve table's path."""
    from hpsearch.simulate.replay import replay
    from hpsearch.sweep.store import Store

    if task not in _sources:
        _sources[task] = CurveTable.from_jsonl(Path(task)) if task.endswith(".jsonl") else LCBench(task, Path(data))
    config = METHODS[method][0](yaml.safe_load(Path(space).read_text()))
    if "promote" in method:  # its rungs are fractions of the trials' epochs: the curves' length
        longest = LCBench.EPOCHS if isinstance(_sources[task], LCBench) else max(len(h) for _, h in _sources[task].rows)
        config["parameters"].setdefault("epochs", {"value": longest})
    with tempfile.TemporaryDirectory() as tmp, Store(tmp) as store:
        budget = _sources[task].budget()
        r = replay(store, config, _sources[task], workers, budget, seed, read_code(config, REPO))
    return {"task": task, "method": method, "workers": workers, "seed": seed, "budget": budget, "trials": r.trial_count,
            "paused": r.paused, "promoted": r.promoted, "stopped": r.stopped, "epochs": r.epochs,
            "distinct": r.distinct, "incumbent": r.incumbent,
            "engine_seconds": round(r.engine_seconds, 2), "seconds": round(r.seconds, 2)}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    out = Path(args.out[0])
    done = {(r["task"], r["method"], r["workers"], r["seed"]) for r in _lines(*map(Path, args.out))}
    # Seeds first, so a run stopped early holds every method on the same seeds.
    seeds = (args.seeds, args.slow_seeds, args.slowest_seeds)
    jobs = [
        (task, method, workers, seed)
        for seed in range(args.seeds)
        for workers in args.workers
        for task in args.tasks
        for method in args.methods
        if seed < seeds[METHODS[method][1]] and (task, method, workers, seed) not in done
    ]
    print(f"{len(jobs)} replays to run, {len(done)} already in {out}", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool, out.open("a") as fh:
        futures = [pool.submit(_run, args.data, args.space, *job) for job in jobs]
        for n, future in enumerate(as_completed(futures), 1):
            line = future.result()
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            what = f"{line['task']} {line['method']} x{line['workers']} seed {line['seed']}"
            print(f"[{n}/{len(jobs)}] {what}: best {line['incumbent'][-1][1]:.2f}, {line['trials']} trials, "
                  f"{line['seconds']:.0f} s", flush=True)  # fmt: skip


def _lines(*paths: Path) -> list[dict[str, Any]]:
    """The replays the files hold, each (task, method, workers, seed) once."""
    out: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines() if path.exists() else []:
            r = json.loads(line)
            out.setdefault((r["task"], r["method"], r["workers"], r["seed"]), r)
    return list(out.values())


def _extremes(data: Path) -> dict[str, tuple[float, float]]:
    """YAHPO's min and max of val_accuracy per LCBench task, for normalized regret."""
    out: dict[str, dict[str, float]] = {}
    stats = data / "global_statistics" / "instance_target_statistics.csv"
    for line in stats.read_text().splitlines()[1:]:
        metric, stat, value, scenario, instance = line.split(",")
        if scenario == "lcbench" and metric == "val_accuracy":
            out.setdefault(instance, {})[stat] = float(value)
    return {k: (v["min"], v["max"]) for k, v in out.items()}


def table(args: argparse.Namespace) -> None:
    """Markdown: for each number of workers, mean best val_accuracy at 25 / 50 / 100% of the budget per task and
    method (a seed that had found nothing yet counts as the worst value for the metric's goal, so the mean
    shows -inf or inf); then random search's normalized regret beside the paper's."""
    lines = _lines(*map(Path, args.out))
    extremes = _extremes(Path(args.data))
    worst = -Objective.of(yaml.safe_load(Path(args.space).read_text())["metric"]).sign * math.inf
    for workers in args.workers:
        print(f"\n{workers} worker(s); the mean best value at 25% / 50% / 100% of the budget (seeds):\n")
        print("| method | " + " | ".join(args.tasks) + " | trials |")
        print("|---|" + "---|" * (len(args.tasks) + 1))
        for method in args.methods:
            cells, trials = [], []
            for task in args.tasks:
                runs = [r for r in lines if (r["task"], r["method"], r["workers"]) == (task, method, workers)]
                trials += [r["trials"] for r in runs]
                if not runs:
                    cells.append("-")
                    continue
                # (the first LCBench lines were written before replays recorded their budget)
                bests = [[best_at(r["incumbent"], f * r.get("budget", LCBench.BUDGET)) for r in runs]
                         for f in (0.25, 0.5, 1.0)]  # fmt: skip
                means = [statistics.fmean(worst if b is None else b for b in at) for at in bests]
                cells.append(" / ".join(f"{m:.2f}" for m in means) + f" ({len(runs)})")
            mean_trials = f"{statistics.fmean(trials):.0f}" if trials else "-"
            print(f"| {method} | " + " | ".join(cells) + f" | {mean_trials} |")
    if args.reach:
        reach_table(args, lines, worst)
    if not any(task in extremes for task in args.tasks):  # a curve table of our own has no YAHPO statistics
        return
    print("\nRandom search, 1 worker, at 100% of the budget: mean best val_accuracy and normalized regret "
          "((max - best) / (max - min), YAHPO's min and max):\n")  # fmt: skip
    print("| task | mean best | regret |\n|---|---|---|")
    for task in args.tasks:
        runs = [r for r in lines if (r["task"], r["method"], r["workers"]) == (task, "random", 1)]
        if runs and task in extremes:
            lo, hi = extremes[task]
            best = statistics.fmean(r["incumbent"][-1][1] for r in runs)
            print(f"| {task} | {best:.2f} | {(hi - best) / (hi - lo):.3f} |")


def reach_table(args: argparse.Namespace, lines: list[dict[str, Any]], worst: float) -> None:
    """Per task and workers: each method's mean best at 25 / 50 / 100% of the budget with its standard error, and
    the budget (median fraction over seeds, and how many reached it) to reach the mean final value of `--reach`."""
    objective = Objective.of(yaml.safe_load(Path(args.space).read_text())["metric"])
    for task in args.tasks:
        for workers in args.workers:
            print(f"\n{Path(task).stem}, {workers} worker(s): mean best ± standard error (seeds), and the budget to "
                  f"reach {args.reach}'s mean value at 100%:\n")  # fmt: skip
            print("| method | 25% | 50% | 100% | budget to reach (seeds that did) | seeds |\n|---|---|---|---|---|---|")
            of = {m: [r for r in lines if (r["task"], r["method"], r["workers"]) == (task, m, workers)]
                  for m in args.methods}  # fmt: skip
            if not of.get(args.reach):
                continue
            target = statistics.fmean(r["incumbent"][-1][1] for r in of[args.reach])
            for method, runs in of.items():
                if not runs:
                    continue
                cells = []
                for f in (0.25, 0.5, 1.0):
                    at = [best_at(r["incumbent"], f * r.get("budget", LCBench.BUDGET)) for r in runs]
                    values = [worst if b is None else b for b in at]
                    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
                    cells.append(f"{statistics.fmean(values):.2f} ± {se:.2f}")
                spent = [next((x / r.get("budget", LCBench.BUDGET) for x, v in r["incumbent"]
                               if not objective.better(target, v)), math.inf) for r in runs]  # fmt: skip
                hits = sum(math.isfinite(x) for x in spent)
                median = statistics.median(spent)
                reach = f"{median:.2f} ({hits}/{len(runs)})" if math.isfinite(median) else f"not reached ({hits})"
                print(f"| {method} | " + " | ".join(cells) + f" | {reach} | {len(runs)} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA), help="YAHPO Gym's data folder (holding lcbench/)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), help="LCBench tasks, or curve tables (FILE.jsonl)")
    ap.add_argument(
        "--space",
        default=str(SPACE),
        help="the sweep file whose space the methods search (--table: whose metric's goal)",
    )
    ap.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "grid"], choices=list(METHODS))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--slow-seeds", type=int, default=10, help="seeds for the methods whose engine is slow")
    ap.add_argument("--slowest-seeds", type=int, default=5, help="seeds for Optuna's GP sampler")
    ap.add_argument("--jobs", type=int, default=2, help="replays run at once (processes)")
    ap.add_argument("--out", nargs="+", default=["bench_search.jsonl"], help="replays go to the first; all are read")
    ap.add_argument("--table", action="store_true", help="print the tables from --out; run nothing")
    ap.add_argument("--reach", choices=list(METHODS), help="--table: also each method's spread and its budget to "
                    "reach this method's final value")  # fmt: skip
    args = ap.parse_args(argv)
    table(args) if args.table else run(args)


if __name__ == "__main__":
    main()
