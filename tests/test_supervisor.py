"""The agent as a supervisor, with real processes on the CPU: progress lines, the hung-trial watchdog, crashed
trials resumed from their checkpoints, unreadable checkpoints, failed writes, many agents on one store."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    SMALL,
    agent_in_a_long_trial,
    env,
    fast_params,
    lapse,
    live_in_group,
    make_sweep,
    metrics,
    open_store,
    release_once_shared,
    run_agent,
    stub_sweep,
    sweep_status,
    train,
    wait_for,
)

from hpsearch.params import TrainConfig
from hpsearch.sweep.store import SCHEMA_VERSION, Store
from hpsearch.train.model import build_model


def test_progress_lines_and_the_watchdog_ending_a_hung_trial(tmp_path: Path):
    # Grid order: the first trial hangs (held after its first epoch, then SIGSTOP), the second runs its 3 epochs.
    hold = tmp_path / "hold"
    hold.touch()
    recipes = [{"lr": 0.1, "hold": str(hold)}, {"lr": 0.2}]
    sweep_id = make_sweep(tmp_path, stub_sweep("grid", epochs=3, recipe={"values": recipes}))
    store = open_store(tmp_path / "store")
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store")]
    cmd += ["--hang-timeout", "3", "--grace", "2"]  # its epochs take 0.2 s: 5x its slowest is less than 3 s
    agent = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: store.trials(sweep_id) and store.trials(sweep_id)[0].epochs >= 1)
    hung = store.trials(sweep_id)[0]
    os.kill(hung.pgid, signal.SIGSTOP)  # one worker trial: the group leader is the trainer itself
    out = agent.communicate(timeout=300)[0]
    assert agent.returncode == 0, out

    hung, done = store.trials(sweep_id)
    assert hung.state == "failed", out
    quiet = re.fullmatch(rf"no progress for (\d+) s after epoch {hung.epochs}", hung.error)
    assert quiet and int(quiet[1]) >= 3, hung.error  # ended once the hang timeout had passed
    assert not live_in_group(hung.pgid)  # SIGKILL reached the stopped process
    assert done.state == "finished" and done.epochs == 3

    # One line per epoch of the finished trial, with the numbers the store recorded.
    lines = [line for line in out.splitlines() if line.startswith(f"[{done.id} CPU] epoch ")]
    assert len(lines) == 3, out
    pattern = rf"\[{done.id} CPU\] epoch (\d+)/3  val_acc ([\d.]+)  best ([\d.]+)  lr (\S+)  ([\d,]+) img/s  eta (\S+)"
    for line, record in zip(lines, store.history(done.id), strict=True):
        m = re.fullmatch(pattern, line)
        assert m, line
        assert int(m[1]) == record["epoch"]
        assert m[2] == f"{record['val_acc']:.2f}" and m[3] == f"{record['best_acc']:.2f}"
        assert m[5] == f"{record['img_per_sec']:,.0f}"
    assert lines[-1].endswith("eta 0s")


def _kill_when(store: Store, sweep_id: str, agent: subprocess.Popen, epochs: int) -> None:
    """SIGKILL the agent once the trial has recorded `epochs` epochs; wait until the trial's processes are gone
    (the kernel SIGTERMs them when their agent dies), then age its last heartbeat past the window."""
    wait_for(lambda: store.trials(sweep_id)[0].epochs >= epochs)
    agent.kill()
    agent.wait()
    (trial,) = store.trials(sweep_id)
    wait_for(lambda: not live_in_group(trial.pgid), timeout=30)
    lapse(store, trial.id)


def test_a_crashed_trial_resumes_from_its_checkpoint_until_the_retry_limit(tmp_path: Path):
    hold = tmp_path / "hold"  # each copy of the trial waits after an epoch from the second on, until killed
    hold.write_text("2")
    config = stub_sweep("grid", epochs=12, lr={"value": 0.05}, hold={"value": str(hold)})
    sweep_id, store, first = agent_in_a_long_trial(tmp_path, config, env(), 2)
    _kill_when(store, sweep_id, first, 2)

    # `status` only reads: it says the trial's agent went quiet and leaves marking it crashed to the next agent.
    db = tmp_path / "store" / "hpsearch.db"
    rows = sqlite3.connect(db).execute("SELECT * FROM trials").fetchall()
    p = run_status(tmp_path, sweep_id)
    assert sqlite3.connect(db).execute("SELECT * FROM trials").fetchall() == rows
    assert re.search(rf"^{sweep_id}-1\s+running \(agent quiet 1h\d\dm\)\s", p, re.M), p

    # The next agent resumes it after its last checkpoint; killed again, it has crashed twice.
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store")]
    second = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _kill_when(store, sweep_id, second, 3)
    assert f"trial {sweep_id}-1 resumed on CPU" in second.stdout.read()
    hold.unlink()

    # Past a limit of one resume it stays crashed: the agent finds nothing to run.
    p = run_agent(tmp_path, sweep_id, "--max-resumes", "1")
    assert p.returncode == 0 and "resumed" not in p.stdout, p.stdout
    (trial,) = sweep_status(tmp_path, sweep_id)["trials"]
    assert trial["state"] == "crashed" and trial["resumes"] == 1

    # Within the default limit (2) it resumes again, from its checkpoint, and runs to its full epoch count.
    p = run_agent(tmp_path, sweep_id)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"trial {sweep_id}-1 resumed on CPU" in p.stdout
    (trial,) = store.trials(sweep_id)
    assert trial.state == "finished" and trial.epochs == 12 and trial.resumes == 2 and trial.crashes == 2
    assert [r["epoch"] for r in store.history(trial.id)] == list(range(1, 13))
    log = (tmp_path / "store" / sweep_id / trial.id / "stdout.log").read_text()
    resumed_after = [int(n) for n in re.findall(r"resumed from \S+ after epoch (\d+)", log)]
    assert resumed_after == [2, 3], log
    assert log.count("no checkpoint at") == 1  # at its first start only: never started over
    text = run_status(tmp_path, sweep_id)
    assert re.search(rf"^{trial.id}\s+finished\s+\S+\s+12\s+\S+\s+2\b", text, re.M), text  # the resumes column


def run_status(tmp_path: Path, sweep_id: str) -> str:
    cmd = [sys.executable, "-m", "hpsearch.cli", "status", sweep_id, "--dir", str(tmp_path / "store")]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=tmp_path).stdout


def _checkpointed(cifar_root: Path, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "out"
    p = train([*SMALL, f"--data_dir={cifar_root}", "--epochs=1", f"--output_dir={out}", *extra], tmp_path)
    assert p.returncode == 0, p.stderr
    return out


def test_an_unreadable_checkpoint_is_one_line_and_the_trial_starts_again(cifar_root: Path, tmp_path: Path):
    out = _checkpointed(cifar_root, tmp_path, "--cifar_stem=false")
    ckpt = out / "checkpoint.pt"

    def another_model() -> None:
        state = torch.load(ckpt, weights_only=False)
        state["model"] = build_model(TrainConfig(model="test_efficientnet", cifar_stem=False), 100).state_dict()
        torch.save(state, ckpt)

    cases = {
        "another model": another_model,
        "truncated": lambda: ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2]),
    }
    for case, damage in cases.items():
        damage()
        mfile = tmp_path / f"{case}.jsonl"
        args = [*SMALL, "--cifar_stem=false", f"--data_dir={cifar_root}", "--epochs=2", f"--output_dir={out}"]
        p = train([*args, "--resume=true", f"--metrics_file={mfile}"], tmp_path)
        assert p.returncode == 0, p.stderr
        lines = [line for line in p.stderr.splitlines() if line.startswith("hpsearch train:")]
        assert lines == [lines[0]] and lines[0].startswith(
            f"hpsearch train: warning: checkpoint {ckpt} is unreadable ("
        ), (
            case,
            p.stderr,
        )
        assert lines[0].endswith("); starting again from epoch 0")
        if case == "another model":
            assert "its model does not match this one" in lines[0]
        assert "Traceback" not in p.stderr
        assert [r["epoch"] for r in metrics(mfile)] == [1, 2]  # from the start, not after epoch 1
        assert "resumed from" not in p.stdout


def test_a_checkpoint_that_hits_the_file_size_limit_fails_the_trial_with_the_os_error(cifar_root: Path, tmp_path: Path):
    # The checkpoint of the test model is about 3 MB: a 1 MB file size limit on the agent (and so on its
    # trials) stops it, while the store, logs and metrics stay far below it.
    sweep_id = make_sweep(tmp_path, {"method": "grid", "parameters": fast_params(cifar_root, epochs=2)})

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    p = run_agent(tmp_path, sweep_id, preexec_fn=limit)
    assert p.returncode == 0, p.stdout + p.stderr
    (trial,) = open_store(tmp_path / "store").trials(sweep_id)
    tmp = tmp_path / "store" / sweep_id / trial.id / "checkpoint.tmp"
    assert trial.state == "failed"
    assert trial.error == f"hpsearch train: error: cannot write checkpoint {tmp}: File too large", trial.error
    assert f"trial {trial.id} failed: hpsearch train: error: cannot write checkpoint" in p.stdout
    assert not tmp.exists()  # no half-written file left behind
    assert "Traceback" not in (tmp_path / "store" / sweep_id / trial.id / "stderr.log").read_text()


def _many_agents(tmp_path: Path, sweep_id: str, n: int, hold: Path, *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store"), *args]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(n)
    ]
    release_once_shared(open_store(tmp_path / "store"), sweep_id, hold)
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, outs
    return outs


@pytest.mark.xdist_group("many-agents")
def test_eight_agents_on_one_sqlite_store_run_a_24_point_grid_exactly_once(tmp_path: Path):
    slots = ("--gpu-ids", "0,1", "--gpus-per-trial", "1")  # two trials at once in each agent
    for name, n, points, args in (("agents", 8, 24, ()), ("slots", 2, 8, slots)):
        lrs = [round(0.005 * i, 3) for i in range(1, points + 1)]
        hold = tmp_path / f"{name}.hold"  # the first trials wait until two agents run one
        hold.touch()
        config = stub_sweep("grid", epochs=1, lr={"values": lrs}, hold={"value": str(hold)})
        sweep_id = make_sweep(tmp_path, config, f"{name}.yaml")
        outs = _many_agents(tmp_path, sweep_id, n, hold, *args)
        assert not any("database is locked" in out for out in outs), outs
        trials = open_store(tmp_path / "store").trials(sweep_id)
        assert sorted(t.params["lr"] for t in trials) == lrs, name  # every point, none twice
        assert all(t.state == "finished" and t.epochs == 1 for t in trials), name
        assert len({t.agent for t in trials}) > 1, name
        assert sweep_status(tmp_path, sweep_id)["sweep"]["state"] == "finished"


def test_a_store_from_before_schema_versions_is_migrated(tmp_path: Path):
    # The schema hpsearch wrote before the store recorded a version (no meta table, no resume counters).
    db = sqlite3.connect(tmp_path / "hpsearch.db")
    db.executescript(
        """
        CREATE TABLE sweeps (id TEXT PRIMARY KEY, name TEXT, backend TEXT NOT NULL, config TEXT NOT NULL,
            created REAL NOT NULL, exhausted INTEGER NOT NULL DEFAULT 0, remote TEXT);
        CREATE TABLE trials (id TEXT PRIMARY KEY, sweep_id TEXT NOT NULL REFERENCES sweeps(id), seq INTEGER NOT NULL,
            params TEXT NOT NULL, state TEXT NOT NULL, agent TEXT, created REAL NOT NULL, started REAL, ended REAL,
            heartbeat REAL, pgid INTEGER, exit_code INTEGER, error TEXT, summary TEXT NOT NULL DEFAULT '{}',
            epochs INTEGER NOT NULL DEFAULT 0, runtime REAL NOT NULL DEFAULT 0);
        CREATE TABLE history (trial_id TEXT NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL,
            metrics TEXT NOT NULL, PRIMARY KEY (trial_id, epoch));
        INSERT INTO sweeps VALUES ('old', '', 'local', '{"method": "grid", "metric": {"name": "val_acc"}}', 1.0, 1,
            NULL);
        INSERT INTO trials (id, sweep_id, seq, params, state, created, summary, epochs)
            VALUES ('old-1', 'old', 1, '{"lr": 0.1}', 'finished', 1.0, '{"val_acc": 50.0}', 3);
        INSERT INTO history VALUES ('old-1', 1, '{"epoch": 1, "val_acc": 30.0}'), ('old-1', 2, '{"epoch": 2}'),
            ('old-1', 3, '{"epoch": 3, "val_acc": 50.0}');
        """
    )
    db.close()
    store = Store(tmp_path)
    (trial,) = store.trials("old")
    assert (trial.params, trial.summary, trial.epochs, trial.resumes, trial.crashes, trial.revision) == (
        {"lr": 0.1},
        {"val_acc": 50.0},
        3,
        0,
        0,
        0,
    )
    version = sqlite3.connect(tmp_path / "hpsearch.db").execute("SELECT value FROM meta").fetchone()[0]
    assert json.loads(version) == SCHEMA_VERSION == 4
    assert trial.series.pairs() == [(1, 30.0), (3, 50.0)]  # (version 4) the sweep metric's values, from its history
    # ... and it takes the writes of today's agents: epochs carry their writer (a column of version 3)
    assert store.take(trial, "agent-1")
    store.add_epochs(trial.id, [{"epoch": 4, "val_acc": 51.0}], "agent-1", "val_acc")
    assert store.trial(trial.id).series.pairs() == [(1, 30.0), (3, 50.0), (4, 51.0)]
    writer = sqlite3.connect(tmp_path / "hpsearch.db").execute("SELECT agent FROM history WHERE epoch = 4").fetchone()
    assert writer == ("agent-1",)
