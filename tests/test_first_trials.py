"""First trials: the configurations a sweep's Optuna study enqueues (`enqueue_trial` in its `optimizer` function, the
user's or hpsearch's) run first, in order, each once however many agents ask; the shipped sweeps start from a
configuration known to be good, under `hpsearch agent` and W&B's own scheduler alike; one that names a key the
sweep lacks or a value outside its space is refused at create-sweep. In-process controllers on a real store for the
rules, real agent processes for the sharing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import hpsearch, make_sweep, stub_sweep, two_agents_sharing

from hpsearch.params import DEFAULTS
from hpsearch.studies import DIGITS
from hpsearch.sweep.controller import controller_for
from hpsearch.sweep.spec import load_spec, read_code, varying
from hpsearch.sweep.store import Store

TOY = Path(__file__).parent / "toy_program.py"
REPO = Path(__file__).parents[1]


def study_source(*first: dict, space: bool = False) -> str:
    """A study file: a seeded random sampler, `first` enqueued in order, and (with `space`) a define-by-run space."""
    text = "import optuna\n\n"
    text += "def study(sweep):\n"
    text += "    s = optuna.create_study(direction='maximize', sampler=optuna.samplers.RandomSampler(seed=0))\n"
    text += "".join(f"    s.enqueue_trial({params!r})\n" for params in first)
    text += "    return s\n"
    if space:
        text += "\ndef space(trial):\n    return {'x': trial.suggest_float('x', 0.0, 1.0)}\n"
    return text


def custom(tmp_path: Path, source: str, **scheduler) -> dict:
    """A custom sweep of the toy program's x in [0, 1], its study in `source`."""
    (tmp_path / "study.py").write_text(source)
    return {
        "method": "custom",
        "metric": {"name": "score", "goal": "maximize"},
        "program": str(TOY),
        "parameters": {"x": {"min": 0.0, "max": 1.0}, "epochs": {"value": 1}, "epoch_s": {"value": 0.0}},
        "scheduler": {"engine": "optuna", "source": str(tmp_path / "study.py"), "optimizer": "study", **scheduler},
    }


def finish(controller, trial) -> None:
    controller.record_epochs(trial, [{"epoch": 1, "score": 50.0}])
    controller.finish(trial, "finished", 0, summary={"epoch": 1, "score": 50.0})


@pytest.mark.parametrize("define_by_run", [False, True], ids=["parameters", "search_space"])
def test_a_users_own_enqueued_trial_runs_first(tmp_path: Path, define_by_run: bool):
    config = custom(tmp_path, study_source({"x": 0.123}, space=define_by_run))
    if define_by_run:
        config["scheduler"]["search_space"] = "space"
    store = Store(tmp_path)
    sweep = store.add_sweep(config, "local", code=read_code(config))
    controller = controller_for(store, sweep, "a", reseed=False)
    xs = []
    for _ in range(3):
        trial = controller.next_trial(0).trial
        xs.append(trial.params["x"])
        finish(controller, trial)
    # the seeded sampler's own first draw is 0.549: the enqueued point runs in its place, then the sampler draws
    assert xs[0] == 0.123 and 0.123 not in xs[1:]
    assert [t.attrs["optuna"].get("first") for t in store.trials(sweep.id)] == [0, None, None]


def test_two_agents_asking_at_once_run_each_first_trial_once_in_order(tmp_path: Path):
    config = custom(tmp_path, study_source({"x": 0.123}, {"x": 0.456}))
    store = Store(tmp_path)
    sweep = store.add_sweep(config, "local", code=read_code(config))
    a, b = controller_for(store, sweep, "a"), controller_for(store, sweep, "b")
    late = b.engine.suggest(store.trials(sweep.id))  # b asks from the same trials as a, and claims later
    assert late.params["x"] == 0.123
    first = a.next_trial(0).trial  # a's claim of the first trial wins; b's suggestion of it is never stored
    second = b.next_trial(0).trial  # b's engine sees a's trial came from the first one: the second is b's
    third = a.next_trial(0).trial
    assert [t.params["x"] for t in (first, second)] == [0.123, 0.456]
    assert third.params["x"] not in (0.123, 0.456) and "first" not in third.attrs["optuna"]
    assert [t.attrs["optuna"].get("first") for t in store.trials(sweep.id)] == [0, 1, None]


