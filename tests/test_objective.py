"""One objective, one sign: for each goal, status, report and replay rank the same trials, a NaN value and a missing
one among them, and each check fails if any one of them ranks the other way. Seconds, in process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from plotly.colors import sample_colorscale

from hpsearch.objective import Objective
from hpsearch.report import gather, parallel_figure
from hpsearch.simulate.curves import CurveTable
from hpsearch.simulate.replay import replay
from hpsearch.simulate.results import reached
from hpsearch.sweep.status import status_of
from hpsearch.sweep.store import State, Store

GOALS = ["maximize", "minimize"]
# The trials' final val_acc in creation order: a NaN first (it must not become the best), a missing one between.
FINAL = [math.nan, 50.0, None, 70.0, 30.0]
BEST_FIRST = {"maximize": [3, 1, 4, 0, 2], "minimize": [4, 1, 3, 0, 2]}  # indexes into FINAL: no value ranks last


def metric(goal: str) -> dict:
    return {"name": "val_acc", "goal": goal}


def record(epoch: int, value: float | None) -> dict:
    return {"epoch": epoch, **({"val_acc": value} if value is not None else {})}


@pytest.mark.parametrize("goal", GOALS)
def test_status_and_report_rank_by_the_goal_with_nan_and_missing_values_last(tmp_path: Path, goal: str):
    store = Store(tmp_path)
    sweep = store.add_sweep({"method": "random", "metric": metric(goal), "parameters": {"k": {"min": 0, "max": 9}}},
                            "local")  # fmt: skip
    ids = []
    for k, value in enumerate(FINAL):
        trial = store.add_trial(sweep.id, {"k": k, "epochs": 1}, "agent-1")
        store.add_epochs(trial.id, [record(1, value)], "agent-1", "val_acc")
        store.end(trial.id, State.FINISHED, "agent-1", 0, None, record(1, value))
        ids.append(trial.id)
    # One more, still running, whose epochs rise then fall, with a NaN and a missing value among them.
    curve = store.add_trial(sweep.id, {"k": 9, "epochs": 5}, "agent-1")
    store.add_epochs(curve.id, [record(e, v) for e, v in enumerate([40.0, math.nan, 60.0, None, 55.0], 1)], "agent-1",
                     "val_acc")  # fmt: skip
    store.end(curve.id, State.STOPPED, "agent-1")

    ranked = [t["id"] for t in status_of(sweep, store.trials(sweep.id), store.clock())["trials"]]
    best_first = [ids[i] for i in BEST_FIRST[goal]]
    assert [i for i in ranked if i != curve.id] == best_first

    data = gather(store, sweep)
    assert data["best"]["id"] == best_first[0]
    assert next(t for t in data["trials"] if t["id"] == curve.id)["best_epoch"] == (3 if goal == "maximize" else 1)
    # The parallel-coordinates plot: the better the value, the brighter its line; the best is the brightest.
    lines = {t["name"]: t["line"]["color"] for t in parallel_figure(data)["data"] if t.get("name")}
    assert lines[best_first[0]] == sample_colorscale("Viridis", [1.0])[0]


@pytest.mark.parametrize("goal", GOALS)
def test_a_replay_s_incumbent_improves_by_the_goal_past_nan_and_missing_values(tmp_path: Path, goal: str):
    """A grid run in order, one epoch a trial: the incumbent is [epochs spent, value] at each improvement."""
    table = tmp_path / "t.jsonl"
    lines = [{"config": {"k": k}, "history": [record(1, v) | {"epoch_time": 1.0}]} for k, v in enumerate(FINAL)]
    table.write_text("".join(json.dumps(line) + "\n" for line in lines))  # (NaN as JSON's NaN, as Python writes it)
    config = {"method": "grid", "metric": metric(goal), "parameters": {"k": {"values": list(range(len(FINAL)))}}}
    with Store(tmp_path / "store") as store:
        r = replay(store, config, CurveTable.from_jsonl(table), 1, 100, 0)
    assert r.epochs == len(FINAL)
    assert r.incumbent == ([[2, 50.0], [4, 70.0]] if goal == "maximize" else [[2, 50.0], [5, 30.0]])
    objective = Objective.of(metric(goal))
    target = 60.0 if goal == "maximize" else 40.0  # reached by the trial that ran 4th, or 5th
    assert reached(r, target, objective) == (4 if goal == "maximize" else 5)


@pytest.mark.parametrize("goal", GOALS)
def test_the_objective_ranks_nan_and_missing_values_last(goal: str):
    objective = Objective.of(metric(goal))
    assert Objective.from_config({"metric": {"name": "val_acc"}}) == Objective("val_acc", "minimize")  # W&B's default
    assert Objective.from_config({"method": "grid"}) is None
    values = [math.nan, 50.0, None, 70.0, "n/a", True, math.inf, 30.0]
    assert sorted(values, key=objective.sort_key)[:3] == ([70.0, 50.0, 30.0] if goal == "maximize" else
                                                           [30.0, 50.0, 70.0])  # fmt: skip
    assert objective.best(values) == (70.0 if goal == "maximize" else 30.0)
    assert objective.better(50.0, math.nan) and objective.better(50.0, None)
    assert not objective.better(math.nan, 50.0) and not objective.better(None, 50.0)
    assert objective.better(70.0, 50.0) == (goal == "maximize")
    assert objective.best([None, math.nan]) is None
    with pytest.raises(ValueError, match="allowed: maximize, minimize"):
        Objective("val_acc", "max")
