"""The embedded controller: W&B's open-source `sweeps` engine deciding over the store.

The same engine the W&B cloud controller runs: `next_run` for grid/random/bayes suggestions and `stop_runs` for
hyperband. Decisions stay cheap as a sweep grows: the engine reads only each run's parameters, state and the
sweep metric (hyperband its per-epoch history, bayes its extremes), so that is all it is given, kept between
calls and reloaded only for the trials whose history changed; and a claim holds the sweep's lock only to check
that nobody claimed since the suggestion was made.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import PrivateAttr

from hpsearch.defaults import MAX_RESUMES, STALE_AFTER
from hpsearch.sweep.controller import Claim
from hpsearch.sweep.spec import sweeps
from hpsearch.sweep.store import State, Store, Sweep, Trial, Version, version

# What the engine calls our states (an early-terminated run is 'killed' in W&B's vocabulary).
ENGINE_STATE = {
    State.RUNNING: sweeps.RunState.running,
    State.FINISHED: sweeps.RunState.finished,
    State.FAILED: sweeps.RunState.failed,
    State.STOPPED: sweeps.RunState.killed,
    State.PREEMPTED: sweeps.RunState.preempted,
    State.CRASHED: sweeps.RunState.crashed,
}
CLAIM_ATTEMPTS = 5  # suggestions made again because another agent claimed first, before trying next round


class _EngineRun(sweeps.SweepRun):
    """The engine's run whose sweep-metric history comes filtered: the engine filters it anew on every call
    (a check per value, most of hyperband's cost at a thousand trials); here it is filtered once per change."""

    _metric: str | None = PrivateAttr(default=None)
    _valid: list[float] = PrivateAttr(default_factory=list)

    def metric_history(self, metric_name: str, filter_invalid: bool = False) -> list[float]:
        private = self.__pydantic_private__  # (a slot: pydantic's own attribute lookup costs more than the call)
        if filter_invalid and metric_name == private["_metric"]:
            return private["_valid"]
        return super().metric_history(metric_name, filter_invalid)


def _kept(cache: dict[str, tuple[Any, Any]], trial_id: str, key: Any, build: Any) -> Any:
    """The trial's value in `cache` if it was built from `key`, else built anew and kept."""
    kept, value = cache.get(trial_id, (None, None))
    if kept != key:
        value = build()
        cache[trial_id] = (key, value)
    return value


def _bands_reached(config: sweeps.SweepConfig, longest: int) -> sweeps.SweepConfig | dict[str, Any]:
    """The hyperband config with only the bands some history reaches. Given `min_iter`, W&B's engine makes 100
    bands (min_iter * eta^k) and scans every run at each, most of a stop decision's cost; a band longer than every
    history decides nothing (no run is measured there). The same bands up to the longest history in the `max_iter`
    form (max_iter / eta^i for i < s) decide exactly the same, where both forms compute them exactly: an integer
    eta."""
    et = config["early_terminate"]
    low, eta = et.get("min_iter"), et["eta"]
    if "max_iter" in et or not isinstance(low, int) or eta != int(eta) or eta < 2:
        return config
    k = 1
    while low * int(eta) ** k <= longest:
        k += 1
    return {**config, "early_terminate": {**et, "max_iter": low * int(eta) ** k, "s": k}}


def _plain(value: Any) -> Any:
    """A value as JSON takes it: numpy's scalars as Python's."""
    return value.item() if isinstance(value, np.generic) else value


class LocalController:
    def __init__(
        self,
        store: Store,
        sweep: Sweep,
        agent_id: str,
        max_resumes: int = MAX_RESUMES,
        stale_after: float = STALE_AFTER,
    ):
        """`stale_after`: seconds without a heartbeat after which another agent's running trial counts as crashed."""
        self.store, self.sweep, self.agent_id = store, sweep, agent_id
        self.max_resumes, self.stale_after = max_resumes, stale_after
        self.config = sweeps.SweepConfig(sweep.config)  # validated, with the engine's defaults filled in
        self.metric: str | None = (self.config.get("metric") or {}).get("name")
        self.done = False
        self.stops = "early_terminate" in self.config  # whether should_stop can ever say yes
        self.stops_anytime = False  # hyperband decides on new epochs
        self.stopper = (self.config.get("early_terminate") or {}).get("type", "early_terminate")
        self.engine_seconds = 0.0  # time spent in the engine's own calls (suggestions, stops), for benchmarks
        # trial -> (revision, its metric history as the engine reads it, the same filtered as the engine filters it)
        self._series: dict[str, tuple[int, list[dict[str, float]], list[float]]] = {}
        # trial -> (what it was built from, the engine run): as hyperband, and the suggestions, last saw it
        self._stop_runs: dict[str, tuple[Any, sweeps.SweepRun]] = {}  # (hyperband reads no parameters)
        self._suggest_runs: dict[str, tuple[Any, sweeps.SweepRun]] = {}
        self._held: set[str] = set()  # the trials this controller handed out and the agent has not ended
        self._known: dict[str, tuple[Version, Trial]] = {}  # the sweep's trials as last read, by their version

    def next_trial(self, slot: int) -> Claim | None:
        """Claim the next trial: a preempted one first, then a crashed one whose checkpoint this machine sees, or
        that crashed before its first epoch (at most `max_resumes` crashes), else a new suggestion. None when the
        sweep has nothing left (grid done, run_cap reached: `done`), or when other agents kept claiming first
        (try again next round)."""
        if self.done:
            return None
        self.store.mark_crashed(self.sweep.id, self.stale_after)
        for _ in range(CLAIM_ATTEMPTS):
            trials = self._trials()
            # A claim whose commit went through but whose answer was lost (the connection dropped) left a trial
            # running under this agent that it never got: it is this agent's to run, before anything new.
            orphan = next((t for t in trials if t.agent == self.agent_id and t.state == State.RUNNING
                           and t.id not in self._held), None)  # fmt: skip
            if orphan:
                seen = self.store.checkpoint(orphan).exists()
                how = "resumed" if seen else "restarted" if orphan.resumes else "started"
                return self._hold(Claim(orphan, how))
            # A crashed trial's checkpoint may sit on a machine that is down: only an agent that sees it resumes it;
            # one that crashed before its first epoch was recorded has nothing to lose, and starts again anywhere.
            pick = next((t for t in trials if t.state == State.PREEMPTED), None) or next(
                (t for t in trials if self.resumable(t) and (t.epochs == 0 or self.store.checkpoint(t).exists())),
                None,
            )
            if pick:
                restart = not self.store.checkpoint(pick).exists()
                if self.store.take(pick, self.agent_id, restart=restart):
                    return self._hold(Claim(self.store.trial(pick.id), "restarted" if restart else "resumed"))
                continue
            cap = self.sweep.config.get("run_cap")
            suggestion = None
            if not cap or len(trials) < cap:
                runs = self.engine_runs(trials)
                began = time.perf_counter()
                suggestion = sweeps.next_run(self.config, runs)
                self.engine_seconds += time.perf_counter() - began
            if suggestion is None:
                if self.store.exhausted_after(self.sweep.id, len(trials)):
                    self.done = True
                    return None
                continue
            # (the engine draws numpy scalars for some distributions, int_uniform's among them)
            params = {k: _plain(v["value"]) for k, v in suggestion.config.items()}
            trial = self.store.add_trial(self.sweep.id, params, self.agent_id, after=len(trials))
            if trial:
                return self._hold(Claim(trial, "started"))
        return None

    def _trials(self) -> list[Trial]:
        """The sweep's trials, in order; only those whose version changed since the last call are read again."""
        versions = self.store.trial_versions(self.sweep.id)
        stale = [trial_id for trial_id, v in versions if self._known.get(trial_id, (None,))[0] != v]
        for trial in self.store.trials_by_id(stale):
            self._known[trial.id] = (version(trial), trial)
        return [self._known[trial_id][1] for trial_id, _ in versions]

    def _hold(self, claim: Claim) -> Claim:
        self._held.add(claim.trial.id)
        return claim

    def resumable(self, trial: Trial) -> bool:
        """A crashed trial that may yet be resumed (by an agent that sees its checkpoint)."""
        return trial.state == State.CRASHED and trial.crashes <= self.max_resumes

    def started(self, trial: Trial, pgid: int) -> None:
        import socket

        self.store.set_process(trial.id, self.agent_id, pgid, socket.gethostname())

    def record_epochs(self, trial: Trial, records: list[dict[str, Any]]) -> None:
        self.store.add_epochs(trial.id, records, self.agent_id)

    def should_stop(self, trial: Trial) -> bool:
        """Hyperband's verdict for a running trial, over the metric history of every trial in the sweep. Asked
        after every epoch of every running trial, so it reads only the trials' versions (one query), and keeps
        each run, rebuilt only when its state or history changed."""
        if not self.stops:
            return False
        versions = self.store.trial_versions(self.sweep.id)
        self._load_series([(trial_id, v[2]) for trial_id, v in versions])
        runs = [_kept(self._stop_runs, i, v, lambda i=i, v=v: self._engine_run(i, v[0], {}, {})) for i, v in versions]
        longest = max((len(r.__pydantic_private__["_valid"]) for r in runs), default=0)
        began = time.perf_counter()
        stop = sweeps.stop_runs(_bands_reached(self.config, longest), runs)
        self.engine_seconds += time.perf_counter() - began
        return any(r.name == trial.id for r in stop)

    def beat(self, trials: list[Trial]) -> list[str]:
        return self.store.heartbeat(self.agent_id, [t.id for t in trials])

    def finish(
        self,
        trial: Trial,
        state: State,
        exit_code: int | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        self.store.end(trial.id, state, self.agent_id, exit_code, error, summary)
        self._held.discard(trial.id)

    def abandon(self, trial: Trial) -> None:
        self._held.discard(trial.id)

    def close(self) -> None:
        pass

    def engine_runs(self, trials: list[Trial]) -> list[sweeps.SweepRun]:
        """The trials as the engine sees them, holding only what it reads: parameters, state, and the sweep
        metric in history and summary."""
        self._load_series([(t.id, t.revision) for t in trials])
        return [
            _kept(
                self._suggest_runs,
                t.id,
                (t.revision, t.state),
                lambda t=t: self._engine_run(t.id, t.state, t.params, t.summary),
            )
            for t in trials
        ]

    def _load_series(self, revisions: list[tuple[str, int]]) -> None:
        """Keep each trial's sweep-metric history between calls; read again (in one query) those whose revision
        changed."""
        changed = {trial_id: rev for trial_id, rev in revisions if self._series.get(trial_id, (-1,))[0] != rev}
        if not changed or not self.metric:
            return
        fresh = self.store.histories(self.sweep.id, list(changed))
        for trial_id, rev in changed.items():
            series = [{self.metric: r[self.metric]} for r in fresh.get(trial_id, []) if self.metric in r]
            valid = [v[self.metric] for v in series if sweeps.run.is_number(v[self.metric])]
            self._series[trial_id] = (rev, series, valid)

    def _engine_run(
        self, trial_id: str, state: State, params: dict[str, Any], summary: dict[str, Any]
    ) -> sweeps.SweepRun:
        _, series, valid = self._series.get(trial_id, (0, [], []))
        # model_construct: the engine's pydantic model without re-validating every history on every call
        run = _EngineRun.model_construct(
            name=trial_id,
            state=ENGINE_STATE[state],
            config={k: {"value": v} for k, v in params.items()},
            history=series,
            summary_metrics={k: summary[k] for k in (self.metric,) if k in summary},
        )
        run._metric, run._valid = self.metric, valid
        return run
