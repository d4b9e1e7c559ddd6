"""Optuna studies for `method: custom` sweeps, as W&B's scheduler contract has them: each function takes the
sweep's SweepInfo and returns an `optuna.Study`. A sweep file names one with `scheduler: {engine: optuna, source:
hpsearch/studies.py, optimizer: NAME}`, so the same file runs under `hpsearch agent` and `wandb sweep-scheduler`;
one that names none gets `default` from hpsearch (W&B's scheduler would make a plain TPE study instead).

`python -m benchmarks.bench_search` (in a checkout) measures them on LCBench (docs/search.md); `default` is the one
that measured best. Samplers are seeded from Python's random state, which `hpsearch simulate` seeds for each replay
(elsewhere it is unseeded, as Optuna's own default is).
"""

from __future__ import annotations

import random
from typing import Any

import optuna

# The stopping rule as in the W&B hyperband rows it is measured against: a rung at 2 epochs, a third promoted.
MIN_EPOCHS, REDUCTION = 2, 3


def _study(sweep: Any, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner | None = None):
    from wandb.sdk.sweeps.scheduler.optuna import sweep_directions

    return optuna.create_study(directions=sweep_directions(sweep.config), sampler=sampler, pruner=pruner)


def _tpe() -> optuna.samplers.TPESampler:
    # multivariate: one joint density, not one per parameter; constant_liar: running trials count as bad ones, so
    # agents that ask at once are not sent to the same place
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=random.getrandbits(32))


def _epochs(sweep: Any) -> int | str:
    """The trials' epochs where the sweep fixes them, else Optuna's estimate from finished trials."""
    epochs = (sweep.config.get("parameters") or {}).get("epochs", {})
    return epochs["value"] if isinstance(epochs.get("value"), int) else "auto"


def tpe(sweep: Any) -> optuna.Study:
    """TPE (multivariate, constant liar); every trial runs to its end."""
    return _study(sweep, _tpe(), optuna.pruners.NopPruner())


def tpe_hyperband(sweep: Any) -> optuna.Study:
    """TPE with Optuna's Hyperband pruner (brackets of successive halving); pruned trials still inform TPE at the
    epoch they reached."""
    pruner = optuna.pruners.HyperbandPruner(MIN_EPOCHS, _epochs(sweep), REDUCTION)
    return _study(sweep, _tpe(), pruner)


def tpe_asha(sweep: Any) -> optuna.Study:
    """TPE with asynchronous successive halving: a trial goes on past a rung if it is in the top third there."""
    pruner = optuna.pruners.SuccessiveHalvingPruner(MIN_EPOCHS, REDUCTION)
    return _study(sweep, _tpe(), pruner)


def gp(sweep: Any) -> optuna.Study:
    """Optuna's Gaussian-process sampler (logEI); every trial runs to its end."""
    return _study(sweep, optuna.samplers.GPSampler(seed=random.getrandbits(32)), optuna.pruners.NopPruner())


# The candidate that measured best in the replays, on LCBench with 1 and 8 workers and on our digits curves
# (docs/search.md). A suggestion refits the GP on every trial on record, seconds at 1,000 trials: nothing beside
# trials of GPU-hours, while a sweep of thousands of cheap trials names `tpe`.
default = gp
