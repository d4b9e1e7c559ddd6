"""Prior results (`create-sweep --prior SOURCE`): an earlier sweep's finished trials, or a curve table's, are told to
the new sweep's engine as already evaluated, never run, and not counted in its run_cap; status marks them; a source
that cannot be used is one line, exit 2, with nothing stored. In-process engines for what they are told, the real
CLI and agent for the rest."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from conftest import env, hpsearch, run_agent, stub_sweep, sweep_status

from hpsearch.sweep.controller import controller_for
from hpsearch.sweep.prior import ALLOWED, add_sweep, read_priors
from hpsearch.sweep.spec import read_code
from hpsearch.sweep.store import Store

TOY = Path(__file__).parent / "toy_program.py"
XS = [0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.4, 0.6, 0.8, 0.95, 0.05, 0.85]  # the earlier results' x


def score(x: float) -> float:
    return 100 - 100 * abs(x - 0.8)  # (toy_program's, at its last epoch)


def toy(tmp_path: Path, method: str) -> dict:
    """A sweep of toy_program's x in [0, 1]: W&B's bayes, or a custom one whose study is a seeded TPE."""
    fixed = {"epochs": {"value": 1}, "epoch_s": {"value": 0.0}}
    config = {"method": method, "metric": {"name": "score", "goal": "maximize"}, "program": str(TOY),
              "parameters": {"x": {"min": 0.0, "max": 1.0}, **fixed}}  # fmt: skip
    if method == "custom":
        (tmp_path / "study.py").write_text(
            "import optuna\n\ndef study(sweep):\n"
            "    return optuna.create_study(direction='maximize', sampler=optuna.samplers.TPESampler(seed=0))\n"
        )
        config["scheduler"] = {"engine": "optuna", "source": str(tmp_path / "study.py"), "optimizer": "study"}
    return config


def table(path: Path) -> Path:
    """A curve table of the earlier results (with a key the new sweep fixes, at its value)."""
    lines = [{"config": {"x": x, "epochs": 1}, "history": [{"epoch": 1, "score": score(x)}]} for x in XS]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def earlier_sweep(store: Store, config: dict) -> str:
    """A grid sweep of XS whose trials ran (in-process controller; results as the toy's)."""
    grid = {**config, "method": "grid", "parameters": {**config["parameters"], "x": {"values": XS}}}
    grid.pop("scheduler", None)
    sweep = store.add_sweep(grid, "local")
    controller = controller_for(store, sweep, "earlier")
    for _ in XS:
        trial = controller.next_trial(0).trial
        record = {"epoch": 1, "score": score(trial.params["x"])}
        controller.record_epochs(trial, [record])
        controller.finish(trial, "finished", 0, summary=record)
    return sweep.id


def first_suggestion(store: Store, config: dict, sweep_id: str, sources: list[str]) -> dict:
    """The parameters of the first trial the new sweep's engine claims, seeded, after its priors from `sources`."""
    sweep = add_sweep(store, config, None, sweep_id, read_code(config), read_priors(sources, config, store))
    random.seed(0)
    np.random.seed(0)
    return controller_for(store, sweep, "a", reseed=False).next_trial(0).trial.params


@pytest.mark.parametrize("method", ["custom", "bayes"], ids=["optuna", "wandb-bayes"])
@pytest.mark.parametrize("kind", ["sweep", "table"])
def test_priors_are_told_to_the_engine(tmp_path: Path, method: str, kind: str):
    config = toy(tmp_path, method)
    store = Store(tmp_path / "store")
    source = earlier_sweep(store, config) if kind == "sweep" else str(table(tmp_path / "curves.jsonl"))
    cold = first_suggestion(store, config, "cold", [])
    warm = first_suggestion(store, config, "warm", [source])
    told = [t.params["x"] for t in store.trials("warm")[:-1]]
    assert sorted(told) == sorted(XS) and warm["x"] != cold["x"]
    assert [t.state for t in store.trials("warm")] == ["finished"] * len(XS) + ["running"]  # only the new one runs
    if method == "custom":  # exactly what Optuna's study suggests after add_trial of each result (seed and order alike)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
        for x in told:
            study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=space, value=score(x)))
        assert warm["x"] == study.ask(space).params["x"]
    else:  # bayes's suggestion after these results lies near the best of them (0.8), unlike its cold random draw
        assert abs(warm["x"] - 0.8) < 0.2


