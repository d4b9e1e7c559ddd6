"""The local controller decides exactly as W&B's `sweeps` engine does over full histories, although it feeds the
engine only what it reads and keeps that between calls: randomized sweeps, compared call by call as they grow."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from hpsearch.sweep.controller import controller_for
from hpsearch.sweep.spec import sweeps
from hpsearch.sweep.store import State, Store

ENGINE_STATE = {"running": "running", "finished": "finished", "failed": "failed", "stopped": "killed",
                "preempted": "preempted", "crashed": "crashed"}  # fmt: skip


def full_runs(store: Store, sweep_id: str) -> list[sweeps.SweepRun]:
    """The runs as the engine would get them with nothing left out: every record of every epoch, whole summaries."""
    return [
        sweeps.SweepRun(
            name=t.id,
            state=ENGINE_STATE[t.state],
            config={k: {"value": v} for k, v in t.params.items()},
            history=store.history(t.id),
            summary_metrics=t.summary,
        )
        for t in store.trials(sweep_id)
    ]


def value(rng: random.Random, epoch: int) -> float:
    """A metric value, now and then one the engine must filter out."""
    r = rng.random()
    return math.nan if r < 0.03 else math.inf if r < 0.05 else rng.uniform(0, 10 + 3 * epoch)


@pytest.mark.parametrize("seed", range(4))
def test_stop_decisions_and_suggestions_match_the_engine_over_full_histories(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    goal = rng.choice(["maximize", "minimize"])
    metric = rng.choice(["val_acc", "val_loss"])
    hyperband = {"type": "hyperband", "min_iter": rng.randint(1, 3), "eta": rng.choice([2, 3]), "strict": seed % 2 == 0}
    config = {
        "method": "bayes" if seed % 3 == 0 else "grid",
        "metric": {"name": metric, "goal": goal},
        "early_terminate": hyperband,
        "parameters": {"lr": {"values": [0.01 * i for i in range(1, 40)]}, "momentum": {"values": [0.8, 0.9]}},
    }
    store = Store(tmp_path)
    sweep = store.add_sweep(config, "local")
    controller = controller_for(store, sweep, "a")
    engine_config = sweeps.SweepConfig(config)
    running: dict[str, int] = {}  # trial id -> epochs so far
    for step in range(40):
        if len(running) < 4 or rng.random() < 0.15:  # a claim: the suggestion must be the engine's
            np.random.seed(step)
            expected = sweeps.next_run(engine_config, full_runs(store, sweep.id))
            np.random.seed(step)
            claim = controller.next_trial(0)
            assert claim is not None and {k: v["value"] for k, v in expected.config.items()} == claim.trial.params
            running[claim.trial.id] = 0
        trial_id = rng.choice(sorted(running))
        running[trial_id] += 1
        epoch = running[trial_id]
        record = {"epoch": epoch, "val_acc": value(rng, epoch), "val_loss": value(rng, -epoch)}
        if rng.random() < 0.1:
            del record[metric]  # an epoch that logged no value of the metric
        controller.record_epochs(store.trial(trial_id), [record])
        stop = {r.name for r in sweeps.stop_runs(engine_config, full_runs(store, sweep.id))}
        for t in running:
            assert (controller.decide(store.trial(t)) == "stop") == (t in stop), (seed, step, t)
        if rng.random() < 0.3:  # a trial ends (its state changes the engine's view too)
            ended = rng.choice(sorted(running))
            state = rng.choice([State.FINISHED, State.STOPPED, State.FAILED])
            store.end(ended, state, "a", summary={metric: value(rng, 9)} if state == State.FINISHED else None)
            del running[ended]
    assert len(store.trials(sweep.id)) > 6


def test_the_history_cache_follows_a_restarted_trial(tmp_path: Path):
    # A restarted trial loses its history (its revision changes): no decision may rest on the old one.
    config = {"method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {"lr": {"values": [0.1, 0.2, 0.3]}}}  # fmt: skip
    store = Store(tmp_path)
    sweep = store.add_sweep(config, "local")
    a = controller_for(store, sweep, "a")
    good, fair, bad = (a.next_trial(0).trial for _ in range(3))
    for trial, acc in ((good, 90.0), (fair, 80.0), (bad, 1.0)):
        a.record_epochs(trial, [{"epoch": 1, "val_acc": acc}])
    assert [a.decide(t) == "stop" for t in (good, fair, bad)] == [False, False, True]
    store.end(bad.id, State.PREEMPTED, "a")
    assert store.take(store.trial(bad.id), "b", restart=True)  # on a machine without its checkpoint: from epoch 0
    controller_for(store, sweep, "b").record_epochs(bad, [{"epoch": 1, "val_acc": 95.0}])
    assert [a.decide(t) == "stop" for t in (good, fair, bad)] == [False, True, False]


def test_integer_draws_are_stored_as_json_numbers(tmp_path: Path):
    """W&B's engine draws numpy integers for int_uniform: the claim stores them as ints (it could not before)."""
    store = Store(tmp_path)
    layers = {"distribution": "int_uniform", "min": 1, "max": 5}
    config = {"method": "random", "parameters": {"layers": layers}}
    claim = controller_for(store, store.add_sweep(config, "local"), "a").next_trial(0)
    stored = store.trial(claim.trial.id).params
    assert type(stored["layers"]) is int and 1 <= stored["layers"] <= 5
