"""Sweeps end to end: real create-sweep and agent processes running real trials on the CPU. The tests of the
store's claims (grid exhaustion, two agents and run_cap) run on both stores, SQLite and PostgreSQL
(`store_db`); preemption, crashes and resume on PostgreSQL are in test_store_postgres.py."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    agent_in_a_long_trial,
    env,
    fast_params,
    hpsearch,
    live_in_group,
    make_sweep,
    open_store,
    run_agent,
    stub_sweep,
    sweep_status,
    two_agents_sharing,
    wait_for,
)


def test_random_sweep_runs_count_trials_as_ddp_pairs(cifar_root: Path, tmp_path: Path):
    sweep_id = make_sweep(
        tmp_path,
        {
            "method": "random",
            "metric": {"name": "val_acc", "goal": "maximize"},
            "parameters": {
                **fast_params(cifar_root),
                "lr": {"min": 0.01, "max": 0.3},
                "cutmix": {"values": [0.0, 1.0]},
            },
        },
    )
    e = env()
    e.pop("WANDB_MODE")  # as for users: each trial writes an offline W&B run
    p = run_agent(tmp_path, sweep_id, "--count", "2", "--cpu-procs", "2", env=e)
    assert p.returncode == 0, p.stdout + p.stderr
    data = sweep_status(tmp_path, sweep_id)
    assert data["sweep"]["method"] == "random" and data["sweep"]["metric"] == {"name": "val_acc", "goal": "maximize"}
    trials = data["trials"]
    assert len(trials) == 2 and all(t["state"] == "finished" for t in trials)
    for t in trials:
        assert 0.01 <= t["params"]["lr"] <= 0.3 and t["params"]["cutmix"] in (0.0, 1.0)
        assert t["epochs"] == 2 and t["summary"]["world_size"] == 2  # torchrun ran two gloo workers
        assert isinstance(t["summary"]["val_acc"], float)
    values = [t["summary"]["val_acc"] for t in trials]
    assert values == sorted(values, reverse=True)  # best first
    # each trial also left an offline W&B run in the sweep's folder, named after it
    runs = sorted((tmp_path / "store" / sweep_id / "wandb").glob("offline-run-*"))
    assert sorted(r.name.split("-", 3)[-1] for r in runs) == sorted(t["id"] for t in trials)
    # ... which wandb's own reader sees with the trial's name, parameters and metrics
    run_id = runs[0].name.split("-", 3)[-1]
    trial = next(t for t in trials if t["id"] == run_id)
    inspect = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", str(runs[0])]
    out = subprocess.run(inspect, capture_output=True, text=True, timeout=120).stdout
    assert re.search(rf"^run\s+{run_id} \({run_id}\)", out, re.M), out
    assert re.search(rf"^\s+lr\s+{re.escape(str(trial['params']['lr']))}$", out, re.M), out
    shown = re.search(r"^\s+val_acc\s+([\d.]+)", out, re.M)  # (as leet rounds it)
    assert shown and abs(float(shown[1]) - trial["summary"]["val_acc"]) < 0.01, out


def test_grid_runs_each_point_once_and_the_agent_stops_by_itself(tmp_path: Path, store_db):
    grid = stub_sweep("grid", epochs=1, lr={"values": [0.05, 0.1]}, smoothing={"values": [0.0, 0.1]})
    sweep_id = make_sweep(tmp_path, {**grid, "metric": {"name": "val_acc", "goal": "maximize"}})
    p = run_agent(tmp_path, sweep_id)  # no --count: runs until the grid is exhausted
    assert p.returncode == 0, p.stdout + p.stderr
    data = sweep_status(tmp_path, sweep_id)
    points = sorted((t["params"]["lr"], t["params"]["smoothing"]) for t in data["trials"])
    assert points == [(0.05, 0.0), (0.05, 0.1), (0.1, 0.0), (0.1, 0.1)]
    assert data["sweep"]["state"] == "finished"
    assert run_agent(tmp_path, sweep_id).returncode == 0 and len(sweep_status(tmp_path, sweep_id)["trials"]) == 4


def test_hyperband_stops_a_trial_and_leaves_no_process(tmp_path: Path):
    # Grid order: two good learning rates set the bar; the third barely learns, falls under the median at its first
    # epoch and waits there until the stop ends it.
    hold = tmp_path / "hold"
    hold.write_text("1")
    recipes = [{"lr": 0.9}, {"lr": 0.8}, {"lr": 0.01, "hold": str(hold)}]
    sweep_id = make_sweep(
        tmp_path,
        {
            **stub_sweep("grid", epochs=4, recipe={"values": recipes}),
            "metric": {"name": "val_acc", "goal": "maximize"},
            "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
        },
    )
    p = run_agent(tmp_path, sweep_id, "--grace", "5")
    assert p.returncode == 0, p.stdout + p.stderr
    store = open_store(tmp_path / "store")
    trials = {t.params["recipe"]["lr"]: t for t in store.trials(sweep_id)}
    assert trials[0.9].state == "finished" and trials[0.9].epochs == 4 and trials[0.8].state == "finished"
    stopped = trials[0.01]
    assert stopped.state == "stopped" and stopped.epochs == 1
    assert f"trial {stopped.id} stopped early by hyperband after epoch 1" in p.stdout
    assert not live_in_group(stopped.pgid)


def test_two_agents_share_a_sweep_without_duplicates_and_respect_run_cap(tmp_path: Path, store_db):
    hold = tmp_path / "hold"  # the first trials wait until both agents run one
    hold.touch()
    config = stub_sweep("grid", epochs=2, lr={"values": [0.01, 0.02, 0.03, 0.04, 0.05]}, hold={"value": str(hold)})
    sweep_id = make_sweep(tmp_path, {**config, "run_cap": 3})
    trials = two_agents_sharing(tmp_path, sweep_id, hold)
    lrs = [t.params["lr"] for t in trials]
    assert len(trials) == 3 and len(set(lrs)) == 3  # run_cap exactly, no grid point twice
    assert all(t.state == "finished" for t in trials)
    assert len({t.agent for t in trials}) == 2  # both agents did work


def test_sigint_preempts_and_the_next_agent_resumes_from_the_checkpoint(cifar_root: Path, tmp_path: Path):
    config = {"method": "grid", "parameters": {**fast_params(cifar_root, epochs=12), "lr": {"value": 0.05}}}
    sweep_id, store, first = agent_in_a_long_trial(tmp_path, config, env(), epochs_done=2)
    first.send_signal(signal.SIGINT)
    out = first.communicate(timeout=60)[0]
    assert first.returncode == 130, out
    (trial,) = store.trials(sweep_id)
    assert trial.state == "preempted"
    assert not live_in_group(trial.pgid)
    done_before = trial.epochs
    assert 2 <= done_before < 12

    p = run_agent(tmp_path, sweep_id)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"trial {trial.id} resumed" in p.stdout
    (trial,) = store.trials(sweep_id)
    assert trial.state == "finished" and trial.epochs == 12
    stdout = (tmp_path / "store" / sweep_id / trial.id / "stdout.log").read_text()
    assert "resumed from" in stdout and "after epoch" in stdout


def test_a_failing_trial_is_recorded_with_its_own_error(cifar_root: Path, tmp_path: Path):
    # batch_size 512 > 256 training images: the trainer refuses it after the spec check passed. (That the agent
    # goes on after a failure is test_agent.py's.)
    sweep_id = make_sweep(
        tmp_path, {"method": "grid", "parameters": {**fast_params(cifar_root, epochs=1), "batch_size": {"value": 512}}}
    )
    p = run_agent(tmp_path, sweep_id, "--cpu-procs", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    (failed,) = open_store(tmp_path / "store").trials(sweep_id)
    assert failed.state == "failed" and failed.exit_code != 0
    assert failed.error.startswith("hpsearch train: error: batch_size: each rank needs 256")
    assert "ChildFailedError" not in failed.error  # the worker's own line, not torchrun's report
    assert f"trial {failed.id} failed: hpsearch train: error: batch_size" in p.stdout


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "method: grid\nparameters: {lr: {values: [0.1]}, lrr: {value: 1}}\n",
            "parameters.lrr: 'lrr' is not a trainer hyperparameter; allowed: aa, amp,",
        ),
        (
            "method: grid\nparameters: {momentum: {values: [0.9, 1.5]}}\n",
            "parameters.momentum.values[1]: 1.5 is not valid; allowed: a number >= 0 and < 1",
        ),
        (
            "method: random\nparameters: {lr: {min: -1.0, max: 0.5}}\n",
            "parameters.lr.min: -1.0 is not valid; allowed: a number > 0",
        ),
        ("method: annealing\nparameters: {lr: {value: 0.1}}\n", "method: 'annealing' is not valid"),
        (
            "method: bayes\nmetric: {name: accuracy, goal: maximize}\nparameters: {lr: {min: 0.01, max: 0.5}}\n",
            "metric.name: 'accuracy' is not a metric the trainer records; allowed: val_acc",
        ),
        (
            "method: random\nparameters: {epochs: {min: 1.5, max: 9.5}}\n",
            "parameters.epochs.distribution: uniform draws non-integers for epochs",
        ),
        (
            "method: grid\nparameters: {lr: {values: [0.1]}, output_dir: {value: x}}\n",
            "parameters.output_dir: set by the agent",
        ),
        ("method: grid\nparameters: [lr]\n", "parameters: ['lr'] is not of type 'object'"),
        ("method: grid\nparameters: {lr: {min: 0.1}}\n", "parameters.lr: not a W&B parameter spec"),
        ("method: grid\n  bad: [\n", "not valid YAML"),
    ],
)
def test_bad_sweep_files_exit_2_and_store_nothing(tmp_path: Path, text: str, expected: str):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    p = hpsearch("create-sweep", str(f), "--dir", str(tmp_path / "store"), cwd=tmp_path)
    assert p.returncode == 2
    assert p.stdout == ""
    assert f"hpsearch create-sweep: error: {f}: {expected}" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "store").exists()


REPO = Path(__file__).parents[1]
SHIPPED = [*sorted((REPO / "sweeps").glob("*.yaml")), REPO / "sweeps" / "simulate" / "digits-grid.yaml"]


@pytest.mark.parametrize("elsewhere", [False, True], ids=["repository-root", "elsewhere"])
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_training_sweep_registers_from_any_directory(tmp_path: Path, path: Path, elsewhere: bool):
    """The sweeps of hpsearch's trainer (simulate/'s others are LCBench's and a curve table's), registered from the
    repository root as the README runs them, and by absolute path from another directory, where their scheduler
    `source` (hpsearch/studies.py, relative to the working directory as W&B reads it) is hpsearch's own."""
    cwd, given = (tmp_path, path) if elsewhere else (REPO, path.relative_to(REPO))
    p = hpsearch("create-sweep", str(given), "--dir", str(tmp_path / "store"), cwd=cwd)
    assert p.returncode == 0, p.stderr
    sweep = open_store(tmp_path / "store").sweep(p.stdout.strip().splitlines()[-1])
    spec = yaml.safe_load(path.read_text())
    assert (sweep.config["method"], sweep.config.get("scheduler")) == (spec["method"], spec.get("scheduler"))
    assert sweep.config["parameters"].keys() == spec["parameters"].keys()
    if "source" in spec.get("scheduler", {}):
        assert sweep.code["text"] == (REPO / spec["scheduler"]["source"]).read_text()