def test_the_agent_runs_none_of_the_priors_and_status_marks_them(tmp_path: Path):
    config = stub_sweep("random", epochs=1, epoch_s=0.0, lr={"values": [0.1, 0.2, 0.3]})
    config.update(metric={"name": "val_acc", "goal": "maximize"}, run_cap=2)
    curves = tmp_path / "curves.jsonl"
    curves.write_text(
        "".join(
            json.dumps({"config": {"lr": lr, "epochs": 1, "seed": 1}, "history": [{"epoch": 1, "val_acc": 10 * lr}]})
            + "\n"
            for lr in (0.1, 0.3, 0.5)
        )
    )  # fmt: skip (0.5: outside the space)
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(config))
    p = hpsearch("create-sweep", str(f), "--prior", str(curves), "--dir", str(tmp_path / "store"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    sweep_id = p.stdout.strip().splitlines()[-1]
    assert "told 2 prior results" in p.stdout
    p = run_agent(tmp_path, sweep_id)
    assert p.returncode == 0, p.stdout + p.stderr
    data = sweep_status(tmp_path, sweep_id)
    priors = [t for t in data["trials"] if t["prior"]]
    ran = [t for t in data["trials"] if not t["prior"]]
    assert sorted(t["params"]["lr"] for t in priors) == [0.1, 0.3]  # the fitting ones, as told
    assert all(t["prior"] == {"source": str(curves)} and t["runtime"] == 0 and t["epochs"] == 1 for t in priors)
    assert len(ran) == 2 and all(t["state"] == "finished" for t in ran)  # run_cap counts its own trials
    assert data["sweep"]["counts"] == {"finished": 2} and data["sweep"]["priors"] == 2
    assert not any((tmp_path / "store" / sweep_id / t["id"]).exists() for t in priors)  # no trial folder: never run
    shown = hpsearch("status", sweep_id, "--dir", str(tmp_path / "store"), cwd=tmp_path).stdout
    assert "2 finished (and 2 prior results, not run)" in shown and shown.count("finished (prior)") == 2
    md = hpsearch("report", sweep_id, "--format", "md", "--dir", str(tmp_path / "store"), cwd=tmp_path).stdout
    assert "(2 finished; 2 prior results, not run)" in md and md.count("finished (prior)") == 2


def sweeps_in(store_dir: Path) -> int:
    with sqlite3.connect(store_dir / "hpsearch.db") as db:
        return db.execute("SELECT COUNT(*) FROM sweeps").fetchone()[0]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("nosuch", "--prior nosuch: no such sweep ({db}), and not a .jsonl file; allowed: {allowed}"),
        ("e/p/sw1", "--prior e/p/sw1: reading a W&B sweep needs a W&B login; allowed: wandb login (or WANDB_API_KEY), "
                    "or {allowed}"),
        ("missing.jsonl", "--prior missing.jsonl: cannot read: No such file or directory"),
        ("bad.jsonl", "--prior bad.jsonl:1: not a curve; allowed: {format}"),
        ("other-metric.jsonl", "--prior other-metric.jsonl: records no score (the sweep's metric); allowed: a source "
                               "that records score"),
        ("outside.jsonl", "--prior outside.jsonl: none of its 2 finished trials fits the sweep's parameters; allowed: "
                          "a source with results inside the sweep's space"),
        ("varies-y.jsonl", "--prior varies-y.jsonl: its trials vary y, which the sweep drops; allowed: a sweep that "
                           "fixes or searches every key its source varied"),
    ],
    ids=["unknown-sweep", "wandb-without-login", "unreadable", "malformed", "other-metric", "no-fitting-trial",
         "drops-a-key"],
)  # fmt: skip
def test_a_source_that_cannot_be_used_is_one_line_and_stores_nothing(tmp_path: Path, source: str, expected: str):
    from hpsearch.simulate.curves import FORMAT

    def lines(*rows: tuple[dict, dict]) -> str:
        return "".join(json.dumps({"config": c, "history": [{"epoch": 1, **r}]}) + "\n" for c, r in rows)

    (tmp_path / "bad.jsonl").write_text('{"config": {"x": 0.5}}\n')
    (tmp_path / "other-metric.jsonl").write_text(lines(({"x": 0.5}, {"loss": 1.0})))
    (tmp_path / "outside.jsonl").write_text(lines(({"x": 1.5}, {"score": 1.0}), ({"x": -1}, {"score": 1.0})))
    (tmp_path / "varies-y.jsonl").write_text(
        lines(({"x": 0.5, "y": 0}, {"score": 1.0}), ({"x": 0.5, "y": 1}, {"score": 2}))
    )
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(toy(tmp_path, "bayes")))
    store_dir = tmp_path / "store"
    with Store(store_dir) as store:  # a store that gains no sweep
        store.add_sweep(toy(tmp_path, "bayes"), "local")
    no_login = env(HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"), WANDB_API_KEY="")
    p = hpsearch("create-sweep", str(f), "--prior", source, "--dir", str(store_dir), cwd=tmp_path, env=no_login)
    assert p.returncode == 2, (p.stdout, p.stderr)
    (line,) = p.stderr.strip().splitlines()
    db = store_dir / "hpsearch.db"
    assert line == "hpsearch create-sweep: error: " + expected.format(db=db, format=FORMAT, allowed=ALLOWED)
    assert sweeps_in(store_dir) == 1


def test_a_bad_source_creates_no_store(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(toy(tmp_path, "bayes")))
    p = hpsearch("create-sweep", str(f), "--prior", "nosuch", "--dir", str(tmp_path / "store"), cwd=tmp_path)
    assert p.returncode == 2 and "--prior nosuch: no such sweep (no store yet), and not a .jsonl file" in p.stderr
    assert not (tmp_path / "store").exists()


def test_the_sweep_and_its_priors_are_stored_together_or_not_at_all(tmp_path: Path, monkeypatch):
    config = toy(tmp_path, "bayes")
    store = Store(tmp_path / "store")
    priors = read_priors([str(table(tmp_path / "curves.jsonl"))], config, store)

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(store, "add_prior", broken)
    with pytest.raises(RuntimeError):
        add_sweep(store, config, None, "s1", None, priors)
    assert store.sweep("s1") is None and store.trials("s1") == []


def test_a_w_and_b_sweep_s_finished_runs_are_read_from_its_server(tmp_path: Path):
    """ENTITY/PROJECT/SWEEP_ID with a W&B login: the sweep's finished runs, read through W&B's public API (its
    parameters' values and the metric's history), are the new sweep's priors; a run that did not finish is not."""
    from wandb_server import ENTITY, Run, WandbServer

    config = toy(tmp_path, "bayes")
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(config))
    with WandbServer() as server:
        earlier = server.add_sweep(config, "proj")
        for i, (x, state) in enumerate([(0.3, "finished"), (0.7, "finished"), (0.5, "failed")]):
            history = [{"_step": e, "epoch": e, "score": score(x) * e / 2, "lr": 0.1} for e in (1, 2)]
            run = Run(f"run{i}", ENTITY, "proj", earlier.id, state=state, history=history, summary=history[-1])
            run.config = {
                "x": x,
                "epochs": 1,
                "output_dir": f"/runs/{i}",
            }  # (what the trainer logged beside the sweep's)
            server.runs[run.id] = run
        path = f"{ENTITY}/proj/{earlier.id}"
        p = hpsearch("create-sweep", str(f), "--backend", "local", "--prior", path, "--dir", str(tmp_path / "store"),
                     cwd=tmp_path, env=env(**server.env()))  # fmt: skip
        assert p.returncode == 0, p.stderr
        unknown = hpsearch("create-sweep", str(f), "--backend", "local", "--prior", f"{ENTITY}/proj/nosuch", "--dir",
                           str(tmp_path / "store"), cwd=tmp_path, env=env(**server.env()))  # fmt: skip
        assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
        assert f"--prior {ENTITY}/proj/nosuch: the W&B server at {server.url}: Could not find sweep" in unknown.stderr
        assert server.unserved == []
    with Store(tmp_path / "store") as store:
        trials = store.trials(p.stdout.strip().splitlines()[-1])
        assert sweeps_in(tmp_path / "store") == 1  # (the unknown one stored nothing)
    assert [(t.params, t.attrs["prior"], t.state) for t in trials] == [
        ({"x": 0.3, "epochs": 1, "epoch_s": 0.0}, {"source": path, "trial": "run0"}, "finished"),
        ({"x": 0.7, "epochs": 1, "epoch_s": 0.0}, {"source": path, "trial": "run1"}, "finished"),
    ]
    assert trials[1].series.pairs() == [(1, score(0.7) / 2), (2, score(0.7))]
