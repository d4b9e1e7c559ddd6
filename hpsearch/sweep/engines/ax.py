"""An Ax experiment as the engine (`method: custom`, `scheduler: {engine: ax, ...}`), where ax-platform is installed.

It is W&B's own Ax scheduler's optimizer (wandb/sdk/sweeps/scheduler/ax.py: `build_ax_optimizer`, `AxOptimizer`),
used as it is, from the sweep's trials in the store: whenever they changed, the optimizer is built anew (the
scheduler's source run again) and told every trial as W&B's scheduler tells a sweep it takes up again (a finished
or failed trial with `tell_existing_finished_run`; a running one adopted with `tell_existing_active_run`, its
latest epoch attached), so every agent of the sweep asks the same experiment. A built optimizer serves every
decision until the trials change, or until it has itself changed (it made a suggestion, or stopped a trial).
Ax's early stopping strategy, where the client has one, stops trials (recorded stopped); its terminator, or Ax
saying the optimization is complete, ends the sweep.
"""

from __future__ import annotations

import logging
from typing import Any

from hpsearch.sweep.engine import Engine, EngineError, Suggestion, source_file
from hpsearch.sweep.status import objectives
from hpsearch.sweep.store import State, Sweep, Trial, version

# The run states W&B's scheduler tells its optimizer, by ours.
_RUN_STATE = {
    State.RUNNING: "RUNNING",
    State.PREEMPTED: "RUNNING",  # (it resumes)
    State.FINISHED: "FINISHED",
    State.STOPPED: "KILLED",
    State.FAILED: "FAILED",
    State.CRASHED: "CRASHED",
}


class AxEngine(Engine):
    def __init__(self, sweep: Sweep):
        """Raises EngineError (one line) if ax-platform is missing or the experiment cannot be built."""
        try:
            import ax  # noqa: F401
        except ImportError:
            raise EngineError(
                "scheduler.engine: ax needs the ax-platform package; allowed: pip install ax-platform"
            ) from None
        logging.getLogger("ax").setLevel(logging.WARNING)  # (it announces each trial it makes and completes)
        self.sweep = sweep
        self.metrics = [m.name for m in objectives(sweep)]
        self._built: tuple[Any, Any, dict[str, tuple[Any, Any]]] | None = None  # (the trials' versions, _build's)
        optimizer = self._optimizer([])[0]
        # Only a client given an early stopping strategy stops trials (W&B's own check of it).
        self.stops = getattr(optimizer.client, "_maybe_early_stopping_strategy", None) is not None
        self.stopper = "Ax's early stopping strategy"

    def _optimizer(self, trials: list[Trial]) -> tuple[Any, dict[str, tuple[Any, Any]]]:
        """_build's for these trials: the one built last, while the trials are as they were then."""
        key = [(t.id, version(t)) for t in trials]
        if self._built is None or self._built[0] != key:
            self._built = (key, *self._build(trials))
        return self._built[1], self._built[2]

    def _build(self, trials: list[Trial]) -> tuple[Any, dict[str, tuple[Any, Any]]]:
        """W&B's AxOptimizer for the sweep, told the trials; and each running trial's id in it with what it was
        told of that trial (its latest epoch: what Ax's strategy judges)."""
        import wandb
        from wandb.sdk.sweeps.run_state import RunState
        from wandb.sdk.sweeps.scheduler.ax import build_ax_optimizer
        from wandb.sdk.sweeps.scheduler.optimizer import Run, RunConfig

        from hpsearch.sweep.engines.optuna import sweep_info

        with source_file(self.sweep) as source:
            try:
                optimizer = build_ax_optimizer(sweep_info(self.sweep, source))
            except (wandb.Error, ValueError, TypeError) as e:
                raise EngineError(f"scheduler: {' '.join(str(e).split())}") from None
        live = {}
        for t in trials:
            state = RunState[_RUN_STATE[State(t.state)]]
            config = RunConfig.from_values(t.params)
            if not state.is_alive:
                optimizer.tell_existing_finished_run(self._with_metrics(t, config, state))
            elif (run_id := optimizer.tell_existing_active_run(Run(config, state, t.id))) is not None:
                live[t.id] = run_id, self._with_metrics(t, config, state)
                optimizer.tell_run(*live[t.id])
        return optimizer, live

    def _with_metrics(self, t: Trial, config: Any, state: Any) -> Any:
        from wandb.sdk.sweeps.scheduler.optimizer import RunWithMetrics

        history = [{"_step": e, self.metrics[0]: v} for e, v in t.series.pairs()] if len(self.metrics) == 1 else []
        return RunWithMetrics(config, state, t.id, dict(t.summary), history)

    def suggest(self, trials: list[Trial]) -> Suggestion | None:
        optimizer, _ = self._optimizer(trials)
        if optimizer.has_terminator() and optimizer.should_terminate_sweep():
            self.done = True
            return None
        self._built = None  # asking adds a trial to the experiment that the store may never hold
        asked = optimizer.ask_n_runs(1)
        if asked is not None and not asked:  # Ax says the optimization is complete
            self.done = True
        return Suggestion(asked[0].config.flat_dict()) if asked else None

    def should_stop(self, trial: Trial, trials: list[Trial]) -> tuple[bool, None]:
        optimizer, live = self._optimizer(trials)
        if trial.id not in live:
            return False, None
        stop = optimizer.prune_run(*live[trial.id])
        if stop:  # (the experiment marked the trial stopped before the store did)
            self._built = None
        return stop, None
