"""Optuna studies for `method: custom` sweeps, as W&B's scheduler contract has them: each function takes the
sweep's SweepInfo and returns an `optuna.Study`. A sweep file names one with `scheduler: {engine: optuna, source:
hpsearch/studies.py, optimizer: NAME}`, so the same file runs under `hpsearch agent` and `wandb sweep-scheduler`;
one that names none gets `default` from hpsearch (W&B's scheduler would make a plain TPE study instead).

A study's enqueued trials (Optuna's `enqueue_trial`) are the sweep's first trials, under `hpsearch agent` and
`wandb sweep-scheduler` alike: `gp_recipe` and `gp_digits` start from a configuration known to be good.

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


def _rungs(sweep: Any, eta: int, below: int, mode: str = "truncated", brackets: int = 1) -> optuna.pruners.BasePruner:
    """Promotion with reduction factor `eta` and the lowest rung at the trials' epochs / eta^`below` (at least 1):
    `below` rungs under the top, none so low that its ranks are a coin flip on a long schedule; rungs read in
    `mode`; `brackets` of Hyperband over them."""
    from hpsearch.sweep.promotion import PromotingHalving

    epochs = _epochs(sweep)
    lowest = max(1, round(epochs / eta**below)) if isinstance(epochs, int) else MIN_EPOCHS
    return PromotingHalving(lowest, eta, mode, brackets)


def promote(sweep: Any) -> optuna.Study:
    """TPE with pause and promote (hpsearch/sweep/promotion.py): rungs at a 9th and a 3rd of the trials' epochs;
    TPE sees each paused trial at the rung it reached. Plain Optuna and `wandb sweep-scheduler` run its pruner as
    Optuna's ASHA stopping rule."""
    return _study(sweep, _tpe(), _rungs(sweep, REDUCTION, 2))


def promote_low(sweep: Any) -> optuna.Study:
    """`promote` with a third rung lower, at a 27th of the trials' epochs."""
    return _study(sweep, _tpe(), _rungs(sweep, REDUCTION, 3))


def promote_cooldown(sweep: Any) -> optuna.Study:
    """`promote` with each rung read on a cooled model: hpsearch's trainer runs every trial on a wsd schedule and
    trains a short cooldown branch at each rung, whose value the rung judges (the run goes on from the stable
    state)."""
    return _study(sweep, _tpe(), _rungs(sweep, REDUCTION, 2, "cooldown"))


def promote_compressed(sweep: Any) -> optuna.Study:
    """`promote` with each rung a whole run of its length (its schedule compressed into it), a promotion running
    the configuration again at the next rung's length."""
    return _study(sweep, _tpe(), _rungs(sweep, REDUCTION, 2, "compressed"))


def promote_hyperband(sweep: Any) -> optuna.Study:
    """TPE with Hyperband's four brackets over promotion: rungs from a 27th, a 9th or a 3rd of the epochs, or none
    (full-length runs), each configuration drawn into one, each bracket promoting its own top third."""
    return _study(sweep, _tpe(), _rungs(sweep, REDUCTION, 3, brackets=4))


# eta 2, rungs at an eighth, a quarter and a half of the epochs (5, 10 and 20 of 40: the readings
# benchmarks/record_schedules.py records), a half of each rung promoted
def promote_halving(sweep: Any) -> optuna.Study:
    """TPE with promotion at an eighth, a quarter and a half of the epochs, a half of each rung promoted."""
    return _study(sweep, _tpe(), _rungs(sweep, 2, 3))


def promote_halving_cooldown(sweep: Any) -> optuna.Study:
    """`promote_halving` with each rung read on a cooled model (as `promote_cooldown`)."""
    return _study(sweep, _tpe(), _rungs(sweep, 2, 3, "cooldown"))


def promote_halving_compressed(sweep: Any) -> optuna.Study:
    """`promote_halving` with each rung a whole run of its length (as `promote_compressed`)."""
    return _study(sweep, _tpe(), _rungs(sweep, 2, 3, "compressed"))


def promote_halving_hyperband(sweep: Any) -> optuna.Study:
    """`promote_halving` with Hyperband's four brackets over it (rungs from an eighth, a quarter, a half, or none)."""
    return _study(sweep, _tpe(), _rungs(sweep, 2, 3, brackets=4))


def promote_halving_hyperband_compressed(sweep: Any) -> optuna.Study:
    """`promote_halving_hyperband` with each rung a whole run of its length."""
    return _study(sweep, _tpe(), _rungs(sweep, 2, 3, "compressed", brackets=4))


def promote_halving_hyperband_cooldown(sweep: Any) -> optuna.Study:
    """`promote_halving_hyperband` with each rung read on a cooled model."""
    return _study(sweep, _tpe(), _rungs(sweep, 2, 3, "cooldown", brackets=4))


def promote_gp(sweep: Any) -> optuna.Study:
    """`promote` with Optuna's GP sampler, which models the trials that reached the top."""
    return _study(sweep, optuna.samplers.GPSampler(seed=random.getrandbits(32)), _rungs(sweep, REDUCTION, 2))


def gp(sweep: Any) -> optuna.Study:
    """Optuna's Gaussian-process sampler (logEI); every trial runs to its end."""
    return _study(sweep, optuna.samplers.GPSampler(seed=random.getrandbits(32)), optuna.pruners.NopPruner())


# The candidate that measured best in the replays, on LCBench with 1 and 8 workers and on our digits curves
# (docs/search.md). A suggestion refits the GP on every trial on record, seconds at 1,000 trials: nothing beside
# trials of GPU-hours, while a sweep of thousands of cheap trials names `tpe`.
default = gp


def lies_in(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether the distribution can draw `value` (Optuna runs an enqueued value outside it, with a warning)."""
    try:
        optuna.trial.create_trial(params={"v": value}, distributions={"v": distribution}, value=0.0)
    except ValueError:
        return False
    return True


def _first(study: optuna.Study, sweep: Any, known: dict[str, Any]) -> optuna.Study:
    """`study` with `known` enqueued as its first trial: each of its values that lies in the sweep's space (the
    sampler draws the rest)."""
    from wandb.sdk.sweeps.scheduler.optuna import search_space_from_sweep_config

    space = search_space_from_sweep_config(sweep.config.get("parameters") or {})
    first = {k: v for k, v in known.items() if k in space and lies_in(space[k], v)}
    if first:
        study.enqueue_trial(first)
    return study


def gp_recipe(sweep: Any) -> optuna.Study:
    """`gp`, its first trial the reference report's best run (the trainer's defaults, 82.13% on CIFAR-100)."""
    from hpsearch.params import DEFAULTS  # (here: the other studies need only optuna and wandb, wherever they run)

    return _first(gp(sweep), sweep, DEFAULTS)


# The recorded digits grid's best configuration at the 6th of its 15 epochs (91.9% val_acc; 96.4% at its 15th, 0.3
# below the grid's best), sweeps/simulate/digits-grid.jsonl. It ran the trainer's default hflip, 0.7, which
# quickstart.yaml's space lacks: there the sampler draws hflip.
DIGITS = {"lr": 0.3, "weight_decay": 1.0e-3, "aa": "none", "cutmix": 0.0}


def gp_digits(sweep: Any) -> optuna.Study:
    """`gp`, its first trial the digits configuration known to be good (DIGITS)."""
    return _first(gp(sweep), sweep, DIGITS)
