"""The sweep store: sweeps, trials and per-epoch history in one database, plus a folder per trial.

Two kinds of database behind one set of queries (SQLAlchemy Core):
- SQLite, the embedded default: `DIR/hpsearch.db`, for agents on ONE machine (WAL mode needs shared
  memory, and SQLite's file locks are unreliable over network filesystems);
- PostgreSQL (`--db postgresql://...`), for agents on many machines.

As optuna's RDB storage does it: every operation is one transaction of its own, and one that meets a transient
error (server restarting, connection lost, serialization failure, "database is locked") is rolled back and
retried whole for up to `DB_RETRY` seconds before the caller hears `StoreUnavailable`. Claims are serialized
per sweep (SQLite's write lock, or a row lock on the sweep) and kept short, so no two agents claim the same
trial, grid point or preempted trial, and run_cap holds exactly.

The lease an agent holds on its trials (its rules and their reasons: docs/many-machines.md, The database as a
lease) rests on two things here: every write about a trial checks, in its own transaction, that the trial still
runs under the writing agent (`NotOwner` otherwise); and a trial's times and the crash cutoff are the database's
clock.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url

from hpsearch.defaults import (
    DB_BACKOFF,
    DB_RETRY,
    PG_CONNECT_TIMEOUT,
    PG_IDLE_TIMEOUT,
    PG_KEEPALIVE,
    PG_LOCK_TIMEOUT,
)
from hpsearch.train import CHECKPOINT

T = TypeVar("T")


class State(StrEnum):
    """A trial's state; the values are what the store holds."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"  # ended early (hyperband, or the W&B controller's stop)
    PREEMPTED = "preempted"  # its agent was interrupted and ended it; the next agent resumes it
    CRASHED = "crashed"  # its agent stopped renewing its lease (killed, machine down)
    PAUSED = "paused"  # held at a rung by a promotion scheduler, its checkpoint kept; a promotion resumes it


ACTIVE = (State.RUNNING, State.PREEMPTED)  # trials that still hold (or will resume) a slot of the sweep
DB_FILE = "hpsearch.db"
URL_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"