def test_a_users_own_source_is_read_from_the_working_directory(tmp_path: Path):
    """W&B's meaning, even under hpsearch's own path: a file there is the user's, and a missing one names where."""
    (tmp_path / "hpsearch").mkdir()
    mine = "import optuna\n\ndef study(sweep):\n    return optuna.create_study(direction='maximize')\n"
    (tmp_path / "hpsearch" / "studies.py").write_text(mine)
    config = {**stub_sweep("custom", lr={"min": 0.01, "max": 0.1}), "metric": {"name": "val_acc", "goal": "maximize"}}
    config["scheduler"] = {"engine": "optuna", "source": "hpsearch/studies.py", "optimizer": "study"}
    sweep_id = make_sweep(tmp_path, config)
    assert open_store(tmp_path / "store").sweep(sweep_id).code["text"] == mine
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**config, "scheduler": {**config["scheduler"], "source": "x.py"}}))
    p = hpsearch("create-sweep", "s.yaml", "--dir", str(tmp_path / "other"), cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip() == (
        "hpsearch create-sweep: error: scheduler.source: cannot read 'x.py': No such file or directory "
        f"(tried {tmp_path / 'x.py'}); allowed: a Python file, relative to the working directory"
    )
    assert not (tmp_path / "other").exists()


def test_a_grace_longer_than_the_heartbeat_window_allows_is_refused_before_anything_runs(tmp_path: Path):
    sweep_id = make_sweep(tmp_path, stub_sweep("grid", lr={"value": 0.1}))
    e = env(HPSEARCH_STALE_AFTER="3")  # lease: 3 s - grace - 0.375 s of retries - 1 s of rounds >= a 1 s heartbeat
    slurm = ["slurm", "--nodes", "1", "--dry-run"]
    for command, grace in ((["agent", "--grace", "1"], "1"), ([*slurm, "--grace", "1"], "1"), (slurm, "10")):
        p = hpsearch(*command, sweep_id, "--dir", str(tmp_path / "store"), cwd=tmp_path, env=e)
        assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.strip().splitlines()[-1] == (
            f"Error: --grace: {grace} s leaves an agent no time to ride through a database error within the "
            "heartbeat window (HPSEARCH_STALE_AFTER=3 s); allowed: at most 0.625 s, or a longer HPSEARCH_STALE_AFTER"
        )
    # slurm takes the agents' options as the agent does: a bad one is refused here, not on the node
    p = hpsearch(*slurm, sweep_id, "--dir", str(tmp_path / "store"), "--max-resumes", "-1", cwd=tmp_path)
    assert p.returncode == 2 and "Invalid value for '--max-resumes': -1 is not in the range x>=0" in p.stderr
    assert sweep_status(tmp_path, sweep_id)["trials"] == []
    assert not (tmp_path / "store" / sweep_id / "slurm").exists()


def test_one_trial_per_gpu_slot_runs_concurrently(tmp_path: Path):
    # No GPU here: each trial only sees its CUDA_VISIBLE_DEVICES, but the agent's slot logic (two trials at once,
    # each with its own GPU and its own process group) is the same as on a GPU machine.
    hold = tmp_path / "hold"  # each trial waits after its first epoch until both run
    hold.touch()
    config = stub_sweep("grid", lr={"values": [0.05, 0.1]}, hold={"value": str(hold)})
    slots = ("--gpu-ids", "0,1", "--gpus-per-trial", "1")
    sweep_id, store, proc = agent_in_a_long_trial(tmp_path, config, env(), 1, *slots)
    wait_for(lambda: [t.state for t in store.trials(sweep_id) if t.epochs] == ["running", "running"])  # at once
    hold.unlink()
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "started on GPU 0:" in out and "started on GPU 1:" in out
    a, b = store.trials(sweep_id)
    assert a.state == b.state == "finished"
    assert (a.summary["cuda_visible_devices"], b.summary["cuda_visible_devices"]) == ("0", "1")
    assert a.pgid != b.pgid
