"""A W&B user's first real sweep, over the wire: the README's command 1 with a W&B login configured, a local
sweep's trials as live W&B runs, a server that stops answering mid-trial, and a dataset that two agents starting
together fetch once. The W&B server is tests/wandb_server.py, talked to by the real, unpatched wandb client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import STUB, env, hpsearch, wait_for
from readme import quick_start
from wandb_server import ENTITY, WandbServer

from hpsearch.defaults import UNCONFIRMED
from hpsearch.sweep.store import State, Store

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # where this environment's `hpsearch` is, as .venv/bin is for the README


@pytest.fixture
def server():
    with WandbServer() as s:
        yield s
    assert not s.unserved, f"GraphQL operations the test server does not serve: {s.unserved}"


def logged_in(server: WandbServer, **extra: str) -> dict[str, str]:
    """A machine with a W&B login for `server` and no WANDB_MODE set, as a W&B user's is; nothing leaves 127.0.0.1."""
    e = env(CUDA_VISIBLE_DEVICES="", WANDB_ERROR_REPORTING="false", **server.env(), **extra)
    e.pop("WANDB_MODE")
    return e


def start_agent(cwd: Path, sweep_id: str, agent_env: dict[str, str], *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", "store", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=agent_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def epochs(history: list[dict]) -> list[int]:
    return [row["epoch"] for row in history]


def test_the_quick_start_with_a_w_and_b_login_runs_its_search_locally_and_logs_live_runs(
    tmp_path: Path, server: WandbServer
):
    """Command 1's sweep, exactly as README.md writes it, for a user logged in to W&B: the search runs in the agent
    (a `method: custom` sweep on a server would wait for a scheduler nobody started), and says so; each trial is a
    W&B run of the sweep's group. One trial (`--count 1`, the only thing added) keeps the test short."""
    command = quick_start(REPO / "README.md")[0].split(" && ")[-1]  # (the install before it is CI's business)
    assert command.startswith('.venv/bin/hpsearch agent "$(.venv/bin/hpsearch create-sweep sweeps/quickstart.yaml')
    command = command.replace(".venv/bin/", f"{BIN}/") + " --count 1"
    p = subprocess.run(["bash", "-c", command], cwd=REPO, env=logged_in(server, HPSEARCH_DIR=str(tmp_path / "runs")),
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    # (create-sweep's lines go to `tail`: the agent says where the runs go)
    (sweep_id,) = re.findall(r"^W&B: each trial logs a live run to hpsearch, group (\S+)$", p.stdout, re.M)
    store = Store(tmp_path / "runs")
    (trial,) = store.trials(sweep_id)
    assert trial.state == State.FINISHED and re.search(rf"^{trial.id} +finished", p.stdout, re.M)  # its table
    (run,) = server.runs.values()
    assert (run.id, run.group, run.entity, run.project) == (trial.id, sweep_id, ENTITY, "hpsearch")
    assert run.state == "finished" and epochs(run.history) == [1, 2, 3, 4, 5, 6]
    assert run.config["lr"] == trial.params["lr"] and run.config["dataset"] == "digits"
    assert run.summary["val_acc"] == trial.summary["val_acc"] and "test_acc" in run.summary
    assert not (store.trial_dir(trial) / UNCONFIRMED).exists()


def test_a_local_sweep_s_trials_are_live_runs_and_a_server_that_stops_answering_loses_nothing(
    tmp_path: Path, server: WandbServer
):
    hold = tmp_path / "hold"
    hold.touch()
    params = {"epochs": 4, "epoch_s": 0.2, "lr": 0.5, "hold": str(hold), "log_wandb": "true"}
    config = {"method": "grid", "program": str(STUB), "parameters": {k: {"value": v} for k, v in params.items()}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    e = logged_in(server, HPSEARCH_WANDB_FINISH_TIMEOUT="2")
    made = hpsearch("create-sweep", "sweep.yaml", "--backend", "local", "--project", "proj", "--dir", "store",
                    cwd=tmp_path, env=e)  # fmt: skip
    assert made.returncode == 0, made.stderr
    sweep_id = made.stdout.split()[-1]
    agent = start_agent(tmp_path, sweep_id, e)
    try:
        # Live: the trial's first epoch is on the server while the trial runs (held after it by the test).
        wait_for(lambda: server.runs and epochs(next(iter(server.runs.values())).history) == [1])
        (run,) = server.runs.values()
        store = Store(tmp_path / "store")
        (trial,) = store.trials(sweep_id)
        assert trial.state == State.RUNNING and run.state == "running"
        assert (run.id, run.group, run.project) == (trial.id, sweep_id, "proj") and run.config["lr"] == 0.5
        server.fault("file_stream", "500", 3600)  # the server stops taking the run's data
        hold.unlink()
        out, err = agent.communicate(timeout=300)
    finally:
        agent.kill()
    assert agent.returncode == 0, out + err
    trial = store.trial(trial.id)
    assert trial.state == State.FINISHED and trial.epochs == 4  # the trial did not fail for W&B
    assert epochs(run.history) == [1] and run.state == "running"
    assert (store.trial_dir(trial) / UNCONFIRMED).is_file()
    server.heal()  # the server answers again: `hpsearch sync` uploads what it missed
    p = hpsearch("sync", sweep_id, "--dir", "store", cwd=tmp_path, env=e)
    assert p.returncode == 0, p.stdout + p.stderr
    # Every epoch is there. (wandb's sync sends the whole run after the rows the server has, the first epoch again
    # among them, and this server appends at the offsets it is given; what W&B does with the repeat is W&B's.)
    assert sorted(set(epochs(run.history))) == [1, 2, 3, 4] and epochs(run.history)[-4:] == [1, 2, 3, 4]
    assert run.state == "finished"
    assert run.summary["best_acc"] == trial.summary["best_acc"]
    again = hpsearch("sync", sweep_id, "--dir", "store", cwd=tmp_path, env=e)
    assert again.returncode == 1 and "no W&B runs of ended trials left to upload" in again.stderr


def test_two_agents_starting_together_fetch_the_dataset_once(tmp_path: Path):
    """Fashion-MNIST from Debian's package, unpacked into an empty data folder by whichever agent takes the lock
    first; the other finds it there. Their trials train on 64 images of it."""
    fixed = {"dataset": "fashion_mnist", "data_dir": str(tmp_path / "data"), "model": "test_resnet",
             "cifar_stem": False, "epochs": 1, "batch_size": 32, "workers": 0, "aa": "none", "warmup_epochs": 0,
             "train_subset": 64, "val_subset": 32}  # fmt: skip
    config = {
        "method": "grid",
        "parameters": {**{k: {"value": v} for k, v in fixed.items()}, "lr": {"values": [0.1, 0.2]}},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    sweep_id = hpsearch("create-sweep", "sweep.yaml", "--dir", "store", cwd=tmp_path).stdout.split()[-1]
    agents = [start_agent(tmp_path, sweep_id, env(), "--count", "1") for _ in range(2)]
    outs = [a.communicate(timeout=600) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outs
    said = [line for out, _ in outs for line in out.splitlines() if line.startswith("data: ")]
    assert said == [f"data: unpacked Debian fashion_mnist into {tmp_path / 'data' / 'FashionMNIST' / 'raw'}"]
    assert sorted(os.listdir(tmp_path / "data")) == [".hpsearch-fetch.lock", "FashionMNIST"]
    trials = Store(tmp_path / "store").trials(sweep_id)
    assert [t.state for t in trials] == [State.FINISHED] * 2 and all("test_acc" in t.summary for t in trials)
