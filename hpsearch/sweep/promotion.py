"""Pause and promote: asynchronous successive halving in its promotion form (Li et al., "A System for Massively
Parallel Hyperparameter Tuning", MLSys 2020, Algorithm 2), over the trials as the store holds them.

Rungs at min_epochs x eta^k epochs below a trial's own `epochs` (the top). A trial that reaches a rung goes on if it
is in the top 1/eta of every trial that reached that rung so far, else it pauses there (its checkpoint kept). When a
slot frees, a paused trial that the rung's cohort, grown since, now ranks in its top 1/eta resumes (highest rung
first, then the best value), before any new configuration starts. A stop at a low rung is final; a pause is not: a
slow starter that a later, larger cohort ranks higher still gets its epochs.

Nothing here is held in memory between decisions: the rungs' cohorts are the trials' metric series in the store,
which every agent reads, and a promotion is claimed as any resume is (the store's compare-and-set on the paused
state), so each runs once whichever agent asks, and the book survives any agent.

In `compressed` mode a rung is not a point of a longer run but a whole run of the rung's length (its schedule,
warmup included, compressed into it: BOHB's and the NAS benchmarks' convention): a configuration starts at the
lowest rung, and its promotion is a new trial of the same configuration at the next rung's length, from scratch
(`promoted_from` names the run it promotes; the store's claim makes each promotion run once). A promoted
configuration pays its lower rungs again, and nothing pauses.

With `brackets` above 1 it is Hyperband over promotion (Li et al. 2020, section 3.3): each new configuration is
drawn into a bracket whose lowest rung is eta^b times the first, in the proportions Hyperband gives its brackets,
and each bracket promotes among its own trials; so a sweep hedges against a low rung that ranks recipes badly,
down to a bracket of full-length runs.

`PromotingHalving` is the Optuna pruner that names this scheduler in a study: plain Optuna and `wandb
sweep-scheduler`, which cannot resume a trial (optuna#3351), run it as Optuna's own ASHA stopping rule; hpsearch's
agents pause and promote with it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna

from hpsearch.objective import Objective, finite
from hpsearch.sweep.engine import Decision, promoted_from
from hpsearch.sweep.store import State, Trial

MODES = ("truncated", "cooldown", "compressed")


class PromotingHalving(optuna.pruners.SuccessiveHalvingPruner):
    """Optuna's SuccessiveHalvingPruner (ASHA, stopping) with rungs at `min_resource` x `reduction_factor`^k epochs;
    under `hpsearch agent`, promotion (see the module's doc). `mode` is how a rung is read: `truncated`, the run's
    own epoch there; `cooldown`, a cooldown branch of hpsearch's trainer there (sched wsd, its `cooldown_at` the
    trial's rungs: the cooled model's value, the run going on from the stable state); `compressed`, a whole run of
    the rung's length (see the module's doc). `brackets`: Hyperband's brackets over it (1: one, ASHA's); plain
    Optuna runs the first."""

    def __init__(self, min_resource: int = 1, reduction_factor: int = 3, mode: str = "truncated", brackets: int = 1):
        counts = (min_resource, reduction_factor, brackets)
        if not (all(isinstance(n, int) for n in counts) and min(counts) >= 1 and reduction_factor >= 2
                and mode in MODES):  # fmt: skip
            raise ValueError(
                f"PromotingHalving: min_resource {min_resource!r}, reduction_factor {reduction_factor!r}, mode "
                f"{mode!r}, brackets {brackets!r}; allowed: integers >= 1 and >= 2, {' | '.join(MODES)}, and an "
                f"integer >= 1"
            )
        super().__init__(min_resource=min_resource, reduction_factor=reduction_factor)
        self.rungs = Rungs(min_resource, reduction_factor, mode, brackets)


def bracket_of(trial: Trial) -> int:
    """The Hyperband bracket the trial was drawn into (0: the first, the only one without brackets)."""
    return int(trial.attrs.get("bracket", 0))


def value_at(trial: Trial, epoch: int) -> float | None:
    """The trial's metric at `epoch`, if its series holds that epoch."""
    epochs = trial.series.epochs
    i = int(np.searchsorted(epochs, epoch))
    return float(trial.series.values[i]) if i < len(epochs) and epochs[i] == epoch else None