STUB_STUDY = """
import optuna

def study(sweep):
    s = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler())
    for lr in (0.11, 0.22, 0.33):
        s.enqueue_trial({"lr": lr})
    return s
"""


def test_two_agent_processes_run_the_enqueued_configurations_first_and_once(tmp_path: Path):
    hold = tmp_path / "hold"  # the first trials wait until both agents run one
    hold.touch()
    (tmp_path / "study.py").write_text(STUB_STUDY)
    config = stub_sweep("custom", epochs=1, epoch_s=0.05, lr={"min": 0.01, "max": 0.99}, hold={"value": str(hold)})
    config.update(metric={"name": "val_acc", "goal": "maximize"}, run_cap=6,
                  scheduler={"engine": "optuna", "source": "study.py", "optimizer": "study"})  # fmt: skip
    sweep_id = make_sweep(tmp_path, config)
    trials = two_agents_sharing(tmp_path, sweep_id, hold)
    lrs = [t.params["lr"] for t in trials]
    assert len(trials) == 6 and lrs[:3] == [0.11, 0.22, 0.33]  # first, in order
    assert not {0.11, 0.22, 0.33} & set(lrs[3:])  # and once
    assert [t.attrs["optuna"].get("first") for t in trials] == [0, 1, 2, None, None, None]
    assert len({t.agent for t in trials[:2]}) == 2 and all(t.state == "finished" for t in trials)


def one_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    (line,) = p.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize(
    "first, expected",
    [
        ({"x": 2.0}, "'study''s enqueued trial 2 sets x = 2.0, outside the sweep's space; allowed: 0 to 1"),
        ({"y": 0.5}, "'study''s enqueued trial 2 names 'y', not a parameter of the sweep; allowed: epoch_s, epochs, x"),
    ],
    ids=["outside", "unknown"],
)
def test_a_first_trial_outside_the_space_or_naming_an_unknown_key_is_refused(tmp_path: Path, first, expected):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(custom(tmp_path, study_source({"x": 0.5}, first))))
    line = one_line(hpsearch("create-sweep", str(f), "--dir", str(tmp_path / "store"), cwd=tmp_path))
    assert line == f"hpsearch create-sweep: error: {f}: scheduler.optimizer: {expected}"
    assert not (tmp_path / "store").exists()


# ---- the shipped sweeps ----


def known_good(name: str, config: dict) -> dict:
    """aug and optim: the reference recipe, every searched key at the trainer's default; quickstart: DIGITS."""
    return dict(DIGITS) if name == "quickstart.yaml" else {k: DEFAULTS[k] for k in varying(config)}


@pytest.mark.parametrize("name", ["aug.yaml", "optim.yaml", "quickstart.yaml"])
def test_the_shipped_sweeps_run_a_known_good_configuration_first(tmp_path: Path, name: str):
    config = load_spec(REPO / "sweeps" / name)
    store = Store(tmp_path)
    sweep = store.add_sweep(config, "local", code=read_code(config))
    trial = controller_for(store, sweep, "a").next_trial(0).trial
    expected = known_good(name, config)
    assert {k: trial.params[k] for k in expected} == expected and trial.attrs["optuna"]["first"] == 0
    if name == "quickstart.yaml":  # the recorded hflip (0.7) is not in its space: the sampler's
        assert trial.params["hflip"] in (0.0, 0.5)


@pytest.mark.parametrize("name", ["aug.yaml", "quickstart.yaml"])
def test_w_and_bs_own_scheduler_runs_the_same_first_trial(monkeypatch, name: str):
    """The same file under `wandb sweep-scheduler` (its Optuna optimizer, built as it builds it, from the repository
    root, where the file's `source` is)."""
    from wandb.sdk.sweeps.scheduler.optuna import build_optuna_optimizer
    from wandb.sdk.sweeps.sweep_info import SweepInfo

    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "sweeps" / name).read_text())
    optimizer = build_optuna_optimizer(SweepInfo("s1", name, "e", "p", config, ""))
    (run,) = optimizer.ask_n_runs(1)
    expected = known_good(name, config)
    assert {k: run.config.flat_dict()[k] for k in expected} == expected
