"""`method: custom` sweeps with `scheduler.engine: optuna`: the schema W&B checks, the study built as W&B's
scheduler builds it, many agents sharing one study through the store, pruners, define-by-run spaces, terminators,
and the errors of a bad scheduler. In-process controllers on a real store for the rules (seconds), real agent
processes on SQLite and PostgreSQL for the sharing."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import env, hpsearch, make_sweep, open_store, plotly_figures, run_agent

from hpsearch.sweep.controller import controller_for
from hpsearch.sweep.spec import read_code
from hpsearch.sweep.store import State, Store, Sweep, Trial

TOY = Path(__file__).parent / "toy_program.py"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def custom(tmp_path: Path, source: str | None = None, **scheduler) -> dict:
    """A custom sweep of the toy program's x in [0, 1] (score: best at x = 0.8), its scheduler's source here."""
    config = {
        "method": "custom",
        "metric": {"name": "score", "goal": "maximize"},
        "program": str(TOY),
        "parameters": {"x": {"min": 0.0, "max": 1.0}, "epochs": {"value": 3}, "epoch_s": {"value": 0.05}},
        "scheduler": {"engine": "optuna", **scheduler},
    }
    if source is not None:
        config["scheduler"]["source"] = str(write(tmp_path / "study.py", source))
    return config


def score(x: float, epoch: int, epochs: int = 3) -> float:
    return epoch / epochs * (100 - 100 * abs(x - 0.8))


def run(controller, trial, epochs: int = 3) -> State:
    """Run a claimed trial as the toy program would, asking the controller after each epoch as the agent does."""
    x = trial.params["x"]
    record = {}
    for epoch in range(1, epochs + 1):
        record = {"epoch": epoch, "score": score(x, epoch)}
        controller.record_epochs(trial, [record])
        if controller.decide(trial) == "stop":
            controller.finish(trial, State.STOPPED, summary=record)
            return State.STOPPED
    controller.finish(trial, State.FINISHED, 0, summary=record)
    return State.FINISHED


def new_sweep(store: Store, config: dict):
    return store.add_sweep(config, "local", code=read_code(config))


TPE_SEEDED = """
import optuna

def study(sweep):
    sampler = optuna.samplers.TPESampler(seed=1, n_startup_trials=5, multivariate=True, constant_liar=True)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=optuna.pruners.NopPruner())
"""


def test_tpe_concentrates_near_the_optimum_where_random_search_does_not(tmp_path: Path):
    store = Store(tmp_path)
    sweep = new_sweep(store, custom(tmp_path, TPE_SEEDED, optimizer="study"))
    controller = controller_for(store, sweep, "a", reseed=False)
    xs = []
    for _ in range(25):
        claim = controller.next_trial(0)
        xs.append(claim.trial.params["x"])
        run(controller, claim.trial)
    startup, guided = xs[:5], xs[10:]
    # uniform draws lie 0.34 from 0.8 on average; TPE's, after its first trials, near it
    assert statistics.median(abs(x - 0.8) for x in guided) < 0.1 < statistics.median(abs(x - 0.8) for x in startup)


PRUNED = """
import optuna

def study(sweep):
    # hopeless: a score under 60 at epoch 2 (x more than 0.1 from 0.8)
    pruner = optuna.pruners.ThresholdPruner(lower=60.0, n_warmup_steps=2)
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3), pruner=pruner)
"""


def test_the_studys_pruner_stops_a_hopeless_trial_at_the_epoch_it_judges(tmp_path: Path):
    store = Store(tmp_path)
    sweep = new_sweep(store, custom(tmp_path, PRUNED, optimizer="study"))
    controller = controller_for(store, sweep, "a", reseed=False)
    assert controller.stops and controller.stopper == "Optuna's ThresholdPruner"
    for _ in range(8):
        run(controller, controller.next_trial(0).trial)
    trials = store.trials(sweep.id)
    for t in trials:
        hopeless = score(t.params["x"], 2) < 60.0
        assert (t.state, t.epochs) == ((State.STOPPED, 2) if hopeless else (State.FINISHED, 3)), t.params
    assert {t.state for t in trials} == {State.STOPPED, State.FINISHED}
    # the study (as of the next decision) holds the stopped trials as pruned, with the values they reported
    controller.next_trial(0)
    study = controller.engine.study
    pruned = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == sum(t.state == State.STOPPED for t in trials) and all(
        len(t.intermediate_values) == 2 for t in pruned
    )


GRID = """
import optuna