# The schema as of SCHEMA_VERSION. DOUBLE PRECISION, not REAL: PostgreSQL's REAL is 4 bytes, too coarse for
# timestamps; SQLite reads both as its 8-byte REAL.
SCHEMA_VERSION = 4
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS sweeps (
        id TEXT PRIMARY KEY, name TEXT, backend TEXT NOT NULL, config TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, exhausted INTEGER NOT NULL DEFAULT 0, remote TEXT, code TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS trials (
        id TEXT PRIMARY KEY, sweep_id TEXT NOT NULL REFERENCES sweeps(id), seq INTEGER NOT NULL,
        params TEXT NOT NULL, state TEXT NOT NULL, agent TEXT, created DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION, ended DOUBLE PRECISION, heartbeat DOUBLE PRECISION, pgid INTEGER,
        exit_code INTEGER, error TEXT, summary TEXT NOT NULL DEFAULT '{}', epochs INTEGER NOT NULL DEFAULT 0,
        runtime DOUBLE PRECISION NOT NULL DEFAULT 0, resumes INTEGER NOT NULL DEFAULT 0,
        crashes INTEGER NOT NULL DEFAULT 0, revision INTEGER NOT NULL DEFAULT 0, host TEXT,
        series TEXT NOT NULL DEFAULT '', attrs TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS history (
        trial_id TEXT NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
        agent TEXT, written DOUBLE PRECISION, PRIMARY KEY (trial_id, epoch)
    )""",
    "CREATE INDEX IF NOT EXISTS trials_by_sweep ON trials (sweep_id, seq)",
]
# Statements that bring a store written by an older hpsearch to version N (a store made before the meta
# table existed is version 1).
MIGRATIONS: dict[int, list[str]] = {
    2: [  # crashed trials resume from their checkpoints, a limited number of times
        "ALTER TABLE trials ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE trials ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
    ],
    3: [  # leases: who wrote each epoch, and when; a history revision for the controller's cache; the host
        "ALTER TABLE trials ADD COLUMN revision INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE trials ADD COLUMN host TEXT",
        "ALTER TABLE history ADD COLUMN agent TEXT",
        "ALTER TABLE history ADD COLUMN written DOUBLE PRECISION",
    ],
    4: [  # decisions read each trial's sweep metric from one column, not every epoch record; an engine's own
        # record of each trial (Optuna's); a scheduler's source code, kept with its sweep
        "ALTER TABLE trials ADD COLUMN series TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE trials ADD COLUMN attrs TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE sweeps ADD COLUMN code TEXT",
    ],
}
# The database's clock, in seconds since the epoch.
NOW = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
}


class StoreError(Exception):
    """The database cannot be used (bad URL, wrong credentials, disk full, ...); one line, no password."""


class StoreUnavailable(StoreError):
    """A transient failure (server restarting, connection lost, locked) outlasted the operation's retries."""


class NotOwner(Exception):
    """The trial is no longer running under this agent: its lease lapsed and another agent took it over."""

    def __init__(self, trial_id: str):
        super().__init__(trial_id)
        self.trial_id = trial_id


@dataclass(frozen=True, eq=False)
class Series:
    """A trial's values of its sweep's metric, at each epoch a record held it (NaN where it was not a number), as
    decisions read them. Kept packed (epochs as int32, values as float64, base64 in one text column): a fresh
    agent's first decision reads every trial's, and JSON would cost it seconds at thousands of trials."""

    epochs: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, pairs: list[tuple[int, Any]]) -> Series:
        numbers = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan for _, v in pairs]
        return cls(np.array([e for e, _ in pairs], dtype="<i4"), np.array(numbers, dtype="<f8"))

    @classmethod
    def unpack(cls, text: str) -> Series:
        raw = base64.b64decode(text)
        n = len(raw) // 12
        return cls(np.frombuffer(raw[: 4 * n], dtype="<i4"), np.frombuffer(raw[4 * n :], dtype="<f8"))

    def pack(self) -> str:
        return base64.b64encode(self.epochs.astype("<i4").tobytes() + self.values.astype("<f8").tobytes()).decode()

    def before(self, epoch: int) -> Series:
        keep = self.epochs < epoch
        return Series(self.epochs[keep], self.values[keep])

    def then(self, pairs: list[tuple[int, Any]]) -> Series:
        more = Series.of(pairs)
        return Series(np.concatenate([self.epochs, more.epochs]), np.concatenate([self.values, more.values]))

    def pairs(self) -> list[tuple[int, float]]:
        return list(zip(self.epochs.tolist(), self.values.tolist(), strict=True))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Series)
            and np.array_equal(self.epochs, other.epochs)
            and np.array_equal(self.values, other.values, equal_nan=True)
        )


@dataclass
class Sweep:
    id: str
    name: str
    backend: str  # local | wandb
    config: dict[str, Any]
    created: float
    exhausted: bool  # the controller has nothing more to suggest (grid done, run_cap reached)
    remote: str | None  # entity/project/sweep on a W&B server
    code: dict[str, str] | None = None  # scheduler.source as create-sweep read it: {path, text, sha256}

    @property
    def metric(self) -> dict[str, str] | None:
        return self.config.get("metric")

    @property
    def series_metric(self) -> str | None:
        """The metric whose per-epoch values each trial keeps in its `series` (a single objective's)."""
        return (self.config.get("metric") or {}).get("name")


@dataclass
class Trial:
    id: str
    sweep_id: str
    seq: int
    params: dict[str, Any]
    state: State
    agent: str | None = None
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    heartbeat: float | None = None  # the database's clock
    pgid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    runtime: float = 0.0  # seconds spent running, summed over resumes
    resumes: int = 0  # times it was taken up again after it was preempted or crashed
    crashes: int = 0  # times its agent died under it
    revision: int = 0  # grows with every change to its history (or to its attrs)
    host: str | None = None  # the machine its process group runs on
    series: Series = field(default_factory=lambda: Series.unpack(""))  # the sweep metric, epoch by epoch
    attrs: dict[str, Any] = field(default_factory=dict)  # the deciding engine's own record of the trial


