"""The W&B backend over the wire: real `hpsearch` processes and the real, unpatched wandb client (its SDK and
the Go wandb-core service) talking HTTP to tests/wandb_server.py, whose sweep controller is W&B's `sweeps`
engine. Trials are tiny CPU runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from click.testing import CliRunner
from conftest import STUB, env, fast_params, live_in_group, stub_sweep, wait_for
from wandb_server import ENTITY, Run, WandbServer

from hpsearch.cli import main
from hpsearch.sweep.status import status as sweep_status
from hpsearch.sweep.store import State, Store

CLI = [sys.executable, "-m", "hpsearch.cli"]
# wandb's own settings (env WANDB__X) for a short send interval and retry windows, in whole seconds (wandb-core
# truncates): a request unanswered for about 5 s is given up, a fault of 2 s is ridden through.
SHORT = {
    "WANDB__FILE_STREAM_TRANSMIT_INTERVAL": "1",
    "WANDB__FILE_STREAM_RETRY_MAX": "20",
    "WANDB__FILE_STREAM_RETRY_WAIT_MIN_SECONDS": "1",
    "WANDB__FILE_STREAM_RETRY_WAIT_MAX_SECONDS": "1",
    "WANDB__FILE_STREAM_TIMEOUT_SECONDS": "2",
    "WANDB__GRAPHQL_RETRY_MAX": "4",
    "WANDB__GRAPHQL_RETRY_WAIT_MIN_SECONDS": "1",
    "WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS": "1",
    "WANDB__GRAPHQL_TIMEOUT_SECONDS": "2",
}
METRIC = {"name": "val_acc", "goal": "maximize"}


@pytest.fixture
def server():
    """The W&B-protocol server of one test; whatever the test did, the wandb client asked it nothing it does not
    serve (an operation it does not know would be a guess of ours passing unnoticed)."""
    with WandbServer() as s:
        yield s
    assert not s.unserved, f"GraphQL operations the test server does not serve: {s.unserved}"


def online(server: WandbServer) -> dict[str, str]:
    """A CPU machine (no GPU to count: the agent need not import torch) logged in to `server`, sending no error
    reports to Sentry: nothing may leave 127.0.0.1."""
    wandb = {"WANDB_MODE": "online", "WANDB_SILENT": "false", "WANDB_ERROR_REPORTING": "false"}
    # Our slots heartbeat every 5 s as wandb's agent does; 0.5 s keeps these tests short (wandb is not patched).
    return env(CUDA_VISIBLE_DEVICES="", HPSEARCH_WANDB_HEARTBEAT="0.5", **wandb, **SHORT, **server.env())


def cli(*args: str, cwd: Path, server: WandbServer) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], cwd=cwd, env=online(server), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


@pytest.fixture
def agents(server: WandbServer):
    """agents(SWEEP, STORE, *ARGS) starts `hpsearch agent`; any still running when the test ends is killed."""
    started: list[subprocess.Popen] = []

    def start(sweep: str, store: Path, *args: str) -> subprocess.Popen:
        cmd = [*CLI, "agent", sweep, "--dir", str(store), "--grace", "5", *args]
        out = subprocess.PIPE
        started.append(subprocess.Popen(cmd, cwd=store.parent, env=online(server), stdout=out, stderr=out, text=True))
        return started[-1]

    yield start
    for agent in started:
        if agent.poll() is None:
            agent.kill()  # its trial's processes get SIGTERM from the kernel when it dies
            agent.communicate()


def finish(agent: subprocess.Popen, timeout: int = 300) -> tuple[int, str, str]:
    out, err = agent.communicate(timeout=timeout)
    assert "Traceback" not in out + err, out + err  # no stop, Ctrl-C or lost server reads like a crash
    return agent.returncode, out, err


def status(sweep: str, store: Path) -> dict:
    result = CliRunner().invoke(main, ["status", sweep, "--json", "--dir", str(store)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def made_elsewhere(server: WandbServer, parameters: dict, **config) -> str:
    """A sweep made with `wandb sweep` or in the W&B UI: its path ENTITY/PROJECT/ID."""
    sweep = server.add_sweep({"method": "grid", "parameters": parameters, **config}, "proj")
    return f"{sweep.entity}/{sweep.project}/{sweep.id}"


def first_run(server: WandbServer) -> Run:
    wait_for(lambda: len(server.runs) == 1)
    return next(iter(server.runs.values()))


def epochs(history: list[dict]) -> list[int]:
    return [row["epoch"] for row in history]


def test_a_grid_with_hyperband_runs_to_exhaustion(tmp_path: Path, server: WandbServer, agents):
    # A good learning rate sets hyperband's bar at epoch 1 (eta 3: the best third go on); the second barely
    # learns. The server judges a run when its history grows, so its epoch 1 may come before the bar: it waits at
    # epoch 1 until both are on the server, then goes on to epoch 2 at most and waits there until the stop ends it.
    hold = tmp_path / "hold"
    hold.touch()
    recipes = [{"lr": 0.9, "epochs": 2}, {"lr": 0.001, "epochs": 30, "hold": str(hold)}]
    hyperband = {"type": "hyperband", "min_iter": 1, "eta": 3}
    config = {"method": "grid", "program": str(STUB), "metric": METRIC, "early_terminate": hyperband}
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump({**config, "parameters": {"recipe": {"values": recipes}}}))
    a = tmp_path / "a"
    p = cli("create-sweep", str(f), "--project", "proj", "--dir", str(a), cwd=tmp_path, server=server)
    (sweep_id,) = server.sweeps
    path = p.stdout.strip().splitlines()[-1]
    assert "backend: wandb" in p.stdout and f"created W&B sweep {path}" in p.stdout
    assert path == f"{ENTITY}/proj/{sweep_id}"  # the entity the server put it in, though none was given
    agent = agents(path, a, "--cpu-procs", "2")  # the README's form
    wait_for(lambda: len(server.sweep_runs(sweep_id)) == 2)
    good, hopeless = server.sweep_runs(sweep_id)
    wait_for(lambda: good.state == "finished" and hopeless.history)
    hold.write_text("2")
    code, out, err = finish(agent)
    assert code == 0, out + err

    assert good.config["recipe"] == recipes[0]  # each run carries its trial's parameters
    assert good.state == "finished" and good.exitcode == 0
    assert epochs(good.history) == [row["_step"] for row in good.history] == [1, 2]
    assert good.summary["best_acc"] == max(row["val_acc"] for row in good.history) > 0
    assert good.summary["world_size"] == 2  # torchrun ran two gloo workers
    assert {"config.yaml", "wandb-summary.json", "output.log"} <= set(good.files)  # uploaded where it said
    defined = good.wandb_config["m"]  # define_metric: "*" (a glob, key 2) plotted against metric number "5"
    assert defined[next(m for m in defined if m.get("2") == "*")["5"] - 1]["1"] == "epoch"

    assert hopeless.stop_at in (1, 2) and hopeless.state == "killed"  # decided once the bar and its epoch were in
    trial = Store(a).trial(hopeless.id)
    assert trial.state == "stopped" and hopeless.stop_at <= trial.epochs <= 2
    assert epochs(hopeless.history) == list(range(1, trial.epochs + 1))
    assert not live_in_group(trial.pgid)
    assert f"trial {trial.id} stopped early by the W&B sweep controller after epoch" in out

    by_id = status(sweep_id, a)
    assert by_id == status(path, a) and by_id["sweep"]["state"] == "finished"  # the server said `exit`
    assert sorted(t["state"] for t in by_id["trials"]) == ["finished", "stopped"]
    # the agent's W&B run folders are in the sweep's folder of its store, none where it was started
    assert len(list((a / sweep_id / "wandb").glob("run-*"))) == 2 and not (tmp_path / "wandb").exists()


def test_ctrl_c_marks_the_run_preempting_and_the_next_agent_resumes_it(
    cifar_root: Path, tmp_path: Path, server: WandbServer, agents
):
    # The real trainer (it resumes model and optimizer), which the test cannot hold at an epoch: 30 epochs of a
    # fraction of a second each, so that the signal sent after its first lands long before its last.
    path = made_elsewhere(server, {**fast_params(cifar_root, epochs=30), "lr": {"value": 0.05}})
    first = agents(path, tmp_path / "a")
    run = first_run(server)
    store = Store(tmp_path / "a")
    wait_for(lambda: store.history(run.id))  # a checkpoint to resume from
    first.send_signal(signal.SIGINT)
    code, out, err = finish(first, timeout=60)
    assert code == 130, out + err
    assert run.preempting and run.exitcode == 130 and run.state == "preempted"  # W&B re-queues such a run
    trial = store.trial(run.id)
    assert trial.state == "preempted" and 1 <= trial.epochs < 30 and not live_in_group(trial.pgid)

    code, out, err = finish(agents(run.sweep, tmp_path / "a", "--count", "1"))  # by its id, this time
    assert code == 0, out + err
    assert status(run.sweep, tmp_path / "a") == status(path, tmp_path / "a")  # a sweep made elsewhere: both forms
    assert run.handed_out == ["run", "resume"] and run.state == "finished"
    assert epochs(run.history) == list(range(1, 31))  # each epoch once: the resumed run went on where it stopped
    trial = store.trial(run.id)
    assert trial.state == "finished" and trial.epochs == 30 and f"trial {run.id} resumed" in out
    assert "resumed from" in (tmp_path / "a" / trial.sweep_id / trial.id / "stdout.log").read_text()


def test_faults_are_ridden_through_and_a_server_gone_for_good_ends_the_agent(
    tmp_path: Path, server: WandbServer, agents
):
    path = stub_wandb_sweep(tmp_path, server, stub_sweep("grid", epochs=300, epoch_s=0.2, lr={"value": 0.05}))
    agent = agents(path, tmp_path / "a")
    run = first_run(server)
    wait_for(lambda: len(run.history) >= 1)
    faults = {(target, kind) for target in ("Heartbeat", "file_stream") for kind in ("500", "stall")}
    for target, kind in sorted(faults):  # per target: 500s for 2 s from its next request, then a 2 s stall
        server.fault(target, kind, 2)
    wait_for(lambda: set(server.failed) == faults and not server.faults_pending())
    store = Store(tmp_path / "a")
    after_faults = len(run.history)

    def caught_up() -> bool:  # new epochs arrive, and every epoch the agent recorded reached the server
        recorded = epochs(store.history(run.id))
        return len(recorded) > after_faults + 1 and epochs(run.history) == recorded

    wait_for(caught_up)
    # The agent rode the faults through: alive, its trial running, epochs still coming, before the server goes away.
    assert agent.poll() is None and store.trial(run.id).state == "running" and run.state == "running"

    helpers = psutil.Process(agent.pid).children(recursive=True)  # wandb-core, its monitor, the trial's torchrun
    server.stop()
    code, out, err = finish(agent, timeout=120)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith(f"hpsearch agent: error: lost the W&B server at {server.url}: ")
    assert err.count("hpsearch agent: error:") == 1
    trial = store.trial(run.id)
    assert trial.state == "crashed" and not live_in_group(trial.pgid)
    wait_for(lambda: not [p for p in helpers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 30)


def test_an_unknown_sweep_is_one_line(tmp_path: Path, server: WandbServer):
    cmd = [*CLI, "agent", f"{ENTITY}/proj/nosuch", "--dir", str(tmp_path / "a")]
    p = subprocess.run(cmd, cwd=tmp_path, env=online(server), capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stdout == "" and "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    said = rf"hpsearch agent: error: the W&B server at {server.url}: Could not find sweep .*nosuch.*"  # wandb's words
    assert re.fullmatch(said, last), last


def test_sync_uploads_a_local_sweeps_runs_grouped_by_sweep(cifar_root: Path, tmp_path: Path, server: WandbServer):
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump({"method": "grid", "parameters": {**fast_params(cifar_root), "lr": {"value": 0.05}}}))
    store = str(tmp_path / "local")
    local = CliRunner(env={"CUDA_VISIBLE_DEVICES": ""})  # a local sweep needs no W&B: run it in this process
    sweep_id = local.invoke(main, ["create-sweep", str(f), "--backend", "local", "--dir", store]).output.split()[-1]
    result = local.invoke(main, ["agent", sweep_id, "--dir", store])
    assert result.exit_code == 0, result.output
    cli("sync", sweep_id, "--dir", store, cwd=tmp_path, server=server)
    (trial,) = Store(store).trials(sweep_id)
    (run,) = server.runs.values()
    assert run.id == trial.id and run.group == sweep_id and run.state == "finished"
    assert epochs(run.history) == [1, 2] and run.summary["best_acc"] == trial.summary["best_acc"]


def test_a_wandb_sweep_the_server_finished_has_no_active_preempted_trial(tmp_path: Path):
    # Under W&B the server hands a preempted trial to whichever agent asks next, maybe on another machine: once
    # it said `exit`, this store's preempted trial was resumed elsewhere. A local sweep resumes it itself.
    store = Store(tmp_path)
    for backend, expected in (("wandb", "finished"), ("local", "running")):
        sweep = store.add_sweep({"method": "grid"}, backend)
        trial = store.add_trial(sweep.id, {"lr": 0.1}, "agent")
        store.end(trial.id, State.PREEMPTED, "agent")
        store.mark_exhausted(sweep.id)
        assert sweep_status(store, store.sweep(sweep.id))["sweep"]["state"] == expected


def stub_wandb_sweep(tmp_path: Path, server: WandbServer, config: dict) -> str:
    """A W&B sweep of the stub trainer registered with `hpsearch create-sweep`; its path."""
    f = tmp_path / "stub.yaml"
    f.write_text(yaml.safe_dump(config))
    p = cli("create-sweep", str(f), "--project", "proj", "--dir", str(tmp_path / "a"), cwd=tmp_path, server=server)
    return p.stdout.strip().splitlines()[-1]


def test_each_gpu_slot_is_its_own_w_and_b_agent_with_its_own_run(tmp_path: Path, server: WandbServer, agents):
    hold = tmp_path / "hold"  # each slot's first run waits after its first epoch until the other slot runs one
    hold.touch()
    config = stub_sweep("grid", epochs=3, lr={"values": [0.1, 0.2, 0.3, 0.4]}, hold={"value": str(hold)})
    path = stub_wandb_sweep(tmp_path, server, config)
    agent = agents(path, tmp_path / "a", "--gpu-ids", "0,1", "--gpus-per-trial", "1")
    wait_for(lambda: len({r.agent for r in server.runs.values() if r.state == "running"}) == 2)
    hold.unlink()
    code, out, err = finish(agent)
    assert code == 0, out + err
    runs = server.sweep_runs(path.split("/")[-1])
    assert len(runs) == 4 and len(server.agents) == 2  # two agents as the server sees them, one per slot
    for run in runs:
        assert run.state == "finished" and epochs(run.history) == [1, 2, 3], run
        assert run.summary["best_acc"] == max(r["val_acc"] for r in run.history)
        assert len([line for line in out.splitlines() if line.startswith(f"[{run.id} GPU ")]) == 3
    by_slot = {agent: sorted((r.began, r.ended) for r in runs if r.agent == agent) for agent in server.agents}
    (a1, a2), (b1, b2) = by_slot.values()
    assert a1[0] < b1[1] and b1[0] < a1[1]  # each slot's first run overlapped the other's: two at a time
    gpus = {r.id: Store(tmp_path / "a").trial(r.id).summary["cuda_visible_devices"] for r in runs}
    assert sorted(gpus.values()) == ["0", "0", "1", "1"]


def test_a_stop_for_one_of_two_runs_ends_that_trial_only(tmp_path: Path, server: WandbServer, agents):
    # The good run sets the bar at epoch 2 and waits there until the test has seen the stop. The server judges a
    # run when its history grows, so the weak one waits at epoch 1 until the bar is on the server, then goes on to
    # epoch 2, under the bar, and waits there until the stop ends it.
    good_hold, weak_hold = tmp_path / "good", tmp_path / "weak"
    good_hold.write_text("2")
    weak_hold.touch()
    recipes = [{"lr": 0.9, "hold": str(good_hold)}, {"lr": 0.01, "hold": str(weak_hold)}]
    config = {
        **stub_sweep("grid", epochs=10, recipe={"values": recipes}),
        "metric": METRIC,
        "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3},
    }
    path = stub_wandb_sweep(tmp_path, server, config)
    agent = agents(path, tmp_path / "a", "--gpu-ids", "0,1", "--gpus-per-trial", "1")
    wait_for(lambda: len(server.runs) == 2)
    good, weak = sorted(server.runs.values(), key=lambda r: -r.params["recipe"]["value"]["lr"])
    wait_for(lambda: len(good.history) >= 2)
    weak_hold.write_text("2")
    wait_for(lambda: weak.state == "killed")
    store = Store(tmp_path / "a")
    assert good.state == "running" and store.trial(good.id).state == "running"  # the stop was for the weak run only
    good_hold.unlink()
    code, out, err = finish(agent)
    assert code == 0, out + err
    assert weak.stop_at == 2 and store.trial(weak.id).state == "stopped" and store.trial(weak.id).epochs == 2
    assert not live_in_group(store.trial(weak.id).pgid)
    assert good.state == "finished" and epochs(good.history) == list(range(1, 11))  # ran on to its end
    assert f"trial {weak.id} stopped early by the W&B sweep controller after epoch 2" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_preempts_both_runs_and_the_next_agent_resumes_each(
    tmp_path: Path, server: WandbServer, agents, sig: int
):
    hold = tmp_path / "hold"  # both runs wait after epoch 1 until the signal has preempted them
    hold.touch()
    config = stub_sweep("grid", epochs=8, lr={"values": [0.1, 0.2]}, hold={"value": str(hold)})
    path = stub_wandb_sweep(tmp_path, server, config)
    first = agents(path, tmp_path / "a", "--gpu-ids", "0,1", "--gpus-per-trial", "1")
    store = Store(tmp_path / "a")
    wait_for(lambda: len(server.runs) == 2 and all(store.history(r) for r in server.runs))  # checkpoints to resume
    first.send_signal(sig)
    code, out, err = finish(first, timeout=60)
    assert code == 128 + sig, out + err
    for run in server.runs.values():
        assert run.preempting and run.state == "preempted" and run.exitcode == 128 + sig
        trial = store.trial(run.id)
        assert trial.state == "preempted" and trial.epochs == 1 and not live_in_group(trial.pgid)
    hold.unlink()

    code, out, err = finish(agents(path, tmp_path / "a", "--gpu-ids", "0,1", "--gpus-per-trial", "1"))
    assert code == 0, out + err
    for run in server.runs.values():
        assert run.handed_out == ["run", "resume"] and run.state == "finished"
        assert epochs(run.history) == list(range(1, 9))  # each epoch once: it went on where it stopped
        assert store.trial(run.id).epochs == 8 and f"trial {run.id} resumed" in out


def test_a_hung_w_and_b_trial_is_ended_by_the_watchdog_and_fails_on_the_server(
    tmp_path: Path, server: WandbServer, agents
):
    hold = tmp_path / "hold"  # the first run waits after its first epoch: the test stops it there
    hold.touch()
    config = stub_sweep("grid", epochs=3, recipe={"values": [{"lr": 0.1, "hold": str(hold)}, {"lr": 0.2}]})
    path = stub_wandb_sweep(tmp_path, server, config)
    agent = agents(path, tmp_path / "a", "--hang-timeout", "3", "--grace", "1")
    run = first_run(server)
    store = Store(tmp_path / "a")
    wait_for(lambda: store.history(run.id))
    os.kill(store.trial(run.id).pgid, signal.SIGSTOP)
    code, out, err = finish(agent)
    assert code == 0, out + err
    trial = store.trial(run.id)
    quiet = re.fullmatch(rf"no progress for (\d+) s after epoch {trial.epochs}", trial.error or "")
    assert trial.state == "failed" and quiet and int(quiet[1]) >= 3, trial.error
    assert run.state == "failed" and run.exitcode != 0 and not live_in_group(trial.pgid)
    (other,) = [r for r in server.runs.values() if r is not run]  # the slot took the next run
    assert other.state == "finished" and epochs(other.history) == [1, 2, 3]


def test_an_option_of_the_local_controller_is_refused_on_a_w_and_b_sweep(tmp_path: Path, server: WandbServer):
    path = made_elsewhere(server, {"lr": {"value": 0.1}})
    p = subprocess.run([*CLI, "agent", path, "--dir", str(tmp_path / "a"), "--max-resumes", "3"], cwd=tmp_path,
                       env=online(server), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "Error: --max-resumes: applies to local sweeps; on a W&B sweep the server decides what runs again"
    )
    assert not server.runs


# ---- scheduler-enabled sweeps: `wandb sweep-scheduler` decides, `hpsearch agent` runs ----

PRUNING_STUDY = """
import optuna

