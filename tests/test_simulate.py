"""`hpsearch simulate`: replays of sweeps on small generated curve tables (seconds each), the replay against a real
agent on the same table, LCBench's surrogate, and the one-line errors of bad input."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import STUB, env, hpsearch, make_sweep, plotly_figures, run_agent

from hpsearch.simulate.backend import CurveProcess
from hpsearch.simulate.curves import YAHPO_DATA, CurveTable, LCBench, Scale, SourceError, scales
from hpsearch.simulate.replay import compare, replay
from hpsearch.sweep.spec import load_spec, read_code
from hpsearch.sweep.store import State, Store, StoreError

PROGRAM = Path(__file__).parent / "curve_program.py"


def curve(top: float, epochs: int = 6, epoch_time: float = 1.0, slow: bool = False) -> list[dict]:
    """val_acc rising towards `top` (slowly at first if `slow`, as strong augmentation does)."""
    out = []
    for e in range(1, epochs + 1):
        frac = (e / epochs) ** (3 if slow else 0.5)
        out.append({"epoch": e, "val_acc": round(top * frac, 3), "epoch_time": epoch_time})
    return out


def grid_table(path: Path, short: tuple[float, str] | None = None) -> Path:
    """lr x aa: 8 configurations; the cifar10 ones learn slowly and end higher; `short`'s curve ends at epoch 3."""
    lines = []
    for lr in (0.001, 0.01, 0.1, 1.0):
        for aa in ("none", "cifar10"):
            top = 60 + 20 * (1 - abs(math.log10(lr) + 1.5) / 2) + (8 if aa == "cifar10" else 0)
            history = curve(top, slow=aa == "cifar10")
            if (lr, aa) == short:
                history = history[:3]
            lines.append(json.dumps({"config": {"lr": lr, "aa": aa, "epochs": 6}, "history": history}))
    path.write_text("\n".join(lines) + "\n")
    return path


def random_table(path: Path, n: int = 40) -> Path:
    """`n` configurations over lr (log), wd and aa, with different curves."""
    lines = []
    for i in range(n):
        lr, wd, aa = 10 ** (-3 + 3 * i / n), (i * 7 % 10) / 1000, ("none", "cifar10")[i % 2]
        top = 90 - 30 * abs(math.log10(lr) + 1.5) - 1000 * abs(wd - 0.005) + 3 * (aa == "cifar10")
        lines.append(json.dumps({"config": {"lr": lr, "wd": wd, "aa": aa}, "history": curve(top, epochs=5)}))
    path.write_text("\n".join(lines) + "\n")
    return path


def sweep_file(path: Path, method: str, table: Path, **extra) -> Path:
    keys = json.loads(table.read_text().splitlines()[0])["config"]
    params = {
        "lr": {"distribution": "log_uniform_values", "min": 0.001, "max": 1.0},
        "aa": {"values": ["none", "cifar10"]},
    }
    if method == "grid":
        params["lr"] = {"values": sorted({json.loads(line)["config"]["lr"] for line in table.read_text().splitlines()})}
    if "wd" in keys:
        params["wd"] = {"min": 0.0, "max": 0.009}
    if "epochs" in keys:  # (the agent knows when a trial has finished)
        params["epochs"] = {"value": keys["epochs"]}
    config = {"method": method, "metric": {"name": "val_acc", "goal": "maximize"}, "parameters": params, **extra}
    path.write_text(yaml.safe_dump(config))
    return path


HYPERBAND = {"type": "hyperband", "min_iter": 2, "eta": 2}


def run(tmp_path: Path, file: Path, table: Path, workers: int = 1, budget: int = 10_000, seed: int = 0):
    source = CurveTable.from_jsonl(table)
    store = Store(tmp_path / f"sim-{workers}-{budget}-{seed}-{file.stem}")
    config = load_spec(file, source.target())
    r = replay(store, config, source, workers, budget, seed, read_code(config))
    return r, store.trials(r.sweep)