def study(sweep):
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler({"x": [0.1, 0.5, 0.8, 0.9]}))
"""


def test_two_agents_share_one_study_each_sees_the_others_trials_and_a_grid_runs_each_point_once(tmp_path: Path):
    store = Store(tmp_path)
    sweep = new_sweep(store, custom(tmp_path, GRID, optimizer="study"))
    a, b = controller_for(store, sweep, "a"), controller_for(store, sweep, "b")
    first = a.next_trial(0).trial
    second = b.next_trial(0).trial  # b's study holds a's trial as running: not the same point again
    (seen,) = [t for t in b.engine.study.get_trials() if t.number == 0]
    assert seen.state == optuna.trial.TrialState.RUNNING and seen.params == first.params
    assert second.params != first.params
    run(a, first)
    third, fourth = b.next_trial(0).trial, a.next_trial(0).trial
    assert sorted(t.params["x"] for t in (first, second, third, fourth)) == [0.1, 0.5, 0.8, 0.9]
    assert a.next_trial(0) is None and not a.done  # every point started: none runs twice, and some may yet fail
    for controller, trial in ((b, second), (b, third), (a, fourth)):
        run(controller, trial)
    assert a.next_trial(0) is None and b.next_trial(0) is None and a.done and b.done  # the grid is spent
    assert store.sweep(sweep.id).exhausted
    (done,) = [t for t in b.engine.study.get_trials() if t.number == 0]  # a's result reached b's study
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == pytest.approx(score(first.params["x"], 3))


ASHA = """
import optuna

def study(sweep):
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner)
"""


def test_a_pruners_state_set_in_one_agent_reaches_the_others(tmp_path: Path):
    """Successive halving keeps each trial's value at each rung in the trial's attrs: another agent's pruner compares
    against them."""
    store = Store(tmp_path)
    sweep = new_sweep(store, custom(tmp_path, ASHA, optimizer="study"))
    a, b = controller_for(store, sweep, "a"), controller_for(store, sweep, "b")
    trial = a.next_trial(0).trial
    a.record_epochs(trial, [{"epoch": 1, "score": 50.0}])
    a.decide(trial)
    rungs = store.trial(trial.id).attrs["optuna"]["pruner"]
    assert rungs == {"epochs": 1, "system_attrs": {"completed_rung_0": 50.0}}
    other = b.next_trial(0).trial
    (mirrored,) = [t for t in b.engine.study.get_trials() if t.number == 0]
    assert mirrored.system_attrs["completed_rung_0"] == 50.0
    b.record_epochs(other, [{"epoch": 1, "score": 10.0}])
    assert b.decide(other) == "stop"  # below the other agent's trial at the rung: halved away


def preempted_after_epoch_1(tmp_path: Path, source: str, score: float) -> tuple[Store, Sweep, Trial]:
    """Agent a's first trial of a sweep of `source`'s study: one epoch recorded, asked whether to stop (as an agent
    asks after every epoch), then preempted."""
    store = Store(tmp_path)
    sweep = new_sweep(store, custom(tmp_path, source, optimizer="study"))
    a = controller_for(store, sweep, "a")
    trial = a.next_trial(0).trial
    a.record_epochs(trial, [{"epoch": 1, "score": score}])
    a.decide(trial)
    a.finish(trial, State.PREEMPTED)
    return store, sweep, trial


def test_a_resumed_trial_is_the_same_study_trial(tmp_path: Path):
    store, sweep, trial = preempted_after_epoch_1(tmp_path, PRUNED, 20.0)
    store.checkpoint(trial).parent.mkdir(parents=True)
    store.checkpoint(trial).write_text("its checkpoint")  # (seen from b's machine: b resumes it)
    b = controller_for(store, sweep, "b")
    claim = b.next_trial(0)
    assert (claim.trial.id, claim.how) == (trial.id, "resumed")
    b.record_epochs(claim.trial, [{"epoch": 2, "score": 30.0}])
    assert b.decide(claim.trial) == "stop"  # its own history, on: under 60 at epoch 2
    (only,) = b.engine.study.get_trials()
    assert only.number == 0 and only.intermediate_values == {1: 20.0, 2: 30.0}


SPACE_AND_TERMINATOR = """
import optuna

def space(trial):
    kind = trial.suggest_categorical("kind", ["near", "far"])
    x = trial.suggest_float("near_x", 0.7, 0.9) if kind == "near" else trial.suggest_float("far_x", 0.0, 0.3)
    return {"x": x, "kind": kind}