@dataclass(frozen=True)
class Rungs:
    """Where a trial's rungs are and how they decide. A rung's value is the trial's series there, which holds a
    cooldown branch's value where the trainer measured one (store.add_epochs)."""

    min_epochs: int
    eta: int
    mode: str = "truncated"
    brackets: int = 1

    def below(self, top: int, bracket: int = 0) -> list[int]:
        """The rungs of a trial of `top` epochs in `bracket`: every min_epochs x eta^k, k >= bracket, under it (the
        top is its end, no rung)."""
        out, r = [], self.min_epochs * self.eta**bracket
        while r < top:
            out.append(r)
            r *= self.eta
        return out

    def bracket(self, top: int, key: str) -> int:
        """A new trial's bracket, drawn as Hyperband spreads its configurations: a bracket with n rungs under the
        top weighs ceil((S + 1) / (n + 1) x eta^n), S the first bracket's rungs. `key` (the sweep's id and the
        trial's number) seeds the draw, so every agent draws the same for one trial."""
        first = len(self.below(top))
        rungs = [len(self.below(top, b)) for b in range(min(self.brackets, first + 1))]
        weights = [math.ceil((first + 1) / (n + 1) * self.eta**n) for n in rungs]
        return random.Random(key).choices(range(len(rungs)), weights)[0]

    def after(self, rung: int, top: int) -> int:
        """The rung above `rung` in a trial of `top` epochs: the next one, else the top."""
        return next((r for r in self.below(top) if r > rung), top)

    def reached(self, trial: Trial, top: int | None, since: int = 0) -> int | None:
        """The highest rung the trial reached after epoch `since` (its epochs read late, several at once: the rung
        among them), if any."""
        epochs = trial.series.epochs
        last = int(epochs[-1]) if len(epochs) else 0
        return max((r for r in self.below(top or 0, bracket_of(trial)) if since < r <= last), default=None)

    def decide(
        self, trial: Trial, trials: list[Trial], objective: Objective, top: int | None, since: int = 0
    ) -> Decision:
        """A trial that reached a rung below its top since its last decision goes on if the rung ranks it in the
        top 1/eta, else it pauses."""
        rung = self.reached(trial, top, since)
        if rung is None:
            return Decision.CONTINUE
        ranked = self._ranked(value_at(trial, rung), _cohort(_kin(trials, trial), rung, objective), objective)
        return Decision.CONTINUE if ranked else Decision.PAUSE

    def promotable(
        self,
        trials: list[Trial],
        objective: Objective,
        top: Callable[[Trial], int | None],
        sees: Callable[[Trial], bool],
        length: Callable[[Trial], int | None],
    ) -> Trial | None:
        """The trial to promote now: one waiting at a rung that ranks it in the top 1/eta there (the highest rung
        first, then the best value). Waiting: a paused trial at the highest rung it reached, if this agent `sees`
        its checkpoint; in compressed mode, a finished run whose `length` is a rung below its configuration's `top`
        and that no trial promoted yet (its cohort: the runs of that length)."""
        compressed = self.mode == "compressed"
        promoted = {promoted_from(t) for t in trials} if compressed else set()

        def waits_at(t: Trial) -> int | None:
            if not compressed:
                return self.reached(t, top(t)) if t.state == State.PAUSED else None
            n, full = length(t), top(t)
            waiting = t.state == State.FINISHED and t.id not in promoted and n and full and n < full
            return n if waiting else None

        cohorts: dict[tuple[int, int], np.ndarray] = {}
        ready = []
        for t in trials:
            rung = waits_at(t)
            if rung is None:
                continue
            if (bracket_of(t), rung) not in cohorts:
                among = [u for u in _kin(trials, t) if length(u) == rung] if compressed else _kin(trials, t)
                cohorts[bracket_of(t), rung] = _cohort(among, rung, objective)
            value = value_at(t, rung)
            if self._ranked(value, cohorts[bracket_of(t), rung], objective) and (compressed or sees(t)):
                ready.append((-rung, objective.sort_key(value), t.seq, t))
        return min(ready, key=lambda x: x[:3])[3] if ready else None

    def _ranked(self, value: float | None, cohort: np.ndarray, objective: Objective) -> bool:
        """Whether `value` is in the top 1/eta of `cohort` (none is, in a cohort of fewer than eta; a value that does
        not rank, NaN, never is)."""
        places = len(cohort) // self.eta
        return bool(places) and finite(value) and int(np.sum(cohort > objective.sign * value)) < places


def _kin(trials: list[Trial], trial: Trial) -> list[Trial]:
    """The trials of `trial`'s bracket: each bracket promotes among its own."""
    return [t for t in trials if bracket_of(t) == bracket_of(trial)]


def _cohort(trials: list[Trial], epoch: int, objective: Objective) -> np.ndarray:
    """The values at `epoch` of every trial that reached it, signed so that bigger is better (NaN for one that does
    not rank: it counts in the cohort's size, never above another)."""
    values = [v for t in trials if (v := value_at(t, epoch)) is not None]
    return objective.sign * np.array([v if finite(v) else -objective.sign * np.inf for v in values], dtype=float)