def test_nearest_configuration_follows_log_scales_and_categories():
    rows = [({"lr": 0.001, "aa": "none"}, curve(50)), ({"lr": 0.01, "aa": "none"}, curve(60)),
            ({"lr": 0.1, "aa": "cifar10"}, curve(70))]  # fmt: skip
    table = CurveTable("t", rows)
    log, linear = {"lr": Scale("log", math.log(1e-3), math.log(1.0))}, {"lr": Scale("linear", 0.0, 1.0)}
    # 0.004 is nearer 0.01 on a log axis, and nearer 0.001 on a linear one
    assert table.nearest({"lr": 0.004, "aa": "none"}, log) == 1
    assert table.nearest({"lr": 0.004, "aa": "none"}, linear) == 0
    # categories first: the only cifar10 configuration, however far its lr
    assert table.nearest({"lr": 0.001, "aa": "cifar10"}, log) == 2
    # the sweep's own scales: log for log_uniform_values, exact for values
    config = {"parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1.0},
                             "aa": {"values": ["none", "cifar10"]}, "wd": {"min": 0.0, "max": 0.1}}}  # fmt: skip
    assert scales(config) == {"lr": Scale("log", math.log(1e-3), 0.0), "aa": Scale("exact"),
                              "wd": Scale("linear", 0.0, 0.1)}  # fmt: skip


OPTUNA_HYPERBAND = {"engine": "optuna", "source": str(Path(__file__).parents[1] / "hpsearch" / "studies.py"),
                    "optimizer": "tpe_hyperband"}  # fmt: skip


@pytest.mark.parametrize("search", ["W&B hyperband", "Optuna hyperband"])
def test_a_replay_is_deterministic_for_a_seed_and_charges_the_epochs_trials_ran(tmp_path: Path, search: str):
    table = random_table(tmp_path / "t.jsonl")
    if search == "W&B hyperband":
        file = sweep_file(tmp_path / "s.yaml", "random", table, early_terminate=HYPERBAND)
    else:  # (its brackets go by the study's name: a replay's must not vary)
        file = sweep_file(tmp_path / "s.yaml", "custom", table, scheduler=OPTUNA_HYPERBAND)
    runs = [run(tmp_path / f"{i}", file, table, budget=60, seed=s) for i, s in enumerate((0, 0, 1))]
    (a, trials), (b, again), (_, other) = runs
    assert (a.trial_count, a.epochs, a.incumbent) == (b.trial_count, b.epochs, b.incumbent)
    assert [t.params for t in trials] == [t.params for t in again] != [t.params for t in other]
    assert a.epochs == 60 == sum(t.epochs for t in trials)  # each trial charged its epochs, no more
    stopped = [t for t in trials if t.state == State.STOPPED]
    assert stopped and all(t.epochs < 5 for t in stopped)  # hyperband stopped some, which ran only their epochs
    assert a.trial_count == len(trials) > 60 // 5  # so more trials fit in the budget than full-length ones would
    assert a.incumbent == sorted(a.incumbent) and all(x <= 60 for x, _ in a.incumbent)


def test_n_workers_run_n_trials_at_once_and_the_budget_ends_the_sweep(tmp_path: Path):
    table = random_table(tmp_path / "t.jsonl")
    file = sweep_file(tmp_path / "s.yaml", "random", table)
    r3, trials3 = run(tmp_path, file, table, workers=3, budget=6)
    assert r3.trial_count == 3 and [t.epochs for t in trials3] == [2, 2, 2]  # in step: 3 x 2 epochs
    r1, trials1 = run(tmp_path, file, table, workers=1, budget=6)
    assert r1.trial_count == 2 and [t.epochs for t in trials1] == [5, 1]  # one at a time
    assert [t.state for t in trials1] == [State.FINISHED, State.RUNNING]  # the budget cut the second
    assert r1.epochs == 6 and r1.incumbent == [[5, trials1[0].summary["val_acc"]]]


def test_a_comparison_closes_each_store_it_opened(tmp_path: Path):
    table = random_table(tmp_path / "t.jsonl")
    source = CurveTable.from_jsonl(table)
    configs = {f"s{i}.yaml": load_spec(sweep_file(tmp_path / f"s{i}.yaml", "random", table), source.target())
               for i in range(2)}  # fmt: skip
    results, reference = compare(tmp_path / "stores", configs, source, 1, 10, 2)
    assert [len(r.runs) for r in results] == [2, 2] and reference.name == "s0.yaml"  # (a random sweep already)
    assert len(list((tmp_path / "stores").glob("*/hpsearch.db"))) == 2  # one store per sweep file, both seeds in it
    assert [f.path for f in psutil.Process().open_files() if f.path.startswith(str(tmp_path))] == []


