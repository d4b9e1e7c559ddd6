"""A sweep replayed on recorded curves: its search as `hpsearch agent` runs it, with curves in place of trainers
and a simulated clock in place of the wall clock, as Syne Tune's simulator backend replays its schedulers.

The decisions are the real ones: the sweep's own controller over a real store (W&B's `sweeps` engine, the claims,
run_cap, grid exhaustion), asked the agent's questions in the agent's order: after the epochs due at a moment
(trials in slot order), each new epoch is recorded and `decide` asked of its trial (not after its last: it has
finished); then a trial is claimed for each free worker. A paused trial's curve waits where it paused, and a
promotion continues it there. An epoch takes the time its record says (`epoch_time`, else 1), so workers finish
out of step as real ones do. Records wait in memory until the controller next reads (as an agent's wait while
its database is away), which is what keeps a replay cheap; a controller that can never stop a trial is not asked.
Nothing here decides what to run or when to stop.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.objective import Objective
from hpsearch.simulate.curves import Curve, Source, scales
from hpsearch.sweep.controller import Start, controller_for
from hpsearch.sweep.engine import Decision
from hpsearch.sweep.prior import Prior, add_sweep
from hpsearch.sweep.spec import leaves
from hpsearch.sweep.store import State, Store, Trial

AGENT = "simulator"


@dataclass
class Replay:
    """One replay of one sweep: what it ran, and the incumbent's history: [epochs spent, best value] each time the
    best value (by the metric's goal) improved."""

    sweep: str  # its id in the store it replayed in
    seed: int
    trial_count: int  # trials it started
    epochs: int
    paused: int  # pauses (a trial pauses at each rung it is not promoted past at once)
    promoted: int  # paused trials resumed
    stopped: int
    distinct: int  # configurations of the source it ran (a table replays a repeated nearest one at full cost)
    incumbent: list[list[float]]
    engine_seconds: float  # in the engine's suggestion and stop calls, its adapter's work included
    seconds: float  # the whole replay


@dataclass
class Result:
    """The replays of one sweep, one per seed."""

    name: str  # the sweep file, or "random search (reference)"
    runs: list[Replay]


@dataclass
class _Running:
    trial: Trial
    curve: Curve
    next_at: float  # when its next epoch ends, on the simulated clock
    ran: int = 0  # epochs of its curve it has run
    pending: list[dict[str, Any]] = field(default_factory=list)  # recorded by the trainer, not yet in the store


def epoch_time(record: dict[str, Any]) -> float:
    """The epoch's seconds, and its cooldown branch's if it ended on one."""
    t = record.get("epoch_time")
    branch = record.get("rung_time", 0.0)
    return (float(t) if isinstance(t, (int, float)) and t > 0 else 1.0) + float(branch)


def epochs_of(record: dict[str, Any]) -> int:
    """The epochs an epoch record cost: 1, and its cooldown branch's epochs if it ended on one."""
    return 1 + int(record.get("rung_epochs", 0))


def replay(
    store: Store,
    config: dict[str, Any],
    source: Source,
    workers: int,
    budget: int,
    seed: int,
    code: dict[str, str] | None = None,
    priors: list[Prior] | None = None,
) -> Replay:
    """Run `config`'s search (`code`: its scheduler's source, as spec.read_code keeps it) against `source` with
    `workers` trials at once until `budget` epochs are spent (each trial charged the epochs it ran, its cooldown
    branches included) or the search is done. The engine draws from Python's and numpy's global random state,
    seeded with `seed`; the sweep's id is the seed's too (Optuna's Hyperband pruner assigns brackets by it), so
    `store` holds one replay per seed.
    `priors`: results told to the sweep as `create-sweep --prior` tells them (not run, not in the budget)."""
    began = time.perf_counter()
    random.seed(seed)
    np.random.seed(seed)
    sweep = add_sweep(store, config, f"replay-{seed}", f"replay-{seed}", code, priors or [])
    # No other agent shares the store, so no trial of it ever counts as crashed.
    controller = controller_for(store, sweep, AGENT, workers, stale_after=math.inf, reseed=False)
    objective = Objective.of(config["metric"])
    sweep_scales = scales(config)
    running: dict[int, _Running] = {}
    paused: dict[str, _Running] = {}  # by trial id: where each paused trial's curve waits
    controller.sees = lambda trial: trial.id in paused  # a paused curve's place stands for its checkpoint
    counts = {State.PAUSED: 0, State.STOPPED: 0, Start.PROMOTED: 0}
    now, spent, trial_count, distinct = 0.0, 0, 0, set()
    incumbent: list[list[float]] = []

    def flush() -> None:
        for rn in running.values():
            if rn.pending:
                controller.record_epochs(rn.trial, rn.pending)
                rn.pending = []

    def end(slot: int, state: State) -> None:
        rn = running.pop(slot)
        counts[state] = counts.get(state, 0) + 1
        if state == State.PAUSED:
            paused[rn.trial.id] = rn
        controller.record_epochs(rn.trial, rn.pending)
        last = rn.curve.records[rn.ran - 1]
        error = f"its curve ends after epoch {rn.ran} of {rn.curve.planned}" if state == State.FAILED else None
        controller.finish(rn.trial, state, 1 if error else 0, error, last)
        value = last.get(objective.name)
        if objective.better(value, incumbent[-1][1] if incumbent else None):
            incumbent.append([spent, value])

    while True:
        for slot in range(workers) if spent < budget else ():
            if slot in running or controller.done:
                continue
            flush()  # the engine reads every trial's history
            claim = controller.next_trial(slot)
            if claim is None:
                continue
            counts[Start.PROMOTED] += claim.how == Start.PROMOTED
            if claim.trial.id in paused:  # promoted where it paused (a compressed rung's promotion is a new run)
                rn = running[slot] = paused.pop(claim.trial.id)
                rn.trial, rn.next_at = claim.trial, now + epoch_time(rn.curve.records[rn.ran])
                continue
            curve = source.curve(leaves(claim.trial.params), sweep_scales)
            running[slot] = _Running(claim.trial, curve, now + epoch_time(curve.records[0]))
            trial_count += 1
            distinct.add(curve.config)
        if not running or spent >= budget:
            break
        now = min(rn.next_at for rn in running.values())
        for slot in sorted(running):
            rn = running[slot]
            if rn.next_at != now:
                continue
            record = rn.curve.records[rn.ran]
            rn.ran += 1
            rn.pending.append(record)
            spent += epochs_of(record)
            if controller.stops and rn.ran < rn.curve.planned:
                flush()
                decision = controller.decide(rn.trial)
                if decision != Decision.CONTINUE:
                    end(slot, State.PAUSED if decision == Decision.PAUSE else State.STOPPED)
                    continue
            if rn.ran == len(rn.curve.records):
                end(slot, State.FINISHED if rn.ran >= rn.curve.planned else State.FAILED)
            else:
                rn.next_at = now + epoch_time(rn.curve.records[rn.ran])
            if spent >= budget:
                break
    flush()  # the store holds what ran, the trials the budget cut included
    seconds = time.perf_counter() - began
    return Replay(sweep.id, seed, trial_count, spent, counts[State.PAUSED], counts[Start.PROMOTED],
                  counts[State.STOPPED], len(distinct), incumbent, controller.engine_seconds, seconds)  # fmt: skip


UNLIKE_RANDOM = ("early_terminate", "run_cap", "scheduler")  # what a sweep adds to plain random search


def reference(config: dict[str, Any]) -> dict[str, Any]:
    """Random search over the same space, with no early termination: what every search should beat."""
    return {**{k: v for k, v in config.items() if k not in UNLIKE_RANDOM}, "method": "random"}


def compare(
    root: Path,
    configs: dict[str, dict[str, Any]],
    source: Source,
    workers: int,
    budget: int,
    seeds: int,
    codes: dict[str, dict[str, str] | None] | None = None,
) -> tuple[list[Result], Result]:
    """Replay each sweep (by name; `codes`: their schedulers' sources) with seeds 0..seeds-1, each in a store of
    its own in folder `root`; and the reference, random search over the first one's space (one of the sweeps, if
    one is that already)."""
    folders = (root / str(i) for i in itertools.count())

    def runs(config: dict[str, Any], code: dict[str, str] | None = None) -> list[Replay]:
        with Store(next(folders)) as store:
            return [replay(store, config, source, workers, budget, seed, code) for seed in range(seeds)]

    results = [Result(name, runs(config, (codes or {}).get(name))) for name, config in configs.items()]
    for result, config in zip(results, configs.values(), strict=True):
        if config.get("method") == "random" and not set(UNLIKE_RANDOM) & config.keys():
            return results, result
    return results, Result("random search (reference)", runs(reference(next(iter(configs.values())))))
