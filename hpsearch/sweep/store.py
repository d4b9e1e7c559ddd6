"""The sweep store: sweeps, trials and per-epoch history in one database, plus a folder per trial.

Two kinds of database behind one set of queries (SQLAlchemy Core):
- SQLite, the embedded default: `DIR/hpsearch.db`, for agents on ONE machine (WAL mode needs shared
  memory, and SQLite's file locks are unreliable over network filesystems);
- PostgreSQL (`--db postgresql://...`), for agents on many machines.

Every change is one transaction. Claiming work (`transaction(sweep_id)`) is serialized per sweep: SQLite's
write lock (BEGIN IMMEDIATE) or a row lock on the sweep (SELECT ... FOR UPDATE), so no two agents claim the
same trial, grid point or preempted trial, and run_cap holds exactly. Trial folders (logs, metrics, checkpoint)
always live under the store's `root` directory, which is per machine unless it sits on a shared filesystem.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url

from hpsearch.train import CHECKPOINT

STATES = ("running", "finished", "failed", "stopped", "preempted", "crashed")
ACTIVE = ("running", "preempted")  # trials that still hold (or will resume) a slot of the sweep
DB_FILE = "hpsearch.db"
URL_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"

# The schema as of SCHEMA_VERSION. DOUBLE PRECISION, not REAL: PostgreSQL's REAL is 4 bytes, too coarse for
# timestamps; SQLite reads both as its 8-byte REAL.
SCHEMA_VERSION = 2
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS sweeps (
        id TEXT PRIMARY KEY, name TEXT, backend TEXT NOT NULL, config TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, exhausted INTEGER NOT NULL DEFAULT 0, remote TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS trials (
        id TEXT PRIMARY KEY, sweep_id TEXT NOT NULL REFERENCES sweeps(id), seq INTEGER NOT NULL,
        params TEXT NOT NULL, state TEXT NOT NULL, agent TEXT, created DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION, ended DOUBLE PRECISION, heartbeat DOUBLE PRECISION, pgid INTEGER,
        exit_code INTEGER, error TEXT, summary TEXT NOT NULL DEFAULT '{}', epochs INTEGER NOT NULL DEFAULT 0,
        runtime DOUBLE PRECISION NOT NULL DEFAULT 0, resumes INTEGER NOT NULL DEFAULT 0,
        crashes INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS history (
        trial_id TEXT NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
        PRIMARY KEY (trial_id, epoch)
    )""",
]
# Statements that bring a store written by an older hpsearch to version N (a store made before the meta
# table existed is version 1).
MIGRATIONS: dict[int, list[str]] = {
    2: [  # crashed trials resume from their checkpoints, a limited number of times
        "ALTER TABLE trials ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE trials ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
    ],
}


class StoreError(Exception):
    """The database cannot be used (bad URL, server down, wrong credentials); one line, no password."""


@dataclass
class Sweep:
    id: str
    name: str
    backend: str  # local | wandb
    config: dict[str, Any]
    created: float
    exhausted: bool  # the controller has nothing more to suggest (grid done, run_cap reached)
    remote: str | None  # entity/project/sweep on a W&B server

    @property
    def metric(self) -> dict[str, str] | None:
        return self.config.get("metric")