def test_a_store_that_fails_for_good_ends_the_replay_with_its_error(tmp_path: Path, monkeypatch):
    """The agent gives up on such a store (it ends its trials); a replay raises, never returns a cut replay."""
    table = random_table(tmp_path / "t.jsonl")
    file = sweep_file(tmp_path / "s.yaml", "random", table)
    monkeypatch.setattr(Store, "add_epochs", lambda *a, **k: (_ for _ in ()).throw(StoreError("disk full")))
    with pytest.raises(StoreError, match=r"^disk full; ended trial"):
        run(tmp_path, file, table, workers=2, budget=60)


def test_a_finished_grid_ends_the_replay_before_the_budget_and_a_short_curve_is_a_failed_trial(tmp_path: Path):
    table = grid_table(tmp_path / "t.jsonl", short=(0.1, "none"))
    r, trials = run(tmp_path, sweep_file(tmp_path / "s.yaml", "grid", table), table)
    assert r.trial_count == len(trials) == 8 and r.distinct == 8 and r.epochs == 7 * 6 + 3 < 10_000
    (failed,) = [t for t in trials if t.state == State.FAILED]
    assert failed.params == {"lr": 0.1, "aa": "none", "epochs": 6} and failed.epochs == 3
    assert failed.error == "its curve ends after epoch 3 of 6"
    assert all(t.state == State.FINISHED and t.epochs == 6 for t in trials if t is not failed)


def timed_table(path: Path, lrs: tuple[float, ...], epochs: int = 6) -> Path:
    """lr x aa, each configuration's epochs taking a time of its own: square roots of distinct primes, so that no
    two records of a replay are due at the same moment (no sum of them equals another)."""
    primes = [p for p in range(2, 200) if all(p % d for d in range(2, p))]
    lines = []
    for i, (lr, aa) in enumerate((lr, aa) for lr in lrs for aa in ("none", "cifar10")):
        top = 60 + 20 * (1 - abs(math.log10(lr) + 1.5) / 2) + (8 if aa == "cifar10" else 0) + i / 10  # (no ties)
        history = curve(top, epochs, epoch_time=math.sqrt(primes[i]), slow=aa == "cifar10")
        lines.append(json.dumps({"config": {"lr": lr, "aa": aa, "epochs": epochs}, "history": history}))
    path.write_text("\n".join(lines) + "\n")
    return path