def study(sweep):
    def enough(study):  # three trials with a value: the search is done
        return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) >= 3
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)), enough
"""


def test_a_define_by_run_space_and_a_terminator_as_wandbs_scheduler_takes_them(tmp_path: Path):
    config = custom(tmp_path, SPACE_AND_TERMINATOR, optimizer="study", search_space="space")
    del config["parameters"]  # W&B: `parameters` may go when `search_space` is set
    store = Store(tmp_path)
    sweep = new_sweep(store, config)
    controller = controller_for(store, sweep, "a")
    claims = []
    while (claim := controller.next_trial(0)) is not None:
        claims.append(claim.trial)
        run(controller, claim.trial)
    assert len(claims) == 3 and controller.done  # the terminator ended the sweep
    for t in claims:  # the trial runs what the function returned; the study keeps what it suggested
        assert set(t.params) == {"x", "kind"} and (0.7 <= t.params["x"] <= 0.9) == (t.params["kind"] == "near")
        assert set(t.attrs["optuna"]["params"]) == {"kind", f"{t.params['kind']}_x"}


def test_multi_objective_search_marks_the_pareto_front(tmp_path: Path):
    config = custom(tmp_path, None)
    del config["metric"]
    config["metrics"] = [{"name": "a", "goal": "maximize"}, {"name": "b", "goal": "maximize"}]
    config["parameters"]["y"] = {"min": 0.0, "max": 1.0}
    sweep_id = make_sweep(tmp_path, config)
    p = run_agent(tmp_path, sweep_id, "--count", "10")
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(hpsearch("status", sweep_id, "--json", "--dir", str(tmp_path / "store"), cwd=tmp_path).stdout)
    trials = [t for t in data["trials"] if t["state"] == "finished"]
    assert len(trials) == 10

    def dominated(t: dict) -> bool:
        a, b = t["summary"]["a"], t["summary"]["b"]
        return any(u["summary"]["a"] >= a and u["summary"]["b"] >= b and u is not t and
                   (u["summary"]["a"], u["summary"]["b"]) != (a, b) for u in trials)  # fmt: skip

    assert [t["pareto"] for t in trials] == [not dominated(t) for t in trials]
    assert any(t["pareto"] for t in trials) and not all(t["pareto"] for t in trials)
    assert data["trials"][: sum(t["pareto"] for t in trials)] == [t for t in trials if t["pareto"]]  # front first
    table = hpsearch("status", sweep_id, "--dir", str(tmp_path / "store"), cwd=tmp_path).stdout
    assert "pareto" in table.splitlines()[1] and "maximize a, maximize b" in table.splitlines()[0]
    p = hpsearch("report", sweep_id, "-o", "r.html", "--dir", str(tmp_path / "store"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    front = [t for t in trials if t["pareto"]]
    (drawn,) = [
        tr for tr in plotly_figures((tmp_path / "r.html").read_text())["pareto"] if tr["name"] == "Pareto front"
    ]
    assert sorted(drawn["x"]) == sorted(t["summary"]["a"] for t in front)


# ---- real agents sharing one study ----


SHARED = """
import optuna

def study(sweep):
    # hopeless: a = 100 x under 30, whatever the epoch
    pruner = optuna.pruners.ThresholdPruner(lower=30.0)
    sampler = optuna.samplers.TPESampler(n_startup_trials=4, multivariate=True, constant_liar=True)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
