"""Sweeps on SLURM, against a real cluster the tests start (tests/slurm.py: munged, slurmctld, two slurmd on this
machine): `hpsearch slurm` submits a job array of agents; requeues and the time-limit warning preempt trials that
are then resumed; a trial spans two nodes. CPU trials: the stub trainer's, and the real trainer's for two nodes."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import env, fast_params, hpsearch, stub_sweep, wait_for
from postgres import PASSWORD
from slurm import SlurmCluster

from hpsearch.sweep.store import Store

pytestmark = pytest.mark.xdist_group("slurm")  # one cluster, one worker


@pytest.fixture(scope="module")
def slurm_cluster():
    c = SlurmCluster(nodes=2).start()
    yield c
    c.stop()


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster):
    """The module's cluster, with every job a test started (a requeued one too) ended after it."""
    yield slurm_cluster
    slurm_cluster.end_jobs()


def slurm_env(cluster: SlurmCluster, **extra: str) -> dict[str, str]:
    return env(SLURM_CONF=cluster.env["SLURM_CONF"], **extra)


def create(tmp_path: Path, config: dict, e: dict) -> str:
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(config))
    p = hpsearch("create-sweep", str(f), "--dir", str(tmp_path / "runs"), cwd=tmp_path, env=e)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


def submit(tmp_path: Path, sweep_id: str, e: dict, *args: str) -> str:
    p = hpsearch("slurm", sweep_id, "--dir", str(tmp_path / "runs"), "--time", "10:00", *args, cwd=tmp_path, env=e)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.strip().splitlines()[-1]


def logs(tmp_path: Path, sweep_id: str) -> str:
    return "".join(f.read_text() for f in sorted((tmp_path / "runs" / sweep_id / "slurm").glob("*.out")))


def finished_once(store: Store, sweep_id: str, lrs: list[float], epochs: int) -> None:
    trials = store.trials(sweep_id)
    assert sorted(t.params["lr"] for t in trials) == sorted(lrs)
    for t in trials:
        assert t.state == "finished" and t.epochs == epochs, t
        assert [r["epoch"] for r in store.history(t.id)] == list(range(1, epochs + 1))


def test_a_job_array_of_agents_runs_a_postgresql_sweep_to_its_end(tmp_path: Path, cluster, postgres):
    db = postgres.create_database("slurm_array")
    e = slurm_env(cluster, HPSEARCH_DB=db)
    lrs = [0.1, 0.2, 0.3, 0.4]
    sweep_id = create(tmp_path, stub_sweep("grid", epochs=4, epoch_s=0.3, lr={"values": lrs}), e)
    job = submit(tmp_path, sweep_id, e, "--nodes", "2")
    script = tmp_path / "runs" / sweep_id / "slurm" / "agents.sbatch"
    assert "#SBATCH --array=0-1" in script.read_text() and PASSWORD not in script.read_text()
    assert cluster.run("sbatch", "--test-only", str(script)).returncode == 0
    wait_for(lambda: not cluster.jobs())
    store = Store(tmp_path / "runs", db)
    finished_once(store, sweep_id, lrs, 4)
    agents = {t.agent for t in store.trials(sweep_id)}
    assert all(re.fullmatch(rf"n[12]-slurm{job}_[01]-\d+-\w+", a) for a in agents), agents  # job and node
    assert not any(PASSWORD in f.read_text() for f in (tmp_path / "runs" / sweep_id / "slurm").iterdir())


def test_a_requeued_task_s_trial_is_preempted_and_resumed_to_its_full_epoch_count(tmp_path: Path, cluster, postgres):
    db = postgres.create_database("slurm_requeue")
    e = slurm_env(cluster, HPSEARCH_DB=db)
    lrs = [0.1, 0.2]
    hold = tmp_path / "hold"  # both trials wait after their third epoch until the requeue has preempted one
    hold.write_text("3")
    config = stub_sweep("grid", epochs=8, lr={"values": lrs}, hold={"value": str(hold)})
    sweep_id = create(tmp_path, config, e)
    job = submit(tmp_path, sweep_id, e, "--nodes", "2")
    store = Store(tmp_path / "runs", db)
    wait_for(lambda: len(store.trials(sweep_id)) == 2 and all(t.epochs >= 3 for t in store.trials(sweep_id)))
    victim = next(t for t in store.trials(sweep_id) if t.agent.split("-")[1].endswith("_1"))
    assert cluster.run("scontrol", "requeue", f"{job}_1").returncode == 0
    wait_for(lambda: store.trial(victim.id).state != "running" or store.trial(victim.id).resumes)
    hold.unlink()
    wait_for(lambda: all(t.state == "finished" for t in store.trials(sweep_id)))
    finished_once(store, sweep_id, lrs, 8)
    assert store.trial(victim.id).resumes == 1
    out = logs(tmp_path, sweep_id)
    assert f"trial {victim.id} preempted" in out and f"trial {victim.id} resumed on CPU" in out, out
    log = (tmp_path / "runs" / sweep_id / victim.id / "stdout.log").read_text()
    assert re.search(r"resumed from \S+ after epoch 3", log), log