def the_agents_run(tmp_path: Path, file: Path, table: Path, workers: int, monkeypatch) -> None:
    """The sweep replayed with `workers` workers, then run by a real agent with as many slots whose program
    (curve_program.py) replays the same curves, releasing their records in the replay's order: the same trials,
    started in the same order, paused, promoted, stopped and failed at the same epochs."""
    starts, due = [], []  # the replay's start times and record times, for the programs' gate
    monkeypatch.setattr(
        CurveProcess, "start", lambda p, start=CurveProcess.start: starts.append(p.clock.now) or start(p)
    )
    monkeypatch.setattr(CurveProcess, "new_epochs", lambda p, read=CurveProcess.new_epochs: (
        records := read(p), due.extend([p.clock.now] * len(records)))[0])  # fmt: skip
    r, trials = run(tmp_path, file, table, workers=workers)
    assert len(due) == len(set(due)) == r.epochs  # one record at a time: the order is the replay's to force
    simulated = [(t.params, t.state, t.epochs, t.resumes) for t in trials]
    config = yaml.safe_load(file.read_text())
    sweep_id = make_sweep(tmp_path, config)
    (gate := tmp_path / "gate").mkdir()
    e = env(HPSEARCH_TEST_TABLE=str(table), HPSEARCH_TEST_SWEEP=str(file), HPSEARCH_TEST_GATE=str(gate),
            HPSEARCH_TEST_STARTS=json.dumps(starts), PYTHONPATH=str(Path.cwd()))  # fmt: skip
    slots = ("--gpu-ids", ",".join(map(str, range(workers))), "--gpus-per-trial", "1")
    p = run_agent(tmp_path, sweep_id, *slots, env=e, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    agent = Store(tmp_path / "store").trials(sweep_id)
    assert [(t.params, t.state, t.epochs, t.resumes) for t in agent] == simulated
    said = [line.split()[2] for line in p.stdout.splitlines() if line.startswith("trial ")]
    assert (said.count("paused"), said.count("promoted"), said.count("stopped")) == (r.paused, r.promoted, r.stopped)
    return r, trials


@pytest.mark.xdist_group("agents")
def test_the_replay_decides_as_the_agent_does(tmp_path: Path, monkeypatch):
    """One worker, a grid with W&B's hyperband, one curve shorter than its trial: finished, stopped and failed."""
    table = grid_table(tmp_path / "t.jsonl", short=(0.01, "none"))
    file = sweep_file(tmp_path / "s.yaml", "grid", table, early_terminate=HYPERBAND, program=str(PROGRAM))
    _, trials = the_agents_run(tmp_path, file, table, 1, monkeypatch)
    assert {t.state for t in trials} == {State.FINISHED, State.STOPPED, State.FAILED}  # a telling case


@pytest.mark.xdist_group("agents")
def test_the_replay_with_four_workers_stops_as_four_slots_do_with_a_band_on_the_last_epoch(tmp_path, monkeypatch):
    """Four workers and four slots, W&B's hyperband with bands at 2 and 6 of 6 epochs: stops come at the same
    epochs, and a trial that reaches its 6th epoch finishes there (its program runs on until the agent has that
    record: an agent that asked then would stop the second of the two finishers, below the first at band 6)."""
    table = timed_table(tmp_path / "t.jsonl", (0.001, 0.003, 0.01, 0.03, 0.1, 1.0))
    band = {"type": "hyperband", "min_iter": 2, "eta": 3}
    file = sweep_file(tmp_path / "s.yaml", "grid", table, early_terminate=band, program=str(PROGRAM))
    _, trials = the_agents_run(tmp_path, file, table, 4, monkeypatch)
    assert {t.state for t in trials} == {State.FINISHED, State.STOPPED}
    assert len([t for t in trials if t.state == State.FINISHED and t.epochs == 6]) == 2


PROMOTING = """import optuna
from hpsearch.sweep.promotion import PromotingHalving

def study(sweep):
    s = optuna.create_study(direction='maximize', pruner=PromotingHalving(1, 3))
    for params in {order!r}:
        s.enqueue_trial(params)
    return s
"""


@pytest.mark.xdist_group("agents")
def test_the_replay_with_four_workers_pauses_and_promotes_as_four_slots_do(tmp_path: Path, monkeypatch):
    """Four workers and four slots, the promotion scheduler with rungs at 1 and 3 of 6 epochs, the configurations
    in the order of their first epoch's value (so a later, larger cohort promotes an early one): the same pauses
    and promotions at the same epochs."""
    lrs = (0.001, 0.003, 0.01, 0.03, 0.1, 1.0)
    table = timed_table(tmp_path / "t.jsonl", lrs)
    rows = sorted(
        (json.loads(line) for line in table.read_text().splitlines()), key=lambda r: -r["history"][0]["val_acc"]
    )
    (tmp_path / "study.py").write_text(
        PROMOTING.format(order=[{k: r["config"][k] for k in ("lr", "aa")} for r in rows])
    )
    scheduler = {"engine": "optuna", "source": str(tmp_path / "study.py"), "optimizer": "study"}
    file = sweep_file(tmp_path / "s.yaml", "grid", table, program=str(PROGRAM), run_cap=len(rows))
    config = {**yaml.safe_load(file.read_text()), "method": "custom", "scheduler": scheduler}
    file.write_text(yaml.safe_dump(config))
    r, trials = the_agents_run(tmp_path, file, table, 4, monkeypatch)
    assert r.paused > r.promoted > 0 and any(t.resumes and t.state == State.FINISHED for t in trials)


# ---- the command ----


def simulate(tmp_path: Path, *args: str, **kw):
    return hpsearch("simulate", *args, cwd=tmp_path, **kw)


def test_simulate_compares_sweeps_on_the_same_seeds_as_a_table_json_and_a_page(tmp_path: Path):
    table = random_table(tmp_path / "t.jsonl")
    rnd = sweep_file(tmp_path / "random.yaml", "random", table)
    hb = sweep_file(tmp_path / "hb.yaml", "random", table, early_terminate=HYPERBAND)
    args = [str(rnd), str(hb), "--curves", str(table), "--seeds", "3", "--budget", "60"]
    p = simulate(tmp_path, *args, "-o", "page.html")
    assert p.returncode == 0, p.stderr
    head, row_random, row_hb, wrote = p.stdout.strip().splitlines()
    assert wrote == "wrote page.html"
    assert head.split()[:4] == ["sweep", "best", "@25%", "best"] and "to reach random @100%" in head
    assert row_random.startswith(str(rnd)) and row_hb.startswith(str(hb))
    assert "(" in row_random.split()[-1] and row_random.split()[-1].endswith("/3)")
    lines = plotly_figures((tmp_path / "page.html").read_text())["incumbent"]
    medians = [tr for tr in lines if tr.get("name")]  # (the quartile bands are unnamed)
    assert [tr["name"] for tr in medians] == [str(rnd), str(hb)] and all(tr["x"][-1] <= 60 for tr in medians)
    p = simulate(tmp_path, *args, "--json")
    assert p.returncode == 0, p.stderr
    runs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["sweep"] for r in runs] == [str(rnd), str(hb)]
    for r in runs:
        assert (r["source"], r["budget"], r["workers"]) == (str(table), 60, 1)
        assert [x["seed"] for x in r["runs"]] == [0, 1, 2] and all(x["epochs"] == 60 for x in r["runs"])
        for x in r["runs"]:
            assert set(x) == {"seed", "trials", "paused", "promoted", "stopped", "epochs", "distinct", "incumbent"}
            assert x["distinct"] <= x["trials"] and x["paused"] == x["promoted"] == 0  # (no promotion scheduler)
            values = [v for _, v in x["incumbent"]]
            assert values == sorted(values)  # a point each time the best improves
    # the same seeds give the same replays, call after call
    assert simulate(tmp_path, *args, "--json").stdout == p.stdout