def study(sweep):
    # hopeless: a = 100 x under 30, whatever the epoch; the first run is one (x = 0.1), so a stop is certain
    pruner = optuna.pruners.ThresholdPruner(lower=30.0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1), pruner=pruner)
    study.enqueue_trial({"x": 0.1})
    return study
"""


def scheduled(tmp_path: Path) -> dict:
    """A scheduler-enabled sweep of the toy program (W&B's newest sweep files), its study in tmp_path/study.py; its
    runs hold as tmp_path/hold says (toy_program.py's --hold)."""
    (tmp_path / "study.py").write_text(PRUNING_STUDY)
    return {
        "method": "custom",
        "metric": {"name": "a", "goal": "maximize"},
        "run_cap": 2,
        "program": str(Path(__file__).parent / "toy_program.py"),
        "scheduler": {"engine": "optuna", "source": "study.py", "optimizer": "study"},
        "parameters": {
            "x": {"min": 0.0, "max": 1.0},
            "epochs": {"value": 5},
            "epoch_s": {"value": 0.2},
            "hold": {"value": str(tmp_path / "hold")},
        },
    }


def test_create_sweep_registers_a_scheduler_file_and_says_where_its_search_runs(tmp_path: Path, server: WandbServer):
    config = scheduled(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    # (asked for: with a login alone, a `method: custom` sweep runs on the local controller, its runs live on W&B)
    p = cli("create-sweep", "s.yaml", "--backend", "wandb", "--project", "proj", "--dir", str(tmp_path / "a"),
            cwd=tmp_path, server=server)  # fmt: skip
    path = p.stdout.strip().splitlines()[-1]
    (sweep,) = server.sweeps.values()
    got = {k: v for k, v in sweep.config.items() if k != "parameters"}
    assert got == {k: v for k, v in config.items() if k != "parameters"}  # W&B's schema, as the file has it
    assert sweep.config["parameters"]["x"]["min"] == 0.0 and sweep.config["parameters"]["epochs"] == {"value": 5}
    assert f"the search runs in: wandb sweep-scheduler {path}" in p.stdout  # one scheduler per sweep, W&B's rule


def test_wandb_sweep_scheduler_decides_and_the_agent_runs_its_queued_runs(tmp_path: Path, server: WandbServer, agents):
    """A sweep made with `wandb sweep`: a real `wandb sweep-scheduler` (its Optuna study in wandb-core's loop) queues
    the runs and prunes; two slots of `hpsearch agent` run each queued run once with the sweep's own program (its
    config read from the server) and end the runs the pruner stops."""
    hold = tmp_path / "hold"  # every run waits after its first epoch until both slots run one at once
    hold.touch()
    config = scheduled(tmp_path)
    path = made_elsewhere(server, config.pop("parameters"), **config)
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "wandb", "sweep-scheduler", path, "--batch-size", "2", "--poll-interval", "0.5"],
        cwd=tmp_path, env=online(server), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        agent = agents(path, tmp_path / "a", "--gpu-ids", "0,1", "--gpus-per-trial", "1")
        wait_for(lambda: len({r.agent for r in server.runs.values() if r.state == "running"}) == 2)  # two at a time
        hold.write_text("30")  # from now on only a hopeless run (a under 30) waits, until the pruner's stop ends it
        said = scheduler.communicate(timeout=300)[0]
    finally:
        scheduler.kill()
    hold.unlink()  # the scheduler is gone: a run it left in flight runs to its end
    code, out, err = finish(agent)
    assert code == 0, out + err
    assert scheduler.returncode == 0 and "the run cap was hit" in said, said
    ran = [r for r in server.sweep_runs(path.split("/")[-1]) if r.handed_out]
    assert len(ran) >= 3 and all(r.handed_out == ["run"] for r in ran)  # each queued run an agent took, once
    pruned = set(re.findall(r"Requesting early stop of run (\w+)", said))
    store = Store(tmp_path / "a")
    for run in ran:
        x = run.params["x"]["value"]
        trial = store.trial(run.id)
        assert trial.params == {k: v["value"] for k, v in run.params.items()}  # the program got the run's config
        if run.id in pruned:  # a hopeless run: its process group ended, recorded stopped; the server: killed
            assert 100 * x < 30 and (trial.state, run.state) == ("stopped", "killed") and trial.epochs < 5, (run, trial)
            assert not live_in_group(trial.pgid)
        else:  # the whole history, one step an epoch
            assert (trial.state, run.state) == ("finished", "finished") and epochs(run.history) == list(range(1, 6))
            assert [row["_step"] for row in run.history] == list(range(1, 6))
    assert ran[0].params["x"]["value"] == 0.1 and ran[0].id in pruned  # the hopeless first one, surely
