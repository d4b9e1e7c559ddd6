"""What starting from what is known buys a sweep (a benchmark, not a test): `python -m benchmarks.bench_warmstart
[--tasks 189906 189908 sweeps/simulate/digits-grid.jsonl] [--seeds 10] [--budget-fraction 1] [--jobs 2] [--out
FILE.jsonl]`, then `--table` prints docs/search.md's Warm starts table from what FILE.jsonl holds.

Three arms per task (an LCBench task, or a curve table searched over sweeps/simulate/digits.yaml) and seed s, each
the default GP study (hpsearch/studies.py) with 1 worker, replayed as `hpsearch simulate` replays it (budget: the
source's, as bench_search's, times --budget-fraction):
- cold: the sweep alone;
- warm: the same sweep told the finished trials of an earlier sweep of the same task, the cold replay of seed s+1
  (mod --seeds), as `create-sweep --prior FILE.jsonl` tells them (their curves as a curve table, read by
  hpsearch/sweep/prior.py); they are not run and cost no budget;
- first: the sweep whose study enqueues a known-good configuration as its first trial: gp_digits's on the digits
  table, on LCBench the best configuration of that earlier sweep.
Every replay is one line of FILE.jsonl, written as it ends (a stopped run goes on where it was).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_search import DATA, REPO, SPACE, _study
from hpsearch.objective import Objective
from hpsearch.simulate.curves import CurveTable, LCBench, scales
from hpsearch.simulate.results import best_at
from hpsearch.sweep.spec import leaves, read_code

TABLE_SPACE = REPO / "sweeps" / "simulate" / "digits.yaml"
TASKS = ("189906", "189908", str(REPO / "sweeps" / "simulate" / "digits-grid.jsonl"))
ARMS = ("cold", "warm", "first")
FIRST = """from hpsearch import studies

def first(sweep):
    study = studies.gp(sweep)
    study.enqueue_trial({known!r})
    return study