def test_the_default_studys_gp_suggestions_say_nothing_to_the_user(tmp_path: Path):
    """Optuna's GP sampler announces, at its first suggestion from its model (after 10 random ones), that it runs
    without greenlet: nothing a user need act on."""
    table = random_table(tmp_path / "t.jsonl")
    gp = sweep_file(tmp_path / "gp.yaml", "custom", table, scheduler={"engine": "optuna"})  # (its default study)
    p = simulate(tmp_path, str(gp), "--curves", str(table), "--seeds", "1", "--budget", "60", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["runs"][0]["trials"] == 12 and "greenlet" not in p.stderr, p.stderr


def test_export_curves_writes_a_sweep_as_a_table_that_simulate_replays(tmp_path: Path):
    sweep_id = make_sweep(tmp_path, {"method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
                                     "program": str(STUB), "parameters": {"epochs": {"value": 3},
                                     "epoch_s": {"value": 0.05}, "lr": {"values": [0.1, 0.3, 0.5]}}})  # fmt: skip
    assert run_agent(tmp_path, sweep_id).returncode == 0
    p = simulate(tmp_path, "--export-curves", sweep_id, "--dir", "store")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert sorted(r["config"]["lr"] for r in rows) == [0.1, 0.3, 0.5]
    assert all([h["epoch"] for h in r["history"]] == [1, 2, 3] for r in rows)
    grid = tmp_path / "again.yaml"
    grid.write_text(yaml.safe_dump({"method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
                                    "parameters": {"lr": {"values": [0.1, 0.5]}}}))  # fmt: skip
    p = simulate(tmp_path, str(grid), "--curves", f"sweep:{sweep_id}", "--dir", "store", "--seeds", "1", "--json")
    assert p.returncode == 0, p.stderr
    (out,) = [json.loads(line) for line in p.stdout.splitlines()]
    assert out["budget"] == 9  # the table's cost: three curves of three epochs
    assert out["runs"][0]["trials"] == 2 and out["runs"][0]["incumbent"][-1] == [6, 50.0]  # lr 0.5: its 3rd epoch


def test_lcbench_replays_yahpo_gyms_surrogate_with_the_sources_types(tmp_path: Path):
    source = LCBench("189906", YAHPO_DATA)
    config = load_spec(Path(__file__).parents[1] / "sweeps" / "simulate" / "lcbench.yaml", source.target())
    drawn = {"batch_size": 64.0, "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 1e-3, "num_layers": 2.0,
             "max_units": 256.0, "max_dropout": 0.1}  # fmt: skip
    c = source.curve(drawn, scales(config))
    assert c.planned == 50 and [r["epoch"] for r in c.records] == list(range(1, 51))
    assert json.loads(c.config)["batch_size"] == 64 and isinstance(json.loads(c.config)["batch_size"], int)
    assert c.records == source.curve({**drawn, "batch_size": 64, "num_layers": 2}, scales(config)).records
    assert all(0 < r["val_accuracy"] <= 100 and r["epoch_time"] > 0 for r in c.records)
    assert c.records[-1]["val_accuracy"] > c.records[0]["val_accuracy"]  # it learns
    r = replay(Store(tmp_path), config, source, 2, 500, 0)
    assert r.epochs == 500 and r.trial_count >= 10 and 10 < r.incumbent[-1][1] <= 100


# ---- bad input: one line, exit 2 ----


def one_line_error(p) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("hpsearch simulate: error: ")
    return line


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path):
    table = random_table(tmp_path / "t.jsonl")
    good = sweep_file(tmp_path / "s.yaml", "random", table)
    line = one_line_error(simulate(tmp_path, str(good), "--curves", "nosuch:1"))
    assert "'nosuch:1' is not a source of curves; allowed: lcbench:TASK, FILE.jsonl, sweep:ID" in line
    bad = yaml.safe_load(good.read_text())
    bad["parameters"]["momentum"] = {"values": [0.9]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    line = one_line_error(simulate(tmp_path, "bad.yaml", "--curves", str(table)))
    assert "parameters.momentum: 'momentum' is not a configuration key of" in line and "allowed: aa, lr, wd" in line
    bad = yaml.safe_load(good.read_text())
    bad["metric"]["name"] = "accuracy"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    line = one_line_error(simulate(tmp_path, "bad.yaml", "--curves", str(table)))
    assert "metric.name: 'accuracy' is not a metric" in line and "allowed: val_acc, epoch_time" in line
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "holds no curves" in one_line_error(simulate(tmp_path, str(good), "--curves", "empty.jsonl"))
    lcbench = Path(__file__).parents[1] / "sweeps" / "simulate" / "lcbench.yaml"
    line = one_line_error(simulate(tmp_path, str(lcbench), "--curves", "lcbench:189906", "--data", "nodata"))
    assert "--data nodata: no lcbench/model.onnx there; allowed: a folder of YAHPO Gym's data" in line
    line = one_line_error(simulate(tmp_path, str(lcbench), "--curves", "lcbench:42"))
    assert "'42' is not an LCBench task; allowed: 3945, 7593" in line
    # without yahpo-gym installed (a package of that name that fails to import stands in for its absence)
    shim = tmp_path / "shim" / "yahpo_gym"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named yahpo_gym')\n")
    e = env(PYTHONPATH=os.pathsep.join([str(shim.parent), *sys.path]))
    line = one_line_error(simulate(tmp_path, str(lcbench), "--curves", "lcbench:189906", env=e))
    assert "needs the yahpo-gym package; allowed: pip install 'hpsearch[simulate]'" in line


def test_sweeps_are_compared_by_one_metric(tmp_path: Path):
    table = random_table(tmp_path / "t.jsonl")
    up = sweep_file(tmp_path / "up.yaml", "random", table)
    down = yaml.safe_load(up.read_text())
    down["metric"]["goal"] = "minimize"
    (tmp_path / "down.yaml").write_text(yaml.safe_dump(down))
    line = one_line_error(simulate(tmp_path, str(up), "down.yaml", "--curves", str(table)))
    assert "down.yaml: metric: {'name': 'val_acc', 'goal': 'minimize'} is not" in line


def test_a_line_replays_as_the_whole_run_it_recorded():
    """A line is one run: its schedule's length was matched with the rest, so it replays whole, never cut at the
    trial's own epochs (a longer run read mid-schedule) nor a shorter one read as failed."""
    rows = [({"lr": 0.1, "epochs": 10}, curve(70, epochs=10)), ({"lr": 0.1, "epochs": 20}, curve(80, epochs=20))]
    table, by_epochs = CurveTable("t", rows), {"epochs": Scale("linear", 1.0, 40.0)}
    near_10 = table.curve({"lr": 0.1, "epochs": 12}, by_epochs)
    assert (near_10.config, near_10.planned, near_10.records) == ("0", 10, rows[0][1])  # finished, not failed at 10
    near_20 = table.curve({"lr": 0.1, "epochs": 18}, by_epochs)
    assert (near_20.config, near_20.planned, near_20.records) == ("1", 20, rows[1][1])  # its decayed end included
    assert table.curve({"lr": 0.1}, {}).planned == 10  # a trial without epochs: the nearest line's own
    failed = CurveTable("t", [({"lr": 0.1, "epochs": 10}, curve(70, epochs=6))]).curve({"lr": 0.1, "epochs": 6}, {})
    assert (failed.planned, len(failed.records)) == (10, 6)  # a run that ended before its epochs failed there


def schedule_table() -> tuple[CurveTable, dict]:
    """Two configurations as benchmarks/record_schedules.py records them (E = 8): cosine runs of 2, 4 and 8
    epochs, and wsd runs of 8 with cooldowns of 0.25 and 0.5 and branches at 2 and 4; every value distinct."""
    lines, want = [], {}
    for i, lr in enumerate((0.1, 0.3)):
        for epochs in (2, 4, 8):
            history = curve(50 + 10 * i + epochs, epochs=epochs)
            lines.append({"config": {"lr": lr, "seed": 0, "sched": "cosine", "epochs": epochs}, "history": history})
            want[lr, "compressed", epochs] = history[-1]["val_acc"]
        for frac in (0.25, 0.5):
            history = curve(40 + 10 * i + 20 * frac, epochs=8)
            rungs = [{"rung": b, "rung_epochs": 1, "rung_val_acc": 30 + 10 * i + b + frac, "rung_time": 0.5}
                     for b in (2, 4)]  # fmt: skip
            config = {"lr": lr, "seed": 0, "sched": "wsd", "epochs": 8, "cooldown_frac": frac, "cooldown_at": "2,4"}
            lines.append({"config": config, "history": history, "rungs": rungs})
            want |= {(lr, frac, r["rung"]): r["rung_val_acc"] for r in rungs} | {(lr, frac, 8): history[-1]["val_acc"]}
    return CurveTable.from_lines("s.jsonl", [json.dumps(line) for line in lines]), want


def test_compressed_and_cooldown_rungs_replay_as_recorded():
    table, want = schedule_table()
    assert (table.full_epochs, table.budget()) == (8, 2 * 8)  # running each configuration once: its full length
    for lr in (0.1, 0.3):
        trial = {"lr": lr, "sched": "cosine", "epochs": 8}  # (schedule keys a sweep fixes: the mode chooses them)
        full = table.curve(trial, {})
        assert full.planned == len(full.records) == 8  # a plain replay: the full-length cosine run, whole
        assert table.reading(trial, {}, "truncated").record["val_acc"] == full.records[-1]["val_acc"]
        assert table.reading(trial, {}, "compressed", 8).record == table.reading(trial, {}, "truncated", 8).record
        for b in (2, 4):
            truncated = table.reading(trial, {}, "truncated", b)  # the full run mid-schedule
            assert (truncated.record["val_acc"], truncated.epochs) == (full.records[b - 1]["val_acc"], b)
            compressed = table.reading(trial, {}, "compressed", b)  # the run of b epochs, at its end
            assert (compressed.record["val_acc"], compressed.epochs) == (want[lr, "compressed", b], b)
            assert compressed.seconds == b * 1.0
            for frac in (0.25, 0.5):
                cooled = table.reading(trial, {}, "cooldown", b, frac)  # the branch, its epoch charged
                assert (cooled.record, cooled.epochs, cooled.seconds) == (
                    {"val_acc": want[lr, frac, b]},
                    b + 1,
                    b + 0.5,
                )
        for frac in (0.25, 0.5):  # the top rung: the wsd run's own end
            assert table.reading(trial, {}, "cooldown", 8, frac).record["val_acc"] == want[lr, frac, 8]
    with pytest.raises(SourceError, match=r"no compressed reading at rung 3; allowed: rungs 2, 4, 8$"):
        table.reading({"lr": 0.1}, {}, "compressed", 3)
    with pytest.raises(
        SourceError, match=r"no cooldown 0.25 reading at rung 3 \(line 4 ran 8 epochs\); allowed: rungs 2, 4, 8$"
    ):
        table.reading({"lr": 0.1}, {}, "cooldown", 3, 0.25)
    with pytest.raises(SourceError, match=r"cooldown fraction 0.1; allowed: 0.25, 0.5$"):
        table.reading({"lr": 0.1}, {}, "cooldown", 2, 0.1)
    with pytest.raises(SourceError, match=r"mode 'stopped' is unknown; allowed: truncated, compressed, cooldown$"):
        table.reading({"lr": 0.1}, {}, "stopped", 2)
