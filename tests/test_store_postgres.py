"""One sweep, many machines: agents that share nothing but a PostgreSQL database (each its own --dir), against
a real server the tests start. (The sweep tests in test_sweep.py also run on both stores.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml
from conftest import env, fast_params, hpsearch, lapse, live_in_group, release_once_shared, stub_sweep, wait_for
from postgres import PASSWORD

from hpsearch.sweep.store import Store


def tiny(cifar_root: Path, epochs: int = 1) -> dict:
    """A trial that is mostly start-up: two steps of 32 images, 32 validation images."""
    return {**fast_params(cifar_root, epochs), "train_subset": {"value": 64}, "val_subset": {"value": 32}}


def create(tmp_path: Path, db: str, config: dict) -> str:
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(config))
    p = hpsearch("create-sweep", str(f), "--db", db, "--dir", str(tmp_path / "m0"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert PASSWORD not in p.stdout + p.stderr
    return p.stdout.strip().splitlines()[-1]


def start_agent(tmp_path: Path, db: str, sweep_id: str, machine: str) -> subprocess.Popen:
    """An agent on its own 'machine': its own --dir; the database URL reaches it through HPSEARCH_DB."""
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / machine)]
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env(HPSEARCH_DB=db), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(procs: list[subprocess.Popen]) -> list[str]:
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outs
    return outs


def files_mention(root: Path, secret: str) -> list[Path]:
    return [f for f in root.rglob("*") if f.is_file() and secret.encode() in f.read_bytes()]


@pytest.mark.xdist_group("many-agents")
def test_four_agents_on_four_machines_claim_every_grid_point_and_run_cap_exactly_once(
    cifar_root: Path, tmp_path: Path, postgres
):
    db = postgres.create_database("grid_and_cap")
    lrs = [round(0.01 * i, 2) for i in range(1, 17)]
    hold = tmp_path / "hold"  # the first trials wait until two machines run one
    hold.touch()
    grid = create(tmp_path, db, stub_sweep("grid", epochs=1, lr={"values": lrs}, hold={"value": str(hold)}))
    store = Store(tmp_path / "m0", db)
    agents = [start_agent(tmp_path, db, grid, f"m{i}") for i in range(4)]
    release_once_shared(store, grid, hold)
    outs = finish(agents)
    trials = store.trials(grid)
    assert sorted(t.params["lr"] for t in trials) == lrs  # every point, none twice
    assert all(t.state == "finished" and t.epochs == 1 for t in trials)
    assert len({t.agent for t in trials}) >= 2, outs  # the work was shared
    # each trial's folder is on the machine that ran it, and only there
    for t in trials:
        assert len([m for m in range(4) if (tmp_path / f"m{m}" / grid / t.id / "metrics.jsonl").exists()]) == 1
    p = hpsearch("status", grid, "--json", "--db", db, "--dir", str(tmp_path / "elsewhere"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["sweep"]["state"] == "finished"
    assert json.loads(p.stdout)["sweep"]["counts"] == {"finished": 16}

    capped = create(tmp_path, db, {**stub_sweep("random", epochs=1, lr={"min": 0.01, "max": 0.1}), "run_cap": 5})
    finish([start_agent(tmp_path, db, capped, f"m{i}") for i in range(4)])
    trials = store.trials(capped)
    assert len(trials) == 5 and all(t.state == "finished" for t in trials)

    # the report needs only the database: from a machine with an empty --dir, every trial is on the page
    page = tmp_path / "elsewhere" / "report.html"
    p = hpsearch("report", grid, "--db", db, "--dir", str(tmp_path / "elsewhere"), "-o", str(page), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert all(t.id in page.read_text() for t in store.trials(grid))
    # the password is in no file, no output and no column of the database
    assert not files_mention(tmp_path, PASSWORD)
    assert not any(PASSWORD in out for out in outs)
    with psycopg.connect(db) as conn:
        for table in ("sweeps", "trials", "history", "meta"):
            for row in conn.execute(f"SELECT * FROM {table}"):
                assert PASSWORD not in repr(row), (table, row)


@pytest.mark.xdist_group("many-agents")
def test_a_killed_agent_s_trial_is_crashed_then_resumed_where_its_checkpoint_is(
    cifar_root: Path, tmp_path: Path, postgres
):
    db = postgres.create_database("killed")
    lrs = [round(0.01 * i, 2) for i in range(1, 9)]
    hold = tmp_path / "hold"  # the victim's first trial waits after its first epoch until it is killed
    hold.touch()
    grid = create(tmp_path, db, stub_sweep("grid", epochs=3, lr={"values": lrs}, hold={"value": str(hold)}))
    store = Store(tmp_path / "m0", db)
    victim = start_agent(tmp_path, db, grid, "m0")
    wait_for(lambda: any(t.epochs >= 1 for t in store.trials(grid)))  # killed once its first trial has a checkpoint
    (running,) = store.trials(grid)  # the victim's, the only one yet
    trial_env = Path(f"/proc/{running.pgid}/environ").read_bytes()  # the trial never sees the database
    assert b"HPSEARCH_DB" not in trial_env and PASSWORD.encode() not in trial_env and b"RANK=0" in trial_env
    victim.kill()
    victim.wait()
    # the kernel's SIGTERM (PR_SET_PDEATHSIG) ends the victim's trial
    wait_for(lambda: not live_in_group(running.pgid), timeout=30)
    hold.unlink()
    # Within the window (the default minute) its trial counts as running: the other machines leave it alone.
    finish([start_agent(tmp_path, db, grid, f"m{i}") for i in (1, 2)])
    trials = store.trials(grid)
    assert sorted(t.params["lr"] for t in trials) == lrs  # nothing lost, nothing twice
    assert all(t.state == "finished" for t in trials if t.id != running.id)
    assert store.trial(running.id).state == "running"

    lapse(store, running.id)  # the victim's machine has been gone an hour
    rows = store.trials(grid)
    p = hpsearch("status", grid, "--json", "--db", db, cwd=tmp_path)
    assert store.trials(grid) == rows  # status only reads
    victim = next(t for t in json.loads(p.stdout)["trials"] if t["id"] == running.id)
    assert victim["state"] == "running" and victim["quiet"] >= 3600, victim  # the next claim marks it crashed

    # The victim's machine comes back: its agent marks the trial crashed, sees its checkpoint and resumes it.
    (out,) = finish([start_agent(tmp_path, db, grid, "m0")])
    assert f"trial {running.id} resumed on CPU" in out
    trial = store.trial(running.id)
    assert trial.state == "finished" and trial.epochs == 3 and trial.resumes == 1 and trial.crashes == 1
    assert "resumed from" in (tmp_path / "m0" / grid / running.id / "stdout.log").read_text()


def test_a_preempted_trial_whose_checkpoint_is_on_another_machine_restarts_from_epoch_0(
    cifar_root: Path, tmp_path: Path, postgres
):
    db = postgres.create_database("preempted")
    sweep = create(tmp_path, db, {"method": "grid", "parameters": {**tiny(cifar_root, 20), "lr": {"value": 0.05}}})
    store = Store(tmp_path / "m0", db)
    first = start_agent(tmp_path, db, sweep, "m1")
    wait_for(lambda: store.trials(sweep) and store.trials(sweep)[0].epochs >= 2)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 130
    (trial,) = store.trials(sweep)
    assert trial.state == "preempted" and trial.epochs >= 2

    (out,) = finish([start_agent(tmp_path, db, sweep, "m2")])
    assert f"trial {trial.id}: no checkpoint of it at {tmp_path / 'm2' / sweep / trial.id / 'checkpoint.pt'}" in out
    assert f"trial {trial.id} restarted on" in out
    (trial,) = store.trials(sweep)
    assert trial.state == "finished" and trial.epochs == 20
    assert [r["epoch"] for r in store.history(trial.id)] == list(range(1, 21))
    assert "no checkpoint at" in (tmp_path / "m2" / sweep / trial.id / "stdout.log").read_text()


@pytest.mark.parametrize(
    "case, command",
    [("bad url", "agent"), ("wrong password", "status"), ("server down", "report"), ("not postgres", "sync")],
)
def test_an_unusable_database_is_one_line_and_exit_2_with_nothing_written(
    case: str, command: str, cifar_root: Path, tmp_path: Path, postgres
):
    url = {
        "bad url": f"postgresql://hpsearch:{PASSWORD}@127.0.0.1:notaport/db",
        "wrong password": postgres.url("postgres", password="not-" + PASSWORD),
        "server down": f"postgresql://hpsearch:{PASSWORD}@127.0.0.1:1/db",
        "not postgres": f"mysql://hpsearch:{PASSWORD}@127.0.0.1/db",
    }[case]
    expected = {
        "bad url": "is not a database URL; allowed: postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME",
        "wrong password": 'cannot connect: connection to server at "127.0.0.1", port '
        f'{postgres.port} failed: FATAL: password authentication failed for user "hpsearch"',
        "server down": "cannot connect: connection to server at",
        "not postgres": "--db: mysql://hpsearch:***@127.0.0.1/db: 'mysql' databases are not supported; allowed: "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME",
    }[case]
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"method": "grid", "parameters": tiny(cifar_root)}))
    store_dir = tmp_path / "store"
    for argv in (["create-sweep", str(f)], [command, "abc"]):
        p = hpsearch(*argv, "--dir", str(store_dir), cwd=tmp_path, env=env(HPSEARCH_DB=url))
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"hpsearch {argv[0]}: error: "), p.stderr
        assert expected in lines[0], lines[0]
        assert PASSWORD not in p.stdout + p.stderr
        assert not store_dir.exists()
