"""The sweep database as a lease: agents ride through a restart, end their trials before their lease lapses when
it stays down, and a copy whose lease lapsed never writes again; then all of it at once, at random (chaos). Real
agents, real PostgreSQL servers (each test its own, to restart at will) and SQLite; the stub trainer's trials."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
import yaml
from conftest import env, hpsearch, live_in_group, stub_sweep, wait_for
from postgres import PostgresServer

from hpsearch.sweep.controller import controller_for
from hpsearch.sweep.store import Store


@pytest.fixture
def pg():
    """A PostgreSQL server of the test's own, which it may take down and bring back."""
    server = PostgresServer().start()
    yield server
    server.stop()


def create(tmp_path: Path, config: dict, db: str | None = None) -> str:
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(config))
    p = hpsearch("create-sweep", str(f), "--dir", str(tmp_path / "m0"), cwd=tmp_path, env=env(**db_env(db)))
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


def db_env(db: str | None) -> dict[str, str]:
    return {"HPSEARCH_DB": db} if db else {}


def start_agent(tmp_path: Path, sweep_id: str, db: str | None, machine: str = "m0", *args: str, **extra: str):
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / machine), *args]
    e = env(**db_env(db), **extra)
    return subprocess.Popen(cmd, cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def epochs_done(store: Store, sweep_id: str) -> int:
    try:
        return sum(t.epochs for t in store.trials(sweep_id))
    except Exception:  # the database is down
        return -1


def exactly_once(store: Store, sweep_id: str, lrs: list[float], epochs: int) -> None:
    trials = store.trials(sweep_id)
    assert sorted(t.params["lr"] for t in trials) == sorted(lrs)  # every grid point, none twice
    for t in trials:
        assert t.state == "finished" and t.epochs == epochs, t
        assert [r["epoch"] for r in store.history(t.id)] == list(range(1, epochs + 1))


def test_a_database_restart_of_12_s_is_ridden_through_and_nothing_runs_twice(tmp_path: Path, pg: PostgresServer):
    db = pg.create_database("restart")
    lrs = [0.1, 0.2, 0.3, 0.4]
    sweep_id = create(tmp_path, stub_sweep("grid", epochs=8, epoch_s=0.5, lr={"values": lrs}), db)
    store = Store(tmp_path / "m0", db)
    agents = [start_agent(tmp_path, sweep_id, db, f"m{i}", "--grace", "2") for i in (1, 2)]  # default lease
    wait_for(lambda: epochs_done(store, sweep_id) >= 2)
    pg.down()
    time.sleep(12)
    pg.up()
    outs = [a.communicate(timeout=120) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outs
    for out, err in outs:
        assert "Traceback" not in out + err and err.strip() == "", err
        assert "sweep " + sweep_id in out  # the table at the end
    said = "\n".join(out for out, _ in outs)
    assert "agent: the sweep database is unreachable (--db postgresql://hpsearch:***@127.0.0.1:" in said, said
    back = [int(s) for s in re.findall(r"agent: the sweep database answers again, after (\d+) s", said)]
    assert back and all(s >= 10 for s in back), said  # away at least as long as the restart took
    exactly_once(store, sweep_id, lrs, 8)


def test_a_database_down_past_the_lease_ends_the_trials_and_another_agent_resumes_them(
    tmp_path: Path, pg: PostgresServer
):
    db = pg.create_database("past_lease")
    hold = tmp_path / "hold"  # the trial waits after its second epoch until its agent has ended it
    hold.write_text("2")
    config = stub_sweep("grid", epochs=6, lr={"value": 0.3}, hold={"value": str(hold)})
    sweep_id = create(tmp_path, config, db)
    store = Store(tmp_path / "m0", db)
    lease = {"HPSEARCH_STALE_AFTER": "6"}  # lease: 6 s less --grace 1, 0.75 s of retries, 1 s of rounds
    first = start_agent(tmp_path, sweep_id, db, "m0", "--grace", "1", **lease)
    wait_for(lambda: epochs_done(store, sweep_id) >= 2)
    (trial,) = store.trials(sweep_id)
    beat = store.trial(trial.id).heartbeat - store.clock() + time.time()  # its last renewal, on this clock
    pg.down()
    out, err = first.communicate(timeout=60)
    assert first.returncode == 1, out + err
    assert not live_in_group(trial.pgid)  # its agent ended it before leaving: no other agent finds it running
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out + err, err
    assert re.fullmatch(
        r"hpsearch agent: error: the sweep database did not answer for \d+ s \(--db postgresql://hpsearch:\*\*\*@"
        rf"127\.0\.0\.1:{pg.port}/past_lease: cannot write: .*\); this agent's lease on its trials lapsed; ended "
        rf"trial {trial.id}",
        lines[0],
    ), lines[0]
    time.sleep(max(0.0, beat + 6 - time.time()))
    pg.up()
    hold.unlink()

    second = start_agent(tmp_path, sweep_id, db, "m0", "--grace", "1", **lease)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, out + err
    assert f"trial {trial.id} resumed on CPU" in out
    exactly_once(store, sweep_id, [0.3], 6)
    done = store.trial(trial.id)
    assert done.resumes == 1 and done.crashes == 1
    writers = audit_writers(store, trial.id)
    assert [w for w, _ in writers] == sorted(w for w, _ in writers)  # the first agent's epochs, then the second's
    log = (tmp_path / "m0" / sweep_id / trial.id / "stdout.log").read_text()
    assert re.search(r"resumed from \S+ after epoch 2", log), log


def audit_writers(store: Store, trial_id: str) -> list[tuple[str, int]]:
    """(agent, epoch) of each epoch on record, in epoch order."""
    with store.engine.connect() as conn:
        sql = sa.text("SELECT agent, epoch FROM history WHERE trial_id = :t ORDER BY epoch")
        return [(r[0], r[1]) for r in conn.execute(sql, {"t": trial_id})]


def sleeping(pid: int) -> bool:
    """Whether the agent is between rounds (in its sleep, holding no transaction): the moment to freeze it."""
    try:  # (the kernel function it waits in, by name: syscall numbers differ from one architecture to the next)
        return Path(f"/proc/{pid}/wchan").read_text() in ("hrtimer_nanosleep", "do_nanosleep", "poll_schedule_timeout")
    except OSError:
        return False


def freeze(pid: int) -> None:
    deadline = time.time() + 10
    while not sleeping(pid) and time.time() < deadline:
        time.sleep(0.002)
    os.kill(pid, signal.SIGSTOP)


AUDIT = {
    "sqlite": [
        "CREATE TABLE audit (kind TEXT, trial_id TEXT, epoch INTEGER, agent TEXT, at DOUBLE PRECISION)",
        "CREATE TRIGGER audit_epoch_i AFTER INSERT ON history BEGIN "
        "INSERT INTO audit VALUES ('epoch', NEW.trial_id, NEW.epoch, NEW.agent, NEW.written); END",
        "CREATE TRIGGER audit_epoch_u AFTER UPDATE ON history BEGIN "
        "INSERT INTO audit VALUES ('epoch', NEW.trial_id, NEW.epoch, NEW.agent, NEW.written); END",
        "CREATE TRIGGER audit_new AFTER INSERT ON trials BEGIN "
        "INSERT INTO audit VALUES ('owner', NEW.id, NULL, NEW.agent, NEW.heartbeat); END",
        "CREATE TRIGGER audit_state AFTER UPDATE OF state ON trials WHEN NEW.state != OLD.state BEGIN "
        "INSERT INTO audit VALUES (CASE NEW.state WHEN 'running' THEN 'owner' ELSE NEW.state END, NEW.id, NULL, "
        "NEW.agent, (julianday('now') - 2440587.5) * 86400.0); END",
    ],
    "postgresql": [
        "CREATE TABLE audit (kind TEXT, trial_id TEXT, epoch INTEGER, agent TEXT, at DOUBLE PRECISION)",
        """CREATE FUNCTION audit_epoch() RETURNS trigger AS $$ BEGIN
            INSERT INTO audit VALUES ('epoch', NEW.trial_id, NEW.epoch, NEW.agent, NEW.written); RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER audit_epoch AFTER INSERT OR UPDATE ON history FOR EACH ROW EXECUTE FUNCTION audit_epoch()",
        """CREATE FUNCTION audit_state() RETURNS trigger AS $$ BEGIN
            IF TG_OP = 'INSERT' OR NEW.state <> OLD.state THEN
                INSERT INTO audit VALUES (CASE WHEN NEW.state = 'running' THEN 'owner' ELSE NEW.state END, NEW.id,
                    NULL, NEW.agent, EXTRACT(EPOCH FROM clock_timestamp()));
            END IF; RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER audit_state AFTER INSERT OR UPDATE ON trials FOR EACH ROW EXECUTE FUNCTION audit_state()",
    ],
}


def install_audit(store: Store) -> None:
    """Triggers that log every epoch written and every change of a trial's owner or state, with the database's
    time: the test's record of who wrote what when (records that a later copy replaced included)."""
    with store.engine.begin() as conn:
        for stmt in AUDIT[store.engine.dialect.name]:
            conn.execute(sa.text(stmt))


def audit_log(store: Store) -> list[tuple[str, str, int | None, str, float]]:
    with store.engine.connect() as conn:
        sql = sa.text("SELECT kind, trial_id, epoch, agent, at FROM audit ORDER BY at")
        return [tuple(r) for r in conn.execute(sql)]


def check_fenced(log: list[tuple[str, str, int | None, str, float]]) -> None:
    """Every write about a trial (an epoch, an end) came from its owner at that moment: the latest claim of the
    trial before the write was by the writer, and no crash was recorded in between (its lease had not lapsed)."""
    last: dict[str, tuple[str, str]] = {}  # trial -> (kind, agent) of its latest claim or state change
    for kind, trial_id, epoch, agent, at in log:
        if kind == "owner":
            last[trial_id] = ("owner", agent)
            continue
        if kind == "crashed":  # marked by another agent: the owner's lease lapsed
            last[trial_id] = ("crashed", "")
            continue
        assert last.get(trial_id) == ("owner", agent), (kind, trial_id, epoch, agent, at, last.get(trial_id))
        if kind != "epoch":  # an end: nothing more may come from this copy
            last[trial_id] = (kind, "")


def agent_id(proc: subprocess.Popen) -> str:
    return f"{socket.gethostname()}-{proc.pid}-"


def thaw_and_end(proc: subprocess.Popen) -> None:
    """A frozen agent left by a failed test must not outlive it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.communicate()


def test_a_frozen_agent_wakes_to_find_its_trial_taken_over_and_ends_its_copy_without_a_record(tmp_path: Path, request):
    hold = tmp_path / "hold"  # each copy of the trial waits after its third epoch until the takeover is seen
    hold.write_text("3")
    config = stub_sweep("grid", epochs=6, lr={"value": 0.3}, hold={"value": str(hold)})
    sweep_id = create(tmp_path, config)
    store = Store(tmp_path / "m0")
    install_audit(store)
    lease = {"HPSEARCH_STALE_AFTER": "4"}
    frozen = start_agent(tmp_path, sweep_id, None, "m0", "--grace", "1", **lease)
    request.addfinalizer(lambda: thaw_and_end(frozen))
    wait_for(lambda: epochs_done(store, sweep_id) >= 3)
    (trial,) = store.trials(sweep_id)
    freeze(frozen.pid)
    # past its lease, on the database's clock: its trial runs on, its heartbeats have stopped
    wait_for(lambda: store.clock() - store.trial(trial.id).heartbeat > 4)
    other = start_agent(tmp_path, sweep_id, None, "m0", "--grace", "1", **lease)
    wait_for(lambda: store.trial(trial.id).pgid != trial.pgid)  # taken over, and its new copy started
    assert not live_in_group(trial.pgid)  # the frozen agent's copy was ended before the trial was resumed
    hold.unlink()
    os.kill(frozen.pid, signal.SIGCONT)
    out, err = frozen.communicate(timeout=60)
    assert frozen.returncode == 0 and "Traceback" not in out + err, out + err
    line = (
        f"trial {trial.id}: another agent took it over while this one could not renew its lease; ended this copy "
        "without recording anything"
    )
    assert out.count(line) == 1, out
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, out + err
    assert f"trial {trial.id}: ended the copy its previous agent left running" in out
    exactly_once(store, sweep_id, [0.3], 6)
    check_fenced(audit_log(store))
    assert store.trial(trial.id).agent.startswith(agent_id(other))


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_chaos_kills_freezes_and_restarts_lose_nothing_and_run_nothing_twice(tmp_path: Path, dialect: str, request):
    rng = random.Random(7)
    pg = request.getfixturevalue("pg") if dialect == "postgresql" else None
    db = pg.create_database("chaos") if pg else None
    lrs = [round(0.05 * i, 2) for i in range(1, 9)]
    sweep_id = create(tmp_path, stub_sweep("grid", epochs=6, epoch_s=0.3, lr={"values": lrs}), db)
    store = Store(tmp_path / "m0", db)
    install_audit(store)
    options = ("--grace", "1", "--max-resumes", "20")
    lease = {"HPSEARCH_STALE_AFTER": "6"}
    agents = [start_agent(tmp_path, sweep_id, db, "m0", *options, **lease) for _ in range(3)]
    request.addfinalizer(lambda: [thaw_and_end(a) for a in agents])
    events = ["kill", "kill", "freeze", "kill"] + (["restart", "restart"] if pg else [])
    rng.shuffle(events)
    frozen: subprocess.Popen | None = None
    woke = thaw_at = None
    deadline = time.time() + 240
    while True:
        live = [a for a in agents if a.poll() is None]
        if all(t.state == "finished" for t in store.trials(sweep_id)) and len(store.trials(sweep_id)) == len(lrs):
            break
        assert time.time() < deadline, f"the sweep did not finish in 240 s of chaos; events left: {events}"
        if len(live) < 2:  # replacements, as a cluster's scheduler would start them
            agents.append(start_agent(tmp_path, sweep_id, db, "m0", *options, **lease))
        if events and epochs_done(store, sweep_id) > 4 * (7 - len(events)):
            event = events.pop()
            victim = rng.choice([a for a in agents if a.poll() is None and a is not frozen] or [None])
            if event == "kill" and victim:
                victim.kill()
            elif event == "freeze" and victim:
                frozen = victim
                request.addfinalizer(lambda proc=victim: thaw_and_end(proc))
                freeze(frozen.pid)
                thaw_at = time.time() + 9  # past the 6 s lease
            elif event == "restart":
                pg.down()
                time.sleep(1.5)
                pg.up()
        if frozen and thaw_at and time.time() > thaw_at:
            woke = store.clock()
            os.kill(frozen.pid, signal.SIGCONT)
            thaw_at = None
        time.sleep(0.2)
    outs = [a.communicate(timeout=60) for a in agents]
    assert not events, (events, outs)  # every kill, freeze and restart happened
    assert not any("Traceback" in out + err for out, err in outs), outs
    exactly_once(store, sweep_id, lrs, 6)
    log = audit_log(store)
    check_fenced(log)  # no write came from a copy whose lease had lapsed (the frozen one's included)
    assert frozen and woke and any(kind == "crashed" for kind, *_ in log)  # the faults did happen
    stray = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not stray, [p.info["cmdline"] for p in stray]
    assert json.loads(hpsearch("status", sweep_id, "--json", "--dir", str(tmp_path / "m0"), cwd=tmp_path,
                               env=env(**db_env(db))).stdout)["sweep"]["state"] == "finished"  # fmt: skip


def test_a_database_error_that_will_not_pass_is_one_line_and_ends_the_trials(tmp_path: Path):
    sweep_id = create(tmp_path, stub_sweep("grid", epochs=100, epoch_s=0.2, lr={"value": 0.1}))
    store = Store(tmp_path / "m0")
    agent = start_agent(tmp_path, sweep_id, None, "m0", "--grace", "1")
    wait_for(lambda: epochs_done(store, sweep_id) >= 2)
    (trial,) = store.trials(sweep_id)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE history"))  # what no retry cures
    out, err = agent.communicate(timeout=60)
    assert agent.returncode == 1 and "Traceback" not in out + err, out + err
    (line,) = err.strip().splitlines()
    assert line == (
        f"hpsearch agent: error: {tmp_path / 'm0' / 'hpsearch.db'}: cannot write: no such table: history; "
        f"ended trial {trial.id}"
    )
    assert not live_in_group(trial.pgid)


class Relay:
    """A TCP relay in front of the server that fails as networks do: it can stop passing bytes while keeping every
    connection open (`stalled`: a database that never answers and never fails, which no retry or TCP timeout
    notices), or pass a claim's COMMIT to the server and drop the connection before its answer comes back
    (`lose_claim`: the claim is in the database, and the agent does not know)."""

    def __init__(self, port: int):
        self.upstream, self.stalled = port, threading.Event()
        self.lose_claim, self.lost = threading.Event(), threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            state = {"claim": False, "losing": False}  # this connection's transaction added a trial; its answer goes
            for a, b, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, up, state), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, up: bool, state: dict[str, bool]) -> None:
        try:
            while data := a.recv(65536):
                while self.stalled.is_set():
                    time.sleep(0.05)
                if up:
                    state["claim"] = state["claim"] or b"INSERT INTO trials" in data
                    if state["claim"] and b"COMMIT" in data and self.lose_claim.is_set():
                        self.lose_claim.clear()
                        state["losing"] = True
                elif state["losing"]:  # the server's answer to the claim's COMMIT: the client never gets it
                    self.lost.set()
                    for end in (a, b):
                        end.shutdown(socket.SHUT_RDWR)
                    return
                b.sendall(data)
        except OSError:
            pass


def test_a_database_call_that_never_returns_still_ends_the_trials_before_the_lease_lapses(
    tmp_path: Path, pg: PostgresServer
):
    relay = Relay(pg.port)
    db = pg.create_database("stuck").replace(f":{pg.port}/", f":{relay.port}/")
    sweep_id = create(tmp_path, stub_sweep("grid", epochs=200, epoch_s=0.2, lr={"value": 0.1}), db)
    store = Store(tmp_path / "m0", pg.url("stuck"))
    agent = start_agent(tmp_path, sweep_id, db, "m0", "--grace", "1", HPSEARCH_STALE_AFTER="6")
    wait_for(lambda: epochs_done(store, sweep_id) >= 3)
    (trial,) = store.trials(sweep_id)
    relay.stalled.set()
    out, err = agent.communicate(timeout=60)
    assert agent.returncode == 1 and "Traceback" not in out + err, out + err
    assert not live_in_group(trial.pgid)
    assert store.trial(trial.id).state == "running"  # the fenced agent wrote nothing: the next agent resumes it
    assert re.fullmatch(
        rf"hpsearch agent: error: the sweep database has not answered for \d+ s \(a call to it never returned\); "
        rf"ended trial {trial.id}",
        err.strip().splitlines()[-1],
    ), err


def test_a_claim_whose_answer_was_lost_is_run_by_its_agent_and_nothing_runs_twice(pg: PostgresServer):
    relay = Relay(pg.port)
    db = pg.create_database("lost").replace(f":{pg.port}/", f":{relay.port}/")
    store = Store(Path("unused"), db)
    sweep = store.add_sweep({"method": "grid", "parameters": {"lr": {"values": [0.1, 0.2]}}}, "local")
    controller = controller_for(store, sweep, "m0-1-abcd")
    relay.lose_claim.set()
    first = controller.next_trial(0)
    assert relay.lost.is_set()  # the claim's commit went through; the agent saw its connection drop
    (trial,) = store.trials(sweep.id)  # the claim it made again found its own trial: no second claim
    assert first is not None and (first.trial.id, first.how) == (trial.id, "started")
    second = controller.next_trial(1)
    assert second is not None and second.trial.params != first.trial.params
    assert controller.next_trial(2) is None and controller.done
    assert sorted(t.params["lr"] for t in store.trials(sweep.id)) == [0.1, 0.2]