def new_id(n: int = 8) -> str:
    """W&B-style id: lowercase letters and digits."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def redact(url: str) -> str:
    """`url` with any password replaced by ***, also when it does not parse."""
    return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def store_exists(root: Path, db: str | None) -> bool:
    """Whether there is a store to open: a database server was named, or DIR holds the SQLite file."""
    return db is not None or (Path(root) / DB_FILE).exists()


class Store:
    def __init__(self, root: Path | str, db: str | None = None):
        """The store whose trial folders live in `root`; its database is PostgreSQL at `db`, else SQLite in
        `root`. Raises StoreError (having created nothing) when the database cannot be reached: opening does
        not retry, so a wrong URL is answered at once."""
        self.root = Path(root)
        if db:
            self.where = f"--db {redact(db)}"
            self.engine = _postgres_engine(db)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self.where = str(self.root / DB_FILE)
            self.engine = _sqlite_engine(self.root / DB_FILE)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.now = NOW[self.engine.dialect.name]
        self.retry_for, self.down = 0.0, False
        self._local = threading.local()  # this thread's open transaction, if any
        try:
            self.engine.connect().close()
        except sa.exc.DBAPIError as e:
            raise StoreError(f"{self.where}: cannot connect: {_driver_message(e)}") from None
        self.atomic(self._create_schema)
        self.retry_for = DB_RETRY

    def close(self) -> None:
        """Close the database connections the store holds (else they stay open until garbage collection)."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        if self.postgres:  # CREATE TABLE IF NOT EXISTS races between agents starting together
            self._exec("SELECT pg_advisory_xact_lock(7411)")
        inspector = sa.inspect(self._conn())
        before_meta = inspector.has_table("sweeps") and not inspector.has_table("meta")
        for stmt in SCHEMA[:4]:
            self._exec(stmt)
        row = self._exec("SELECT value FROM meta WHERE key = 'schema_version'").first()
        version = int(row[0]) if row else (1 if before_meta else SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.where}: written by a newer hpsearch (schema {version}); upgrade hpsearch")
        for v in range(version + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[v]:
                self._exec(stmt)
            if v == 4:
                self._fill_series()
        for stmt in SCHEMA[4:]:  # indexes, once their columns exist
            self._exec(stmt)
        if row is None or version != SCHEMA_VERSION:
            self._exec(
                "INSERT INTO meta (key, value) VALUES ('schema_version', :v) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                v=str(SCHEMA_VERSION),
            )

    def _fill_series(self) -> None:
        """Migration 4: each trial's series of its sweep's metric, from its history."""
        for sweep_id, config in self._exec("SELECT id, config FROM sweeps").all():
            metric = (json.loads(config).get("metric") or {}).get("name")
            series: dict[str, list[tuple[int, Any]]] = {}
            rows = self._exec(
                "SELECT h.trial_id, h.epoch, h.metrics FROM history h JOIN trials t ON t.id = h.trial_id "
                "WHERE t.sweep_id = :s ORDER BY h.trial_id, h.epoch",
                s=sweep_id,
            )
            for trial_id, epoch, metrics in rows if metric else ():
                record = json.loads(metrics)
                if metric in record:
                    series.setdefault(trial_id, []).append((epoch, record[metric]))
            for trial_id, pairs in series.items():
                packed = Series.of(pairs).pack()
                self._exec("UPDATE trials SET series = :v WHERE id = :id", v=packed, id=trial_id)

    # ---- transactions ----
    def atomic(self, fn: Callable[[], T], lock: str | None = None, write: bool = True) -> T:
        """Run `fn` (the store's queries) as one transaction; nested calls join the outer one. A transient
        failure rolls all of it back and runs it again, for up to `retry_for` seconds. With `lock` (a sweep id)
        it is also serialized with every other transaction that locks the same sweep: that is how claims stay
        exactly-once. Once an operation has given up, the next ones try once, until one gets through: an agent
        whose database is down hears so at once instead of waiting out the retries of every record it holds."""
        if getattr(self._local, "conn", None) is not None:
            return fn()
        deadline = time.monotonic() + (0.0 if self.down else self.retry_for)
        delay, attempt = DB_BACKOFF[0], 0
        while True:
            attempt += 1
            try:
                with self.engine.execution_options(write=write).begin() as conn:
                    self._local.conn = conn
                    try:
                        if lock is not None and self.postgres:
                            self._exec("SELECT id FROM sweeps WHERE id = :id FOR UPDATE", id=lock)
                        result = fn()  # (SQLite: BEGIN IMMEDIATE already holds the database's one write lock)
                    finally:
                        self._local.conn = None
                self.down = False  # committed
                return result
            except sa.exc.DBAPIError as e:
                what = "cannot write" if write else "cannot read"
                if not _transient(e):
                    raise StoreError(f"{self.where}: {what}: {_driver_message(e)}") from None
                if time.monotonic() + delay > deadline:
                    self.down = True
                    tries = f" (tried {attempt} times in {self.retry_for:.0f} s)" if attempt > 1 else ""
                    raise StoreUnavailable(f"{self.where}: {what}: {_driver_message(e)}{tries}") from None
            time.sleep(delay)
            delay = min(2 * delay, DB_BACKOFF[1])

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            raise RuntimeError("the store's queries run inside atomic()")
        return conn

    def _exec(self, sql: str, **params: Any) -> sa.CursorResult:
        return self._conn().execute(sa.text(sql), params)

    def _read(self, sql: str, **params: Any) -> list[sa.RowMapping]:
        """A read: inside the current transaction if there is one, else a short one of its own."""
        return self.atomic(lambda: list(self._exec(sql, **params).mappings()), write=False)

    def _write(self, sql: str, **params: Any) -> int:
        """One statement as its own transaction (or in the current one); the number of rows it changed."""
        return self.atomic(lambda: self._exec(sql, **params).rowcount)

    def clock(self) -> float:
        """The database's time, the clock of heartbeats."""
        return float(self._read(f"SELECT {self.now} AS now")[0]["now"])

    # ---- sweeps ----
    def add_sweep(
        self,
        config: dict[str, Any],
        backend: str,
        name: str | None = None,
        remote: str | None = None,
        sweep_id: str | None = None,
        code: dict[str, str] | None = None,
    ) -> Sweep:
        sweep = Sweep(
            sweep_id or new_id(), name or config.get("name") or "", backend, config, time.time(), False, remote, code
        )
        self._write(
            "INSERT INTO sweeps (id, name, backend, config, created, remote, code) "
            "VALUES (:id, :name, :backend, :config, :created, :remote, :code)",
            id=sweep.id,
            name=sweep.name,
            backend=backend,
            config=json.dumps(config),
            created=sweep.created,
            remote=remote,
            code=json.dumps(code) if code else None,
        )
        return sweep

    def sweep(self, sweep_id: str) -> Sweep | None:
        """By id, or by the W&B path entity/project/id it mirrors."""
        rows = self._read("SELECT * FROM sweeps WHERE id = :id OR remote = :id", id=sweep_id)
        if not rows:
            return None
        row = rows[0]
        return Sweep(
            row["id"],
            row["name"],
            row["backend"],
            json.loads(row["config"]),
            row["created"],
            bool(row["exhausted"]),
            row["remote"],
            json.loads(row["code"]) if row["code"] else None,
        )

    def mark_exhausted(self, sweep_id: str) -> None:
        self._write("UPDATE sweeps SET exhausted = 1 WHERE id = :id", id=sweep_id)

    # ---- trials: reads ----
    def trial_dir(self, trial: Trial) -> Path:
        return self.root / trial.sweep_id / trial.id

    def checkpoint(self, trial: Trial) -> Path:
        """Where the trial's checkpoint is on this machine, if this machine holds (or sees) it."""
        return self.trial_dir(trial) / CHECKPOINT

    def trials(self, sweep_id: str) -> list[Trial]:
        return [_trial(r) for r in self._read("SELECT * FROM trials WHERE sweep_id = :s ORDER BY seq", s=sweep_id)]

    def trial_versions(self, sweep_id: str) -> list[tuple[str, Version]]:
        """Each trial's id and version, in order: what changes whenever anything a decision reads of it does (its
        state, owner, history revision, resume counts). Cheap: no JSON to read."""
        sql = f"SELECT id, {_VERSION} FROM trials WHERE sweep_id = :s ORDER BY seq"
        rows = self.atomic(lambda: self._exec(sql, s=sweep_id).all(), write=False)  # (plain rows: asked every epoch)
        return [(r[0], tuple(r[1:])) for r in rows]

    def trials_by_id(self, trial_ids: list[str]) -> list[Trial]:
        if not trial_ids:
            return []
        stmt = sa.text("SELECT * FROM trials WHERE id IN :ids").bindparams(sa.bindparam("ids", expanding=True))
        return self.atomic(lambda: [_trial(r) for r in self._conn().execute(stmt, {"ids": trial_ids}).mappings()],
                           write=False)  # fmt: skip

    def trial(self, trial_id: str) -> Trial:
        rows = self._read("SELECT * FROM trials WHERE id = :id", id=trial_id)
        if not rows:
            raise KeyError(f"no trial {trial_id!r} in {self.where}")
        return _trial(rows[0])

    def history(self, trial_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT metrics FROM history WHERE trial_id = :id ORDER BY epoch", id=trial_id)
        return [json.loads(r["metrics"]) for r in rows]

    def histories(self, sweep_id: str, trial_ids: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every epoch record of the sweep's trials (or of `trial_ids`), by trial, in one query."""
        sql = (
            "SELECT h.trial_id, h.metrics FROM history h JOIN trials t ON t.id = h.trial_id WHERE t.sweep_id = :s"
            + (" AND h.trial_id IN :ids" if trial_ids is not None else "")
            + " ORDER BY h.trial_id, h.epoch"
        )
        out: dict[str, list[dict[str, Any]]] = {}
        if trial_ids == []:
            return out
        stmt = sa.text(sql)
        if trial_ids is not None:
            stmt = stmt.bindparams(sa.bindparam("ids", expanding=True))

        def read() -> list[sa.Row]:
            return list(self._conn().execute(stmt, {"s": sweep_id, **({"ids": trial_ids} if trial_ids else {})}))

        for trial_id, metrics in self.atomic(read, write=False):
            out.setdefault(trial_id, []).append(json.loads(metrics))
        return out

    # ---- trials: claims (unfenced: they make the owner) ----
    def add_trial(
        self,
        sweep_id: str,
        params: dict[str, Any],
        agent: str,
        trial_id: str | None = None,
        after: int | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> Trial | None:
        """A new running trial of `agent`, with the deciding engine's `attrs`. With `after` (the number of trials
        the suggestion was made from), it is added only if the sweep still has exactly that many, else None:
        another agent claimed meanwhile and the suggestion must be made again."""

        def add() -> Trial | None:
            if trial_id:  # a W&B run's trial: one this agent added before a commit whose answer was lost is its own
                mine = self._exec("SELECT * FROM trials WHERE id = :id AND agent = :agent", id=trial_id, agent=agent)
                if (row := mine.mappings().first()) is not None:
                    return _trial(row)
            count, seq = self._exec(
                "SELECT COUNT(*), COALESCE(MAX(seq), 0) + 1 FROM trials WHERE sweep_id = :s", s=sweep_id
            ).one()
            if after is not None and count != after:
                return None
            now = self._exec(f"SELECT {self.now}").scalar_one()  # the database's clock, as the heartbeats
            trial = Trial(trial_id or f"{sweep_id}-{seq}", sweep_id, seq, params, State.RUNNING, agent, now, now)
            trial.attrs = attrs or {}
            self._exec(
                "INSERT INTO trials (id, sweep_id, seq, params, state, agent, created, started, heartbeat, attrs) "
                "VALUES (:id, :sweep_id, :seq, :params, 'running', :agent, :now, :now, :now, :attrs)",
                id=trial.id,
                sweep_id=sweep_id,
                seq=seq,
                params=json.dumps(params),
                agent=agent,
                now=now,
                attrs=json.dumps(trial.attrs),
            )
            return trial

        return self.atomic(add, lock=sweep_id)

    def add_prior(
        self, sweep_id: str, params: dict[str, Any], history: list[dict[str, Any]], summary: dict[str, Any],
        attrs: dict[str, Any], metric: str | None,
    ) -> None:  # fmt: skip
        """A trial that ran elsewhere (sweep/prior.py), recorded finished with its epochs and never run here: every
        engine that reads the sweep's trials learns it as already evaluated."""

        def add() -> None:
            seq = self._exec("SELECT COALESCE(MAX(seq), 0) + 1 FROM trials WHERE sweep_id = :s", s=sweep_id).scalar()
            trial_id = f"{sweep_id}-{seq}"
            series = Series.of([(r["epoch"], r[metric]) for r in history if metric in r])
            self._exec(
                "INSERT INTO trials (id, sweep_id, seq, params, state, created, summary, epochs, series, attrs) "
                f"VALUES (:id, :s, :seq, :params, 'finished', {self.now}, :summary, :epochs, :series, :attrs)",
                id=trial_id, s=sweep_id, seq=seq, params=json.dumps(params), summary=json.dumps(summary),
                epochs=len(history), series=series.pack(), attrs=json.dumps(attrs),
            )  # fmt: skip
            self._conn().execute(
                sa.text("INSERT INTO history (trial_id, epoch, metrics) VALUES (:id, :epoch, :metrics)"),
                [{"id": trial_id, "epoch": r["epoch"], "metrics": json.dumps(r)} for r in history],
            )

        self.atomic(add, lock=sweep_id)

    def exhausted_after(self, sweep_id: str, after: int) -> bool:
        """Mark the sweep exhausted if it still has exactly `after` trials (the ones the engine found nothing
        more beyond); False if another agent added one meanwhile."""

        def mark() -> bool:
            if self._exec("SELECT COUNT(*) FROM trials WHERE sweep_id = :s", s=sweep_id).scalar_one() != after:
                return False
            self.mark_exhausted(sweep_id)  # (joins this transaction)
            return True

        return self.atomic(mark, lock=sweep_id)

    def take(self, trial: Trial, agent: str, restart: bool = False) -> bool:
        """A preempted, crashed or paused trial runs again under `agent`, if it is still in the state `trial`
        shows (else another agent took it first: False). It resumes from its checkpoint, or with `restart` (its
        checkpoint is out of reach) from epoch 0, so its old history goes. Its pgid and host stay those of its last
        copy until the new one starts, so the new owner can end that copy if it still runs on its machine."""

        def claim() -> bool:
            changed = self._exec(
                f"UPDATE trials SET state = 'running', agent = :agent, started = {self.now}, "
                f"heartbeat = {self.now}, ended = NULL, exit_code = NULL, error = NULL, "  # pgid, host: the old copy's
                "resumes = resumes + 1"
                + (", epochs = 0, summary = '{}', series = '', revision = revision + 1" if restart else "")
                # (or it is already this agent's: a retry after a commit whose answer was lost)
                + " WHERE id = :id AND (state = :state OR (state = 'running' AND agent = :agent))",
                agent=agent,
                id=trial.id,
                state=str(trial.state),
            ).rowcount
            if changed and restart:
                self._exec("DELETE FROM history WHERE trial_id = :id", id=trial.id)
            return changed == 1

        return self.atomic(claim, lock=trial.sweep_id)

    def mark_crashed(self, sweep_id: str, stale_after: float) -> None:
        """Running trials whose agent stopped renewing its lease (killed, frozen, or its machine went down)."""
        self._write(
            "UPDATE trials SET state = 'crashed', ended = heartbeat, error = 'agent stopped sending heartbeats', "
            "crashes = crashes + 1, runtime = runtime + heartbeat - started "
            f"WHERE sweep_id = :s AND state = 'running' AND heartbeat < {self.now} - :stale",
            s=sweep_id,
            stale=stale_after,
        )

    # ---- trials: writes of the owning agent (fenced) ----
    def _own(self, trial_id: str, agent: str) -> None:
        """Renew `agent`'s hold on the running trial inside the current transaction, or raise NotOwner."""
        held = self._exec(
            f"UPDATE trials SET heartbeat = {self.now} WHERE id = :id AND agent = :agent AND state = 'running'",
            id=trial_id,
            agent=agent,
        ).rowcount
        if held != 1:
            raise NotOwner(trial_id)

    def heartbeat(self, agent: str, trial_ids: list[str]) -> list[str]:
        """Renew the agent's lease on its running trials; returns those that are no longer its own. With none, it
        still finds out whether the database answers."""

        def beat() -> list[str]:
            lost = []
            for trial_id in sorted(trial_ids):  # one order for every agent: no deadlock between two of them
                try:
                    self._own(trial_id, agent)
                except NotOwner:
                    lost.append(trial_id)
            return lost

        return self.atomic(beat)

    def set_process(self, trial_id: str, agent: str, pgid: int, host: str) -> None:
        """Where the trial's process group runs (a later agent on that host can end a stale copy of it)."""

        def record() -> None:
            self._own(trial_id, agent)
            self._exec("UPDATE trials SET pgid = :pgid, host = :host WHERE id = :id", pgid=pgid, host=host, id=trial_id)

        self.atomic(record)

    def add_epochs(self, trial_id: str, records: list[dict[str, Any]], agent: str, metric: str | None = None) -> None:
        """Record epochs, in the order the trainer wrote them, written by `agent`, in one transaction; the trial's
        `series` keeps `metric`'s values, at a rung epoch the rung's (`rung_METRIC`, the cooled model's: what a
        decision there judges). Epochs arrive in order, so later ones on record are stale: a resumed
        trial runs again the epochs it finished after its last checkpoint (or, restarted, all of them)."""
        if not records:
            return
        epochs = [int(r["epoch"]) for r in records]
        # Each record drops the later ones on record; for rising epochs one delete from the first does it all.
        runs = (
            [(records, epochs)]
            if epochs == sorted(set(epochs))
            else [([r], [e]) for r, e in zip(records, epochs, strict=True)]
        )

        def add() -> None:
            series = Series.unpack(self._exec("SELECT series FROM trials WHERE id = :id", id=trial_id).scalar() or "")
            for batch, numbers in runs:
                self._exec("DELETE FROM history WHERE trial_id = :id AND epoch >= :e", id=trial_id, e=numbers[0])
                self._conn().execute(
                    sa.text(
                        f"INSERT INTO history (trial_id, epoch, metrics, agent, written) "
                        f"VALUES (:id, :epoch, :metrics, :agent, {self.now})"
                    ),
                    [
                        {"id": trial_id, "epoch": e, "metrics": json.dumps(r), "agent": agent}
                        for r, e in zip(batch, numbers, strict=True)
                    ],
                )
                rung = f"rung_{metric}"
                kept = [(e, r[rung] if rung in r else r[metric]) for r, e in zip(batch, numbers, strict=True)
                        if metric in r or rung in r]  # fmt: skip
                series = series.before(numbers[0]).then(kept)
            # Fenced as `_own` is, in the same statement (a trial this agent no longer holds rolls all of it back).
            held = self._exec(
                f"UPDATE trials SET heartbeat = {self.now}, epochs = (SELECT COUNT(*) FROM history WHERE trial_id = "
                ":id), summary = :summary, series = :series, revision = revision + 1 WHERE id = :id AND agent = "
                ":agent AND state = 'running'",
                id=trial_id,
                agent=agent,
                summary=json.dumps(records[-1]),
                series=series.pack(),
            ).rowcount
            if held != 1:
                raise NotOwner(trial_id)

        self.atomic(add)

    def set_attrs(self, trial_id: str, attrs: dict[str, Any], agent: str) -> None:
        """Replace the engine's record of `agent`'s running trial (a pruner's state, say): other agents see it."""

        def write() -> None:
            self._own(trial_id, agent)
            self._exec(
                "UPDATE trials SET attrs = :attrs, revision = revision + 1 WHERE id = :id",
                attrs=json.dumps(attrs),
                id=trial_id,
            )

        self.atomic(write)

    def end(
        self,
        trial_id: str,
        state: State,
        agent: str,
        exit_code: int | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Record the end of `agent`'s trial; its runtime grows by the time since it (re)started."""
        if state == State.RUNNING:
            raise ValueError(f"trial {trial_id}: a trial ends in a state other than running")

        def end() -> None:
            self._own(trial_id, agent)  # (its heartbeat is now the database's present time)
            t = self.trial(trial_id)
            self._exec(
                "UPDATE trials SET state = :state, ended = heartbeat, exit_code = :code, error = :error, "
                "summary = :summary, runtime = runtime + heartbeat - COALESCE(started, heartbeat) WHERE id = :id",
                state=str(state),
                code=exit_code,
                error=error,
                summary=json.dumps({**t.summary, **(summary or {})}),
                id=trial_id,
            )

        self.atomic(end)


Version = tuple[str, str | None, int, int, int]  # state (a State's value), agent, revision, resumes, crashes
_VERSION = "state, agent, revision, resumes, crashes"


def version(trial: Trial) -> Version:
    """The trial's version, as `Store.trial_versions` gives it."""
    return (trial.state, trial.agent, trial.revision, trial.resumes, trial.crashes)


def _trial(row: sa.RowMapping) -> Trial:
    d = dict(row)
    d["params"], d["summary"], d["state"] = json.loads(d["params"]), json.loads(d["summary"]), State(d["state"])
    d["series"], d["attrs"] = Series.unpack(d["series"]), json.loads(d["attrs"])
    return Trial(**d)


# PostgreSQL error classes worth a retry: connection exceptions, transaction rollbacks (serialization failure,
# deadlock), operator intervention (shutdown, server starting up), lock not available, idle session killed.
_TRANSIENT_CLASSES = ("08", "40", "57")
_TRANSIENT_CODES = ("55P03", "25P03")
# Connection failures that no retry cures (psycopg gives them no SQLSTATE).
_FATAL_WORDS = ("authentication failed", "no pg_hba.conf entry", "does not exist", "permission denied")


def _transient(e: sa.exc.DBAPIError) -> bool:
    """Whether the failure may pass on its own (so the transaction is worth running again)."""
    orig = e.orig
    if isinstance(orig, sqlite3.OperationalError):
        return any(w in str(orig) for w in ("locked", "busy"))
    code = getattr(orig, "sqlstate", None)
    if code:
        return code.startswith(_TRANSIENT_CLASSES) or code in _TRANSIENT_CODES
    if e.connection_invalidated:
        return True
    return isinstance(e, sa.exc.OperationalError) and not any(w in str(orig) for w in _FATAL_WORDS)


def _sqlite_engine(path: Path) -> sa.Engine:
    # timeout: how long a writer waits for another agent's write lock before "database is locked" (then the
    # transaction is retried): no longer than the retries, so an agent hears of a stuck database while its lease holds.
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": DB_RETRY})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below); pysqlite's own is deferred
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        # WAL's recommended setting: a commit no longer waits for the disk (an agent records every epoch), and the
        # database stays consistent; only an OS crash or power loss may undo the last commits, and the agents of
        # that machine go with it (their trials count as crashed and resume).
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writes take the write lock up front, so what they read inside the transaction stays current.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def _postgres_engine(db: str) -> sa.Engine:
    try:
        url: URL = make_url(db)
    except (sa.exc.ArgumentError, ValueError):
        raise StoreError(f"--db: {redact(db)!r} is not a database URL; allowed: {URL_FORM}") from None
    if url.get_backend_name() != "postgresql":
        raise StoreError(
            f"--db: {redact(db)}: {url.get_backend_name()!r} databases are not supported; allowed: {URL_FORM}"
        )
    if not url.database:
        raise StoreError(f"--db: {redact(db)} names no database; allowed: {URL_FORM}")
    # psycopg 3 whatever driver the URL names; pool_pre_ping replaces connections a server restart closed. A lock
    # waited for too long, or a transaction left open by a frozen agent, is given up by the server (and retried
    # by us), so one stuck agent cannot hold the sweep's lock for the others. A connection whose server vanished
    # from the network without closing it fails within seconds (TCP keepalives; unacknowledged data), not after
    # the kernel's quarter of an hour: an agent must hear of it while its lease holds.
    lock, idle = round(PG_LOCK_TIMEOUT * 1000), round(PG_IDLE_TIMEOUT * 1000)  # (milliseconds)
    options = f"-c lock_timeout={lock} -c idle_in_transaction_session_timeout={idle}"
    quiet, interval, probes = PG_KEEPALIVE
    tcp = {"keepalives": 1, "keepalives_idle": quiet, "keepalives_interval": interval, "keepalives_count": probes}
    return sa.create_engine(
        url.set(drivername="postgresql+psycopg"),
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": max(PG_CONNECT_TIMEOUT, round(DB_RETRY)),
            "options": options,
            "tcp_user_timeout": round(DB_RETRY * 1000),
            **tcp,
        },
    )


def _driver_message(e: sa.exc.DBAPIError) -> str:
    """The driver's own words on one line (psycopg's never include the password)."""
    text = str(e.orig) if e.orig is not None else str(e)
    return " ".join(text.split()).removeprefix("connection failed: ")