def test_the_time_limit_warning_preempts_the_trial_and_requeues_the_job(tmp_path: Path, cluster):
    e = slurm_env(cluster)
    hold = tmp_path / "hold"  # the trial waits after its second epoch until the warning has preempted it
    hold.write_text("2")
    config = stub_sweep("grid", epochs=40, lr={"value": 0.1}, hold={"value": str(hold)})
    sweep_id = create(tmp_path, config, e)
    job = submit(tmp_path, sweep_id, e, "--nodes", "1")  # one node: a SQLite store is fine
    store = Store(tmp_path / "runs")
    wait_for(lambda: store.trials(sweep_id) and store.trials(sweep_id)[0].epochs >= 2)
    (trial,) = store.trials(sweep_id)
    assert cluster.run("scancel", "--signal=USR1", "--batch", f"{job}_0").returncode == 0
    wait_for(lambda: store.trial(trial.id).state != "running")
    stopped = store.trial(trial.id)
    assert stopped.state == "preempted" and stopped.error == "the agent's SLURM job reached its time-limit warning"
    wait_for(lambda: "requeued SLURM job" in logs(tmp_path, sweep_id), 60)
    assert f"requeued SLURM job {job}_0 for the work left" in logs(tmp_path, sweep_id)
    assert any(line.startswith(f"{job}_0 ") for line in cluster.jobs())  # back in the queue, not ended


def test_a_trial_spans_two_nodes_and_a_hang_ends_it_on_both(tmp_path: Path, cluster, cifar_root: Path):
    e = slurm_env(cluster)
    config = {"method": "grid", "parameters": {**fast_params(cifar_root, epochs=2), "lr": {"value": 0.05}}}
    sweep_id = create(tmp_path, config, e)
    submit(tmp_path, sweep_id, e, "--nodes", "2", "--nodes-per-trial", "2")
    wait_for(lambda: not cluster.jobs(), 300)
    (trial,) = Store(tmp_path / "runs").trials(sweep_id)
    assert trial.state == "finished", logs(tmp_path, sweep_id)
    assert trial.summary["world_size"] == 2  # one gloo worker on each node
    assert [r["epoch"] for r in Store(tmp_path / "runs").history(trial.id)] == [1, 2]
    assert f"trial {trial.id} started on CPU x1 (2 nodes)" in logs(tmp_path, sweep_id)

    (tmp_path / "hung").mkdir()
    hung = create(tmp_path / "hung", stub_sweep("grid", epochs=200, epoch_s=0.2, lr={"value": 0.1}), e)
    # (a stopped worker takes no SIGTERM: the hung trial ends when SIGKILL follows, --grace seconds later)
    submit(tmp_path / "hung", hung, e, "--nodes", "2", "--nodes-per-trial", "2", "--hang-timeout", "3", "--grace", "2")
    store = Store(tmp_path / "hung" / "runs")
    wait_for(lambda: store.trials(hung) and store.trials(hung)[0].epochs >= 2)
    trial_dir = str(tmp_path / "hung" / "runs" / hung / store.trials(hung)[0].id)
    copies = [p for p in psutil.process_iter(["cmdline"]) if trial_dir in " ".join(p.info["cmdline"] or [])]
    workers = [p for p in copies if "stub_trainer.py" in " ".join(p.info["cmdline"]) and "torch" not in p.name()]
    assert len({p.pid for p in workers}) >= 2  # a worker per node
    for p in workers:
        os.kill(p.pid, signal.SIGSTOP)
    wait_for(lambda: not cluster.jobs(), 120)
    (trial,) = store.trials(hung)
    assert trial.state == "failed" and trial.error.startswith("no progress for"), trial
    left = [p for p in psutil.process_iter(["cmdline"]) if trial_dir in " ".join(p.info["cmdline"] or [])]
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_sqlite_store_on_several_nodes_is_refused_with_one_line(tmp_path: Path, cluster):
    e = slurm_env(cluster)
    sweep_id = create(tmp_path, stub_sweep("grid", lr={"value": 0.1}), e)
    p = hpsearch("slurm", sweep_id, "--dir", str(tmp_path / "runs"), "--nodes", "2", cwd=tmp_path, env=e)
    assert p.returncode == 2 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(f"hpsearch slurm: error: --nodes 2: agents on several nodes cannot share the SQLite store "
                           f"{tmp_path / 'runs' / 'hpsearch.db'}; keep the sweep in PostgreSQL")  # fmt: skip
    assert not cluster.jobs() and not (tmp_path / "runs" / sweep_id / "slurm").exists()
    dry = hpsearch("slurm", sweep_id, "--dir", str(tmp_path / "runs"), "--nodes", "1", "--dry-run", cwd=tmp_path, env=e)
    assert dry.returncode == 0 and dry.stdout.startswith("#!/bin/bash") and not cluster.jobs()
    assert json.loads(hpsearch("status", sweep_id, "--json", "--dir", str(tmp_path / "runs"), cwd=tmp_path,
                               env=e).stdout)["trials"] == []  # fmt: skip
