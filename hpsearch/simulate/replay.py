"""A sweep replayed on recorded curves: its search run by the real agent (`sweep/agent.py`, its claim, supervise,
record and decide order), with curves in place of trainers and a simulated clock in place of the wall clock
(simulate/backend.py), as Syne Tune's simulator backend reuses its tuner loop. N workers are the agent's N slots.

The decisions are the real ones: the sweep's own controller over a real store (W&B's `sweeps` engine, an Optuna
study, the claims, run_cap, grid exhaustion). What only a replay needs stays here, around the agent: no heartbeats,
signals or lease fence; no trial counts as crashed; a paused trial's curve waits where it paused (its place stands
for its checkpoint) and a promotion continues it; each trial runs as long as its curve's planned epochs; the budget
in epochs ends the replay; and records wait in memory until the engine next reads (as an agent's records wait
while its database is away), which is what keeps a replay cheap. Nothing here decides what to run or when to stop.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.objective import Objective
from hpsearch.simulate.backend import Clock, CurveProcess, Spent
from hpsearch.simulate.curves import Curve, Source, scales
from hpsearch.sweep.agent import Agent
from hpsearch.sweep.controller import Claim, Start, SweepController, controller_for
from hpsearch.sweep.engine import Decision
from hpsearch.sweep.prior import Prior, add_sweep
from hpsearch.sweep.slots import Slot
from hpsearch.sweep.spec import leaves
from hpsearch.sweep.store import State, Store, StoreError, Trial

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
    promoted: int  # promotions: paused trials resumed, and configurations started again at a longer schedule
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


class _Replaying:
    """The sweep's controller as the replay's agent sees it: each claimed trial gets its curve (a promoted one the
    curve it paused on) and runs the curve's planned epochs; records wait until the engine next reads; and the
    replay's counts and incumbent are kept as trials end."""

    def __init__(self, controller: SweepController, source: Source, config: dict[str, Any], clock: Clock):
        self.controller, self.source, self.clock = controller, source, clock
        self.scales, self.objective = scales(config), Objective.of(config["metric"])
        self.stopper, self.stops_anytime = controller.stopper, False
        self.curves: dict[str, Curve] = {}  # by trial id: the running trials' curves
        self.paused: dict[str, Curve] = {}  # by trial id: where each paused trial's curve waits
        controller.sees = lambda trial: trial.id in self.paused  # a paused curve's place stands for its checkpoint
        self.pending: dict[str, tuple[Trial, list[dict[str, Any]]]] = {}
        self.last: dict[str, dict[str, Any]] = {}  # each trial's latest record
        self.counts = {State.PAUSED: 0, State.STOPPED: 0, Start.PROMOTED: 0}
        self.trial_count, self.distinct = 0, set()
        self.incumbent: list[list[float]] = []

    @property
    def done(self) -> bool:
        return self.controller.done

    def flush(self) -> None:
        """Into the store with every record the trials wrote: the engine reads every trial's history."""
        for trial, records in self.pending.values():
            self.controller.record_epochs(trial, records)
        self.pending.clear()

    def next_trial(self, slot: int) -> Claim | None:
        self.flush()
        claim = self.controller.next_trial(slot)
        if claim is None:
            return None
        trial = claim.trial
        self.counts[Start.PROMOTED] += claim.how == Start.PROMOTED
        if trial.id in self.paused:  # promoted where it paused (a compressed rung's promotion is a new run)
            self.curves[trial.id] = self.paused.pop(trial.id)
        else:
            self.curves[trial.id] = curve = self.source.curve(leaves(trial.params), self.scales)
            self.trial_count += 1
            self.distinct.add(curve.config)
        claim.planned = self.curves[trial.id].planned
        return claim

    def launch(self, trial: Trial, slot: Slot) -> CurveProcess:
        return CurveProcess(self.clock, self.curves[trial.id], trial.epochs, self.controller.store.trial_dir(trial))

    def started(self, trial: Trial, pgid: int) -> None:
        """(no process group to record)"""

    def record_epochs(self, trial: Trial, records: list[dict[str, Any]]) -> None:
        self.pending.setdefault(trial.id, (trial, []))[1].extend(records)
        self.last[trial.id] = records[-1]

    def decide(self, trial: Trial) -> Decision:
        if not self.controller.stops:  # (a controller that can never stop a trial is not asked)
            return Decision.CONTINUE
        self.flush()
        return self.controller.decide(trial)

    def finish(
        self,
        trial: Trial,
        state: State,
        exit_code: int | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        self.flush()
        self.controller.finish(trial, state, exit_code, error, summary)
        curve = self.curves.pop(trial.id)
        if state == State.PAUSED:
            self.paused[trial.id] = curve
        self.counts[state] = self.counts.get(state, 0) + 1
        value = self.last.get(trial.id, {}).get(self.objective.name)  # (a failed trial's last value counts too)
        if self.objective.better(value, self.incumbent[-1][1] if self.incumbent else None):
            self.incumbent.append([self.clock.spent, value])

    def abandon(self, trial: Trial) -> None:
        self.controller.abandon(trial)

    def beat(self, trials: list[Trial]) -> list[str]:
        return []


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
    clock = Clock(workers, budget)
    ours = _Replaying(controller, source, config, clock)
    agent = Agent(ours, [Slot(None, 1) for _ in range(workers)], ours.launch, hang_timeout=math.inf,
                  stale_after=math.inf, heartbeat=math.inf, echo=lambda line: None, clock=clock, sleep=clock.sleep,
                  signals={})  # fmt: skip
    try:
        agent.run(fence=False)
    except Spent:
        pass
    if agent.error:  # (the agent gives up on a store that fails for good; a replay says so)
        raise StoreError(agent.error)
    ours.flush()  # the store holds what ran, the trials the budget cut included
    seconds = time.perf_counter() - began
    return Replay(sweep.id, seed, ours.trial_count, clock.spent, ours.counts[State.PAUSED], ours.counts[Start.PROMOTED],
                  ours.counts[State.STOPPED], len(ours.distinct), ours.incumbent, controller.engine_seconds,
                  seconds)  # fmt: skip


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
