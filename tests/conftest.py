from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fakedata import write_cifar100  # noqa: E402
from postgres import PostgresServer  # noqa: E402

from hpsearch.sweep.store import Store, Trial, new_id  # noqa: E402

# A tiny timm ResNet keeps CPU runs to seconds; everything else is the trainer's real path.
SMALL = ["--model=test_resnet", "--batch_size=32", "--workers=0", "--aa=none", "--warmup_epochs=0"]
STUB = Path(__file__).parent / "stub_trainer.py"  # the training script of the coordination tests (see its docstring)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A CIFAR-100-format folder: 256 training and 101 test images (odd, so DDP padding would show)."""
    return write_cifar100(tmp_path_factory.mktemp("cifar"), n_train=256, n_test=101)


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session; each test that needs it makes its own database."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request, monkeypatch) -> str | None:
    """Runs a test once per kind of store: the SQLite file in --dir, and a fresh PostgreSQL database, which
    every `hpsearch` command the test starts finds in HPSEARCH_DB."""
    if request.param == "sqlite":
        monkeypatch.delenv("HPSEARCH_DB", raising=False)
        return None
    url = request.getfixturevalue("postgres").create_database(f"t_{new_id()}")
    monkeypatch.setenv("HPSEARCH_DB", url)
    return url


def open_store(root: Path) -> Store:
    """The store the test's commands use (HPSEARCH_DB when a test runs on PostgreSQL)."""
    return Store(root, os.environ.get("HPSEARCH_DB"))


def env(**extra: str) -> dict[str, str]:
    # One compute thread per process: the tests run several tiny trials at once on a 2-core machine.
    e = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    e.update(extra)
    return e


def train(args: list[str], cwd: Path, nproc: int = 0, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    """`python -m hpsearch.train ARGS`, or under torchrun with `nproc` workers."""
    launcher = [sys.executable, "-m", "hpsearch.train"]
    if nproc:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        launcher += ["-m", "hpsearch.train"]
    return subprocess.run(
        launcher + args, cwd=cwd, env=kw.pop("env", env()), capture_output=True, text=True, timeout=timeout, **kw
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def hpsearch(*args: str, cwd: Path, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    """The `hpsearch` CLI as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "hpsearch.cli", *args],
        cwd=cwd,
        env=kw.pop("env", env()),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def fast_params(cifar_root: Path, epochs: int = 2) -> dict:
    """Fixed sweep parameters that make a CPU trial take seconds."""
    return {
        "model": {"value": "test_resnet"},
        "cifar_stem": {"value": False},  # the ImageNet stem's 4x downsampling: 4x cheaper steps on the CPU
        "data_dir": {"value": str(cifar_root)},
        "epochs": {"value": epochs},
        "batch_size": {"value": 32},
        "workers": {"value": 0},
        "aa": {"value": "none"},
        "warmup_epochs": {"value": 0},
    }


def wait_for(condition: Callable[[], object], timeout: float = 300) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def stub_sweep(method: str, epochs: int | dict = 2, epoch_s: float = 0.2, **parameters: dict) -> dict:
    """A sweep whose trials run the stub trainer (`program`, as in W&B sweep files): `parameters` beside epochs."""
    fixed = {"epochs": epochs if isinstance(epochs, dict) else {"value": epochs}, "epoch_s": {"value": epoch_s}}
    return {"method": method, "program": str(STUB), "parameters": {**fixed, **parameters}}


def plotly_figures(page: str) -> dict[str, list[dict]]:
    """div id -> the traces each `Plotly.newPlot("id", [traces], ...)` call on the page draws."""
    out = {}
    decoder = json.JSONDecoder()
    for chunk in page.split("Plotly.newPlot(")[1:]:
        chunk = chunk.lstrip()
        div, end = decoder.raw_decode(chunk)
        traces, _ = decoder.raw_decode(chunk[end:].lstrip().removeprefix(",").lstrip())
        out[div] = traces
    return out


def live_in_group(pgid: int) -> list[psutil.Process]:
    """Processes of a trial's process group that still run (zombies awaiting init's reaping hold nothing)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out


def make_sweep(tmp_path: Path, config: dict, name: str = "s.yaml") -> str:
    f = tmp_path / name
    f.write_text(yaml.safe_dump(config))
    p = hpsearch("create-sweep", str(f), "--dir", str(tmp_path / "store"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "backend: local" in p.stdout and "hpsearch agent" in p.stdout
    return p.stdout.strip().splitlines()[-1]


def sweep_status(tmp_path: Path, sweep_id: str) -> dict:
    p = hpsearch("status", sweep_id, "--json", "--dir", str(tmp_path / "store"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def run_agent(tmp_path: Path, sweep_id: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return hpsearch("agent", sweep_id, "--dir", str(tmp_path / "store"), *args, cwd=tmp_path, **kw)


def agent_in_a_long_trial(tmp_path: Path, config: dict, agent_env: dict, epochs_done: int, *args: str):
    """An agent process (options `args`) running the one trial of `config`, returned once it has recorded
    `epochs_done` epochs."""
    sweep_id = make_sweep(tmp_path, config)
    store = open_store(tmp_path / "store")
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store"), *args]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=agent_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for(lambda: store.trials(sweep_id) and store.trials(sweep_id)[0].epochs >= epochs_done)
    return sweep_id, store, proc


def lapse(store: Store, trial_id: str, seconds: float = 3600.0) -> None:
    """Move a running trial's start and last heartbeat `seconds` back, as if its agent, which the test killed, had
    died that long ago: past any heartbeat window, so that the test waits on the kill and not on the window, and
    every agent can keep the default window, which no stall of a loaded machine comes near."""
    sql = "UPDATE trials SET started = started - :s, heartbeat = heartbeat - :s WHERE id = :id AND state = 'running'"
    with store.engine.begin() as conn:
        assert conn.execute(sa.text(sql), {"s": seconds, "id": trial_id}).rowcount == 1


def release_once_shared(store: Store, sweep_id: str, hold: Path, agents: int = 2) -> None:
    """Wait until `agents` agents each run a trial (which --hold keeps after its epoch), then let the trials go on:
    the work is shared however long an agent of a loaded machine took to start."""
    wait_for(lambda: len({t.agent for t in store.trials(sweep_id) if t.state == "running"}) >= agents)
    hold.unlink()


def two_agents_sharing(tmp_path: Path, sweep_id: str, hold: Path) -> list[Trial]:
    """Two `hpsearch agent` processes on the sweep in tmp_path/store, started together and released once each runs
    a trial; both must end with exit 0. The sweep's trials, in creation order."""
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store")]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    release_once_shared(open_store(tmp_path / "store"), sweep_id, hold)
    outs = [q.communicate(timeout=600)[0] for q in procs]
    assert [q.returncode for q in procs] == [0, 0], outs
    return open_store(tmp_path / "store").trials(sweep_id)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The grouped tests (many agents at once, the report's shared sweep) are the longest: start them first so
    that neither xdist worker is left running one of them alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)