"""

_sources: dict[str, Any] = {}  # per worker process: one surrogate or table per task


def _source(task: str, data: str) -> Any:
    if task not in _sources:
        _sources[task] = CurveTable.from_jsonl(Path(task)) if task.endswith(".jsonl") else LCBench(task, Path(data))
    return _sources[task]


def _space(task: str) -> dict[str, Any]:
    return yaml.safe_load((TABLE_SPACE if task.endswith(".jsonl") else SPACE).read_text())


def _run(data: str, task: str, arm: str, seed: int, fraction: float, earlier: dict | None) -> dict[str, Any]:
    """One replay; `earlier`: the cold line of the earlier sweep (warm and first arms)."""
    from hpsearch.simulate.replay import replay
    from hpsearch.sweep.prior import read_priors
    from hpsearch.sweep.store import Store

    source, space = _source(task, data), _space(task)
    config = _study("gp")(space)
    code, priors = read_code(config, REPO), None
    with tempfile.TemporaryDirectory() as tmp:
        if arm == "warm":  # the earlier sweep's results as a curve table, told as --prior tells them
            table = Path(tmp) / "earlier.jsonl"
            lines = [{"config": c, "history": source.curve(c, scales(config)).records} for c in earlier["finished"]]
            table.write_text("".join(json.dumps(line) + "\n" for line in lines))
            priors = read_priors([str(table)], config, None)
        elif arm == "first" and task.endswith(".jsonl"):
            config = _study("gp_digits")(space)
            code = read_code(config, REPO)
        elif arm == "first":
            text = FIRST.format(known=earlier["best_config"])
            config["scheduler"] = {**config["scheduler"], "source": "first.py", "optimizer": "first"}
            code = {"path": "first.py", "text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()}
        budget = round(source.budget() * fraction)
        with Store(Path(tmp) / "store") as store:
            r = replay(store, config, source, 1, budget, seed, code, priors)
            trials = store.trials(r.sweep)
    own = [t for t in trials if "prior" not in t.attrs and t.state == "finished"]
    objective = Objective.of(config["metric"])
    best = min(own, key=lambda t: objective.sort_key(t.summary.get(objective.name)), default=None)
    return {
        "task": task,
        "arm": arm,
        "seed": seed,
        "budget": budget,
        "fraction": fraction,
        "trials": r.trial_count,
        "priors": len(priors or []),
        "incumbent": r.incumbent,
        "seconds": round(r.seconds, 2),
        "finished": [leaves(t.params) for t in own],
        "best_config": leaves(best.params) if best else None,
    }


def _lines(path: Path) -> dict[tuple, dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        out.setdefault((r["task"], r["arm"], r["seed"], r["fraction"]), r)
    return out


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    for arms in (["cold"], ["warm", "first"]):  # the earlier sweeps first: the other arms start from them
        done = _lines(out)
        jobs = [(task, arm, seed) for seed in range(args.seeds) for task in args.tasks for arm in arms
                if (task, arm, seed, args.budget_fraction) not in done]  # fmt: skip
        print(f"{len(jobs)} {'/'.join(arms)} replays to run, {len(done)} lines in {out}", flush=True)
        with ProcessPoolExecutor(args.jobs) as pool, out.open("a") as fh:
            futures = []
            for task, arm, seed in jobs:
                earlier = done.get((task, "cold", (seed + 1) % args.seeds, args.budget_fraction))
                futures.append(pool.submit(_run, args.data, task, arm, seed, args.budget_fraction, earlier))
            for n, future in enumerate(as_completed(futures), 1):
                line = future.result()
                fh.write(json.dumps(line) + "\n")
                fh.flush()
                print(
                    f"[{n}/{len(jobs)}] {Path(line['task']).stem} {line['arm']} seed {line['seed']}: best "
                    f"{line['incumbent'][-1][1]:.2f}, {line['trials']} trials, {line['seconds']:.0f} s",
                    flush=True,
                )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _mean_se(values: list[float]) -> str:
    finite = len(values) > 1 and all(map(math.isfinite, values))
    se = statistics.stdev(values) / math.sqrt(len(values)) if finite else math.nan
    return f"{statistics.fmean(values):.2f} ± {se:.2f}"


def table(args: argparse.Namespace) -> None:
    """Markdown: per task and arm, the mean best value (± its standard error over seeds) at 25 / 50 / 100% of the
    budget, and the budget each seed took to reach the cold replay's final best value of the same seed (median
    fraction; how many seeds reached it within the budget). Replays count only the trials they ran."""
    lines = _lines(Path(args.out))
    sign = {task: Objective.of(_space(task)["metric"]).sign for task in args.tasks}
    print("| task | arm | best at 25% | at 50% | at 100% | budget to the cold 100% value (reached) | seeds |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks:
        cold = {r["seed"]: r for r in lines.values() if (r["task"], r["arm"], r["fraction"]) ==
                (task, "cold", args.budget_fraction)}  # fmt: skip
        for arm in ARMS:
            runs = [
                r
                for r in lines.values()
                if (r["task"], r["arm"], r["fraction"]) == (task, arm, args.budget_fraction) and r["seed"] in cold
            ]
            if not runs:
                continue
            worst = -sign[task] * math.inf  # (a seed that found nothing yet: the mean shows it)
            cells = [
                _mean_se([_or(best_at(r["incumbent"], f * r["budget"]), worst) for r in runs]) for f in (0.25, 0.5, 1)
            ]
            target = {s: sign[task] * r["incumbent"][-1][1] for s, r in cold.items()}
            took = [next((x for x, v in r["incumbent"] if sign[task] * v >= target[r["seed"]]), math.inf) / r["budget"]
                    for r in runs]  # fmt: skip
            reached = [t for t in took if math.isfinite(t)]
            median = f"{statistics.median(took):.2f}" if len(reached) > len(took) / 2 else "> 1"
            what = arm + (f" ({statistics.fmean(r['priors'] for r in runs):.0f} priors)" if arm == "warm" else "")
            name = Path(task).stem if task.endswith(".jsonl") else f"lcbench {task}"
            print(f"| {name} | {what} | " + " | ".join(cells) + f" | {median} ({len(reached)}/{len(took)}) | "
                  f"{len(runs)} |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA), help="YAHPO Gym's data folder (holding lcbench/)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), help="LCBench tasks, or curve tables (FILE.jsonl)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget-fraction", type=float, default=1.0, help="of the source's budget (bench_search's)")
    ap.add_argument("--jobs", type=int, default=2, help="replays run at once (processes)")
    ap.add_argument("--out", default="bench_warmstart.jsonl")
    ap.add_argument("--table", action="store_true", help="print the table from --out; run nothing")
    args = ap.parse_args(argv)
    table(args) if args.table else run(args)


if __name__ == "__main__":
    main()
