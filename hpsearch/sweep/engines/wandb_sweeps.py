"""W&B's open-source `sweeps` engine, the one W&B's cloud controller runs: `next_run` for grid, random and bayes
suggestions, `stop_runs` for hyperband.

Decisions stay cheap as a sweep grows: the engine reads only each run's parameters, state and the sweep metric (its
history for hyperband, its extremes for bayes), so that is all it is given, from each trial's `series`; the runs
are kept between calls and rebuilt only for the trials whose version changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import PrivateAttr

from hpsearch.objective import Objective
from hpsearch.sweep.engine import Engine, Suggestion
from hpsearch.sweep.spec import sweeps
from hpsearch.sweep.store import State, Sweep, Trial, version

# What the engine calls our states (an early-terminated run is 'killed' in W&B's vocabulary).
ENGINE_STATE = {
    State.RUNNING: sweeps.RunState.running,
    State.FINISHED: sweeps.RunState.finished,
    State.FAILED: sweeps.RunState.failed,
    State.STOPPED: sweeps.RunState.killed,
    State.PREEMPTED: sweeps.RunState.preempted,
    State.CRASHED: sweeps.RunState.crashed,
}


class _EngineRun(sweeps.SweepRun):
    """The engine's run whose sweep-metric history comes ready: the engine reads it through `metric_history` (the
    only way it reads a run's history) and filters it anew on every call, a check per value, most of hyperband's
    cost at a thousand trials; here it is kept as the trial's series gave it, and filtered once per change."""

    _metric: str | None = PrivateAttr(default=None)
    _raw: list[Any] = PrivateAttr(default_factory=list)
    _valid: list[float] = PrivateAttr(default_factory=list)

    def metric_history(self, metric_name: str, filter_invalid: bool = False) -> list[float]:
        private = self.__pydantic_private__  # (a slot: pydantic's own attribute lookup costs more than the call)
        if metric_name == private["_metric"]:
            return private["_valid" if filter_invalid else "_raw"]
        return super().metric_history(metric_name, filter_invalid)


class WandbSweeps(Engine):
    def __init__(self, sweep: Sweep):
        self.config = sweeps.SweepConfig(sweep.config)  # validated, with the engine's defaults filled in
        self.metric: str | None = sweep.series_metric
        self.stops = "early_terminate" in self.config
        self.stopper = (self.config.get("early_terminate") or {}).get("type", "early_terminate")
        # Hyperband negates every run's whole history on every call to maximize a metric (a third of a decision's
        # cost at thousands of trials): its stop runs hold the values negated once, and it is told to minimize
        # them, which decides exactly the same.
        objective = Objective.from_config(self.config)
        self._negate = objective is not None and objective.sign > 0
        self._stop_config = self.config
        if self.stops and self._negate:
            self._stop_config = {**self.config, "metric": {**self.config["metric"], "goal": "minimize"}}
        # trial -> (what it was built from, the engine run): as the suggestions, and hyperband, last saw it
        self._suggest_runs: dict[str, tuple[Any, sweeps.SweepRun]] = {}
        self._stop_runs: dict[str, tuple[Any, sweeps.SweepRun]] = {}  # (hyperband reads no parameters)

    def suggest(self, trials: list[Trial]) -> Suggestion | None:
        runs = [self._run(self._suggest_runs, t, with_params=True) for t in trials]
        suggestion = sweeps.next_run(self.config, runs)
        if suggestion is None:  # a grid with no point left
            self.done = True
            return None
        # (the engine draws numpy scalars for some distributions, int_uniform's among them)
        return Suggestion({k: _plain(v["value"]) for k, v in suggestion.config.items()})

    def should_stop(self, trial: Trial, trials: list[Trial]) -> tuple[bool, None]:
        """Hyperband's verdict for a running trial, over the metric history of every trial in the sweep."""
        runs = [self._run(self._stop_runs, t, with_params=False) for t in trials]
        longest = max((len(r.__pydantic_private__["_valid"]) for r in runs), default=0)
        stop = sweeps.stop_runs(_bands_reached(self._stop_config, longest), runs)
        return any(r.name == trial.id for r in stop), None

    def _run(self, cache: dict[str, tuple[Any, sweeps.SweepRun]], t: Trial, with_params: bool) -> sweeps.SweepRun:
        """The trial as the engine sees it, holding only what it reads: parameters, state, and the sweep metric in
        history and summary; kept while the trial's version stays the same."""
        key = version(t)
        kept, run = cache.get(t.id, (None, None))
        if kept == key:
            return run
        # model_construct: the engine's pydantic model without re-validating every history on every call
        run = _EngineRun.model_construct(
            name=t.id,
            state=ENGINE_STATE[State(t.state)],
            config={k: {"value": v} for k, v in t.params.items()} if with_params else {},
            history=[],  # (see _EngineRun)
            summary_metrics={k: t.summary[k] for k in (self.metric,) if k in t.summary} if with_params else {},
        )
        run._metric = self.metric
        values = t.series.values if self.metric else t.series.values[:0]
        if not with_params and self._negate:  # (see _stop_config)
            values = -values
        run._raw, run._valid = values.tolist(), values[np.isfinite(values)].tolist()
        cache[t.id] = (key, run)
        return run


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