"""


@pytest.mark.xdist_group("agents")
def test_agents_on_one_store_share_one_study_with_run_cap(tmp_path: Path, store_db: str | None):
    import subprocess

    config = custom(tmp_path, SHARED, optimizer="study")
    config["metric"] = {"name": "a", "goal": "maximize"}
    config["run_cap"] = 12
    # epochs that outlast the agent's rounds: each is judged while its trial still runs
    config["parameters"].update(epochs={"value": 6}, epoch_s={"value": 0.5})
    sweep_id = make_sweep(tmp_path, config)
    n = 3 if store_db else 2
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store")]
    agents = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(n)]  # fmt: skip
    outs = [p.communicate(timeout=300)[0] for p in agents]
    assert all(p.returncode == 0 for p in agents), outs
    trials = open_store(tmp_path / "store").trials(sweep_id)
    assert len(trials) == 12 and len({t.params["x"] for t in trials}) == 12  # run_cap held; every trial once
    assert len({t.agent for t in trials}) == n  # every agent took part
    for t in trials:  # the user's pruner decided every stop, in whichever agent ran the trial
        assert t.state == (State.STOPPED if 100 * t.params["x"] < 30 else State.FINISHED), t
    assert all(t.attrs["optuna"]["params"]["x"] == t.params["x"] for t in trials)  # each its own study trial


# ---- bad schedulers: one line, exit 2, nothing stored ----


def create(tmp_path: Path, config: dict, **kw):
    f = write(tmp_path / "s.yaml", yaml.safe_dump(config))
    return hpsearch("create-sweep", str(f), "--dir", str(tmp_path / "store"), cwd=tmp_path, **kw)


def one_line(p) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("hpsearch create-sweep: error: ")
    return line


def test_w_and_b_s_own_refusals_name_the_key(tmp_path: Path):
    config = custom(tmp_path, TPE_SEEDED, optimizer="study")
    config["early_terminate"] = {"type": "hyperband", "min_iter": 2}
    line = one_line(create(tmp_path, config))
    assert "early_terminate: `early_terminate` cannot be used together with `scheduler`" in line
    config = custom(tmp_path, TPE_SEEDED, optimizer="study")
    config["metrics"] = [{"name": "a"}, {"name": "b"}]
    assert "metric: `metric` and `metrics` cannot both be set" in one_line(create(tmp_path, config))
    config = {**custom(tmp_path), "method": "bayes"}
    line = one_line(create(tmp_path, config))
    assert "scheduler.engine: `scheduler.engine: optuna` does not support `method: bayes`" in line
    assert not (tmp_path / "store" / "hpsearch.db").exists()


def test_a_bad_scheduler_is_one_line_and_stores_nothing(tmp_path: Path):
    config = custom(tmp_path, None, optimizer="study")
    config["scheduler"]["source"] = "nosuch.py"
    line = one_line(create(tmp_path, config))
    assert "scheduler.source: cannot read 'nosuch.py': No such file or directory" in line
    wrong = custom(tmp_path, "def study(sweep):\n    return 42\n", optimizer="study")
    line = one_line(create(tmp_path, wrong))
    assert "'study' in" in line and "returned int instead of optuna.Study" in line  # W&B's own words
    missing = custom(tmp_path, "x = 1\n", optimizer="study")
    assert "has no attribute 'study'" in one_line(create(tmp_path, missing))
    backwards = custom(
        tmp_path, "import optuna\ndef study(sweep):\n    return optuna.create_study()\n", optimizer="study"
    )
    assert "Study direction 'minimize' does not match the sweep metric goal 'maximize'" in one_line(
        create(tmp_path, backwards)
    )
    nested = custom(tmp_path)
    nested["parameters"]["group"] = {"parameters": {"z": {"min": 0.0, "max": 1.0}}}
    assert "Cannot infer an optuna distribution" in one_line(create(tmp_path, nested))
    # without Optuna (a package of that name that fails to import stands in for its absence)
    shim = tmp_path / "shim" / "optuna"
    shim.mkdir(parents=True)
    write(shim / "__init__.py", "raise ImportError('No module named optuna')\n")
    e = env(PYTHONPATH=os.pathsep.join([str(shim.parent), *sys.path]))
    line = one_line(create(tmp_path, custom(tmp_path), env=e))
    assert "scheduler.engine: optuna needs the optuna package; allowed: pip install optuna" in line
    write(shim.parent / "ax.py", "raise ImportError('No module named ax')\n")  # and without Ax
    line = one_line(create(tmp_path, {**custom(tmp_path), "scheduler": {"engine": "ax"}}, env=e))
    assert "scheduler.engine: ax needs the ax-platform package; allowed: pip install ax-platform" in line
    assert not (tmp_path / "store" / "hpsearch.db").exists()  # nothing stored, not even an empty database


def test_the_source_is_kept_with_the_sweep_so_every_agent_builds_the_same_study(tmp_path: Path):
    config = custom(tmp_path, TPE_SEEDED, optimizer="study")
    sweep_id = make_sweep(tmp_path, config)
    (tmp_path / "study.py").write_text("raise SystemExit('an agent must not read this file')\n")
    p = run_agent(tmp_path, sweep_id, "--count", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = open_store(tmp_path / "store").sweep(sweep_id)
    assert sweep.code["text"] == TPE_SEEDED and len(sweep.code["sha256"]) == 64
    assert [t.state for t in open_store(tmp_path / "store").trials(sweep_id)] == ["finished", "finished"]


AX = """
from ax.api.client import Client
from ax.api.configs import RangeParameterConfig

def client(sweep):
    ax = Client(random_seed=0)
    ax.configure_experiment(parameters=[RangeParameterConfig(name="x", bounds=(0.0, 1.0), parameter_type="float")])
    ax.configure_optimization(objective="score")
    return ax