@dataclass
class Trial:
    id: str
    sweep_id: str
    seq: int
    params: dict[str, Any]
    state: str
    agent: str | None = None
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    heartbeat: float | None = None
    pgid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    runtime: float = 0.0  # seconds spent running, summed over resumes
    resumes: int = 0  # times it was taken up again after it was preempted or crashed
    crashes: int = 0  # times its agent died under it


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
        `root`. Raises StoreError (having created nothing) when the database cannot be reached."""
        self.root = Path(root)
        if db:
            self.where = f"--db {redact(db)}"
            self.engine = _postgres_engine(db)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self.where = str(self.root / DB_FILE)
            self.engine = _sqlite_engine(self.root / DB_FILE)
        self.postgres = self.engine.dialect.name == "postgresql"
        self._local = threading.local()  # this thread's open transaction, if any
        with self._errors("cannot connect"):
            self.engine.connect().close()
        self._create_schema()

    def _create_schema(self) -> None:
        with self.transaction():
            if self.postgres:  # CREATE TABLE IF NOT EXISTS races between agents starting together
                self._exec("SELECT pg_advisory_xact_lock(7411)")
            inspector = sa.inspect(self._conn())
            before_meta = inspector.has_table("sweeps") and not inspector.has_table("meta")
            for stmt in SCHEMA:
                self._exec(stmt)
            row = self._exec("SELECT value FROM meta WHERE key = 'schema_version'").first()
            version = int(row[0]) if row else (1 if before_meta else SCHEMA_VERSION)
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.where}: written by a newer hpsearch (schema {version}); upgrade hpsearch")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[v]:
                    self._exec(stmt)
            if row is None or version != SCHEMA_VERSION:
                self._exec(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', :v) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    v=str(SCHEMA_VERSION),
                )

    # ---- transactions ----
    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The database's failures (disk full, server gone, locked too long) as one line naming the store."""
        try:
            yield
        except sa.exc.DBAPIError as e:
            raise StoreError(f"{self.where}: {what}: {_driver_message(e)}") from None

    @contextmanager
    def transaction(self, sweep_id: str | None = None) -> Iterator[None]:
        """One atomic change (nested calls join the outer one); a failure rolls all of it back. With `sweep_id`,
        it is also serialized with every other transaction that names the same sweep: that is how claims stay
        exactly-once."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._errors("cannot write"), self.engine.execution_options(write=True).begin() as conn:
            self._local.conn = conn
            try:
                if sweep_id is not None and self.postgres:
                    self._exec("SELECT id FROM sweeps WHERE id = :id FOR UPDATE", id=sweep_id)
                yield  # (SQLite: BEGIN IMMEDIATE already holds the database's one write lock)
            finally:
                self._local.conn = None

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        assert conn is not None, "store queries run inside a transaction or _read()"
        return conn

    def _exec(self, sql: str, **params: Any) -> sa.CursorResult:
        return self._conn().execute(sa.text(sql), params)

    def _read(self, sql: str, **params: Any) -> list[sa.RowMapping]:
        """A read: inside the current transaction if there is one, else a short one of its own."""
        if getattr(self._local, "conn", None) is not None:
            return list(self._exec(sql, **params).mappings())
        with self._errors("cannot read"), self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).mappings())

    def _write(self, sql: str, **params: Any) -> None:
        with self.transaction():
            self._exec(sql, **params)

    # ---- sweeps ----
    def add_sweep(
        self,
        config: dict[str, Any],
        backend: str,
        name: str | None = None,
        remote: str | None = None,
        sweep_id: str | None = None,
    ) -> Sweep:
        sweep = Sweep(
            sweep_id or new_id(), name or config.get("name") or "", backend, config, time.time(), False, remote
        )
        self._write(
            "INSERT INTO sweeps (id, name, backend, config, created, remote) "
            "VALUES (:id, :name, :backend, :config, :created, :remote)",
            id=sweep.id,
            name=sweep.name,
            backend=backend,
            config=json.dumps(config),
            created=sweep.created,
            remote=remote,
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
        )

    def mark_exhausted(self, sweep_id: str) -> None:
        self._write("UPDATE sweeps SET exhausted = 1 WHERE id = :id", id=sweep_id)

    # ---- trials ----
    def trial_dir(self, trial: Trial) -> Path:
        return self.root / trial.sweep_id / trial.id

    def checkpoint(self, trial: Trial) -> Path:
        """Where the trial's checkpoint is on this machine, if this machine holds (or sees) it."""
        return self.trial_dir(trial) / CHECKPOINT

    def trials(self, sweep_id: str) -> list[Trial]:
        return [_trial(r) for r in self._read("SELECT * FROM trials WHERE sweep_id = :s ORDER BY seq", s=sweep_id)]

    def trial(self, trial_id: str) -> Trial:
        return _trial(self._read("SELECT * FROM trials WHERE id = :id", id=trial_id)[0])

    def add_trial(self, sweep_id: str, params: dict[str, Any], agent: str, trial_id: str | None = None) -> Trial:
        """A new running trial; call inside a transaction together with the suggestion it records."""
        with self.transaction():
            seq = self._exec("SELECT COALESCE(MAX(seq), 0) + 1 FROM trials WHERE sweep_id = :s", s=sweep_id)
            seq = seq.scalar_one()
            now = time.time()
            trial = Trial(trial_id or f"{sweep_id}-{seq}", sweep_id, seq, params, "running", agent, now, now, None, now)
            self._exec(
                "INSERT INTO trials (id, sweep_id, seq, params, state, agent, created, started, heartbeat) "
                "VALUES (:id, :sweep_id, :seq, :params, 'running', :agent, :now, :now, :now)",
                id=trial.id,
                sweep_id=sweep_id,
                seq=seq,
                params=json.dumps(params),
                agent=agent,
                now=now,
            )
        return trial

    def claim(self, trial_id: str, agent: str, restart: bool = False) -> None:
        """A preempted or crashed trial goes back to running under `agent`: it resumes from its checkpoint, or
        with `restart` (its checkpoint is out of reach) from epoch 0, so its old history goes."""
        now = time.time()
        with self.transaction():
            if restart:
                self._exec("DELETE FROM history WHERE trial_id = :id", id=trial_id)
            self._exec(
                "UPDATE trials SET state = 'running', agent = :agent, started = :now, heartbeat = :now, "
                "ended = NULL, exit_code = NULL, error = NULL, resumes = resumes + 1"
                + (", epochs = 0, summary = '{}'" if restart else "")
                + " WHERE id = :id",
                agent=agent,
                now=now,
                id=trial_id,
            )

    def set_pgid(self, trial_id: str, pgid: int) -> None:
        self._write("UPDATE trials SET pgid = :pgid WHERE id = :id", pgid=pgid, id=trial_id)

    def heartbeat(self, trial_ids: list[str]) -> None:
        if trial_ids:
            with self.transaction():
                now = time.time()
                for t in trial_ids:
                    self._exec("UPDATE trials SET heartbeat = :now WHERE id = :id", now=now, id=t)

    def add_epoch(self, trial_id: str, record: dict[str, Any]) -> None:
        """Record an epoch. Epochs arrive in order, so later ones on record are stale: a resumed trial runs
        again the epochs it finished after its last checkpoint (or, restarted, all of them)."""
        with self.transaction():
            stale = "DELETE FROM history WHERE trial_id = :id AND epoch > :epoch"
            self._exec(stale, id=trial_id, epoch=record["epoch"])
            self._exec(
                "INSERT INTO history (trial_id, epoch, metrics) VALUES (:id, :epoch, :metrics) "
                "ON CONFLICT (trial_id, epoch) DO UPDATE SET metrics = excluded.metrics",
                id=trial_id,
                epoch=int(record["epoch"]),
                metrics=json.dumps(record),
            )
            self._exec(
                "UPDATE trials SET epochs = (SELECT COUNT(*) FROM history WHERE trial_id = :id), summary = :summary, "
                "heartbeat = :now WHERE id = :id",
                id=trial_id,
                summary=json.dumps(record),
                now=time.time(),
            )

    def history(self, trial_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT metrics FROM history WHERE trial_id = :id ORDER BY epoch", id=trial_id)
        return [json.loads(r["metrics"]) for r in rows]

    def end(
        self,
        trial_id: str,
        state: str,
        exit_code: int | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Record a trial's end; its runtime grows by the time since it (re)started."""
        assert state in STATES, state
        now = time.time()
        with self.transaction():
            t = self.trial(trial_id)
            self._exec(
                "UPDATE trials SET state = :state, ended = :now, exit_code = :code, error = :error, "
                "summary = :summary, runtime = :runtime WHERE id = :id",
                state=state,
                now=now,
                code=exit_code,
                error=error,
                summary=json.dumps({**t.summary, **(summary or {})}),
                runtime=t.runtime + now - (t.started or now),
                id=trial_id,
            )

    def mark_crashed(self, sweep_id: str, stale_after: float) -> None:
        """Running trials whose agent stopped sending heartbeats (it was killed, or its machine went down)."""
        self._write(
            "UPDATE trials SET state = 'crashed', ended = heartbeat, error = 'agent stopped sending heartbeats', "
            "crashes = crashes + 1, runtime = runtime + heartbeat - started "
            "WHERE sweep_id = :s AND state = 'running' AND heartbeat < :cutoff",
            s=sweep_id,
            cutoff=time.time() - stale_after,
        )


def _trial(row: sa.RowMapping) -> Trial:
    d = dict(row)
    d["params"], d["summary"] = json.loads(d["params"]), json.loads(d["summary"])
    return Trial(**d)


def _sqlite_engine(path: Path) -> sa.Engine:
    # timeout: how long a writer waits for another agent's write lock before "database is locked".
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 120})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below); pysqlite's own is deferred
        dbapi_conn.execute("PRAGMA journal_mode=WAL")

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
        raise StoreError(f"--db: {url.get_backend_name()!r} databases are not supported; allowed: {URL_FORM}")
    if not url.database:
        raise StoreError(f"--db: {redact(db)} names no database; allowed: {URL_FORM}")
    # psycopg 3 whatever driver the URL names; pool_pre_ping survives a server restart between trials.
    return sa.create_engine(
        url.set(drivername="postgresql+psycopg"), pool_pre_ping=True, connect_args={"connect_timeout": 10}
    )


def _driver_message(e: sa.exc.DBAPIError) -> str:
    """The driver's own words on one line (psycopg's never include the password)."""
    text = str(e.orig) if e.orig is not None else str(e)
    return " ".join(text.split()).removeprefix("connection failed: ")
