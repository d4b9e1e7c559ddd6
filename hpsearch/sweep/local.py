"""The embedded controller: W&B's open-source `sweeps` engine deciding over the SQLite store.

The same engine the W&B cloud controller runs: `next_run` for grid/random/bayes suggestions and
`stop_runs` for hyperband, fed with every trial's parameters, state and per-epoch history.
"""

from __future__ import annotations

import os
from typing import Any

from hpsearch.sweep.spec import sweeps
from hpsearch.sweep.store import Store, Sweep, Trial

# What the engine calls our states (an early-terminated run is 'killed' in W&B's vocabulary).
ENGINE_STATE = {
    "running": "running",
    "finished": "finished",
    "failed": "failed",
    "stopped": "killed",
    "preempted": "preempted",
    "crashed": "crashed",
}


def stale_after() -> float:
    """Seconds without a heartbeat after which a running trial's agent is presumed dead."""
    return float(os.environ.get("HPSEARCH_STALE_AFTER", "60"))


MAX_RESUMES = 2  # default: how many times a trial whose agent died is resumed before it stays crashed


class LocalController:
    def __init__(self, store: Store, sweep: Sweep, max_resumes: int = MAX_RESUMES):
        self.store, self.sweep, self.max_resumes = store, sweep, max_resumes
        self.config = sweeps.SweepConfig(sweep.config)  # validated, with the engine's defaults filled in

    def next_trial(self, agent: str) -> tuple[Trial, str] | None:
        """Claim the next trial for `agent`: a preempted one first, then a crashed one whose checkpoint this
        machine sees (at most `max_resumes` crashes), else a new suggestion. Returns (trial, how): how is
        "started", "resumed" (from its checkpoint) or "restarted" (a preempted trial whose checkpoint is not on
        this machine, from epoch 0); None when the sweep has nothing left (grid done, run_cap reached)."""
        with self.store.transaction(self.sweep.id):  # no other agent claims in between
            self.store.mark_crashed(self.sweep.id, stale_after())
            trials = self.store.trials(self.sweep.id)
            preempted = next((t for t in trials if t.state == "preempted"), None)
            if preempted:
                restart = not self.store.checkpoint(preempted).exists()
                self.store.claim(preempted.id, agent, restart=restart)
                return self.store.trial(preempted.id), "restarted" if restart else "resumed"
            # A crashed trial's checkpoint may sit on a machine that is down: only an agent that sees it resumes it.
            crashed = next((t for t in trials if self.resumable(t) and self.store.checkpoint(t).exists()), None)
            if crashed:
                self.store.claim(crashed.id, agent)
                return self.store.trial(crashed.id), "resumed"
            cap = self.sweep.config.get("run_cap")
            suggestion = None
            if not cap or len(trials) < cap:
                suggestion = sweeps.next_run(self.config, self._engine_runs(trials))
            if suggestion is None:
                self.store.mark_exhausted(self.sweep.id)
                return None
            params = {k: v["value"] for k, v in suggestion.config.items()}
            return self.store.add_trial(self.sweep.id, params, agent), "started"

    def resumable(self, trial: Trial) -> bool:
        """A crashed trial that may yet be resumed (by an agent that sees its checkpoint)."""
        return trial.state == "crashed" and trial.crashes <= self.max_resumes

    def record_epoch(self, trial: Trial, record: dict[str, Any]) -> None:
        self.store.add_epoch(trial.id, record)

    def should_stop(self, trial: Trial) -> bool:
        """Hyperband's verdict for a running trial, over the history of every trial in the sweep."""
        if "early_terminate" not in self.config:
            return False
        runs = self._engine_runs(self.store.trials(self.sweep.id))
        return any(r.name == trial.id for r in sweeps.stop_runs(self.config, runs))

    def finish(
        self,
        trial: Trial,
        state: str,
        exit_code: int | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        self.store.end(trial.id, state, exit_code, error, summary)

    def _engine_runs(self, trials: list[Trial]) -> list[sweeps.SweepRun]:
        return [
            sweeps.SweepRun(
                name=t.id,
                state=ENGINE_STATE[t.state],
                config={k: {"value": v} for k, v in t.params.items()},
                history=self.store.history(t.id),
                summary_metrics=t.summary,
            )
            for t in trials
        ]