"""


def test_an_ax_experiment_is_shared_by_two_agents_as_w_and_bs_ax_scheduler_drives_it(tmp_path: Path):
    config = custom(tmp_path, AX, optimizer="client")
    config["scheduler"]["engine"] = "ax"
    config["parameters"] = {"x": {"min": 0.0, "max": 1.0}}
    store = Store(tmp_path)
    sweep = new_sweep(store, config)
    a, b = controller_for(store, sweep, "a"), controller_for(store, sweep, "b")
    first = a.next_trial(0).trial
    second = b.next_trial(0).trial  # b's experiment holds a's trial, running: another point
    assert set(first.params) == {"x"} and first.params != second.params
    for controller, trial in ((a, first), (b, second)):
        run(controller, trial)
    third = a.next_trial(0).trial
    assert third.params not in (first.params, second.params)
    assert store.trial(first.id).summary["score"] == pytest.approx(score(first.params["x"], 3))


def ax_sweep(tmp_path: Path, source: str = AX) -> tuple[Store, Sweep]:
    config = custom(tmp_path, source, optimizer="client")
    config["scheduler"]["engine"] = "ax"
    config["parameters"] = {"x": {"min": 0.0, "max": 1.0}}
    store = Store(tmp_path)
    return store, new_sweep(store, config)


def test_an_ax_experiment_is_built_once_per_change_of_the_sweeps_trials(tmp_path: Path):
    """Each build runs the scheduler's source: here it counts itself."""
    built = tmp_path / "built"
    counted = AX.replace("def client(sweep):\n", f"def client(sweep):\n    open({str(built)!r}, 'a').write('.')\n")
    store, sweep = ax_sweep(tmp_path, counted)
    a = controller_for(store, sweep, "a")

    def builds() -> int:
        return len(built.read_text())

    assert builds() == 1  # the check for a stopping strategy, over no trials
    trial = a.next_trial(0).trial  # no trial since: that experiment makes the suggestion
    assert builds() == 1
    for _ in range(3):  # three decisions on one state of the sweep: one build
        assert a.engine.should_stop(trial, a.trials.read()) == (False, None)
    assert builds() == 2
    a.record_epochs(trial, [{"epoch": 1, "score": score(trial.params["x"], 1)}])  # the trial changed
    a.engine.should_stop(trial, a.trials.read())
    assert builds() == 3
    second = a.next_trial(1).trial  # the same trials: that experiment makes the suggestion, and is spent
    assert builds() == 3 and second.params != trial.params
    a.engine.should_stop(trial, a.trials.read())
    assert builds() == 4


@pytest.mark.parametrize("engine", ["optuna", "ax"])
def test_engine_seconds_hold_the_adapters_own_work(tmp_path: Path, engine: str):
    """The time to bring an engine's library up to date with the store (the Optuna mirror's sync, the Ax
    experiment's rebuild) counts as deciding time: here that work takes at least 0.2 s per decision."""
    store, sweep = ax_sweep(tmp_path) if engine == "ax" else (Store(tmp_path), None)
    sweep = sweep or new_sweep(store, custom(tmp_path))
    a = controller_for(store, sweep, "a")
    name = "_build" if engine == "ax" else "_sync"
    work = getattr(a.engine, name)

    def slow(*args):
        time.sleep(0.2)
        return work(*args)

    setattr(a.engine, name, slow)
    trial = a.next_trial(0).trial
    a.record_epochs(trial, [{"epoch": 1, "score": score(trial.params["x"], 1)}])
    a.engine.stops = True  # (asked whether it stops even where no strategy or pruner would)
    a.decide(trial)
    assert a.engine_seconds >= 0.2 * (1 if engine == "ax" else 2)  # (Ax's first suggestion reuses its first build)


def test_a_trial_restarted_from_epoch_0_has_not_passed_its_rungs(tmp_path: Path):
    """Its pruner's state (a rung's value) counts only once it has run as far again."""
    store, sweep, trial = preempted_after_epoch_1(tmp_path, ASHA, 50.0)  # rung 0 passed, at epoch 1
    assert store.take(store.trial(trial.id), "b", restart=True)  # its checkpoint out of reach: from epoch 0
    b = controller_for(store, sweep, "b")
    assert b.decide(store.trial(trial.id)) != "stop"  # (b's study mirrors the sweep as it asks)
    (mirrored,) = [t for t in b.engine.study.get_trials() if t.number == 0]
    assert "completed_rung_0" not in mirrored.system_attrs and mirrored.intermediate_values == {}
