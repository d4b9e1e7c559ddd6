"""The sweep store: one SQLite database (sweeps, trials, per-epoch history) plus a folder per trial.

Several agents, on one machine or sharing a filesystem, use one store at once: every change is one
transaction, and claiming a trial takes SQLite's write lock (BEGIN IMMEDIATE) so no two agents can
claim the same trial or suggestion.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATES = ("running", "finished", "failed", "stopped", "preempted", "crashed")
ACTIVE = ("running", "preempted")  # trials that still hold (or will resume) a slot of the sweep

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY, name TEXT, backend TEXT NOT NULL, config TEXT NOT NULL,
    created REAL NOT NULL, exhausted INTEGER NOT NULL DEFAULT 0, remote TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY, sweep_id TEXT NOT NULL REFERENCES sweeps(id), seq INTEGER NOT NULL,
    params TEXT NOT NULL, state TEXT NOT NULL, agent TEXT, created REAL NOT NULL, started REAL,
    ended REAL, heartbeat REAL, pgid INTEGER, exit_code INTEGER, error TEXT,
    summary TEXT NOT NULL DEFAULT '{}', epochs INTEGER NOT NULL DEFAULT 0, runtime REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS history (
    trial_id TEXT NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
"""


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


def new_id(n: int = 8) -> str:
    """W&B-style id: lowercase letters and digits."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def default_root() -> Path:
    return Path(os.environ.get("HPSEARCH_DIR", "hpsearch-runs"))


class Store:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: wandb's agent runs each trial in a thread of its own; use stays serial.
        self.db = sqlite3.connect(self.root / "hpsearch.db", timeout=60, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic change; holds the write lock from the start, so reads inside it are current."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

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
        with self.transaction():
            self.db.execute(
                "INSERT INTO sweeps (id, name, backend, config, created, remote) VALUES (?, ?, ?, ?, ?, ?)",
                (sweep.id, sweep.name, backend, json.dumps(config), sweep.created, remote),
            )
        return sweep

    def sweep(self, sweep_id: str) -> Sweep | None:
        """By id, or by the W&B path entity/project/id it mirrors."""
        row = self.db.execute("SELECT * FROM sweeps WHERE id = ? OR remote = ?", (sweep_id, sweep_id)).fetchone()
        if row is None:
            return None
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
        self.db.execute("UPDATE sweeps SET exhausted = 1 WHERE id = ?", (sweep_id,))

    # ---- trials ----
    def trial_dir(self, trial: Trial) -> Path:
        return self.root / trial.sweep_id / trial.id

    def trials(self, sweep_id: str) -> list[Trial]:
        rows = self.db.execute("SELECT * FROM trials WHERE sweep_id = ? ORDER BY seq", (sweep_id,)).fetchall()
        return [self._trial(r) for r in rows]

    def trial(self, trial_id: str) -> Trial:
        return self._trial(self.db.execute("SELECT * FROM trials WHERE id = ?", (trial_id,)).fetchone())

    @staticmethod
    def _trial(row: sqlite3.Row) -> Trial:
        d = dict(row)
        d["params"], d["summary"] = json.loads(d["params"]), json.loads(d["summary"])
        return Trial(**d)

    def add_trial(self, sweep_id: str, params: dict[str, Any], agent: str, trial_id: str | None = None) -> Trial:
        """A new running trial; call inside a transaction together with the suggestion it records."""
        seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM trials WHERE sweep_id = ?", (sweep_id,))
        seq = seq.fetchone()[0]
        now = time.time()
        trial = Trial(trial_id or f"{sweep_id}-{seq}", sweep_id, seq, params, "running", agent, now, now, None, now)
        self.db.execute(
            "INSERT INTO trials (id, sweep_id, seq, params, state, agent, created, started, heartbeat) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (trial.id, sweep_id, seq, json.dumps(params), "running", agent, now, now, now),
        )
        return trial

    def claim(self, trial_id: str, agent: str) -> None:
        """A preempted trial goes back to running under `agent` (it resumes from its checkpoint)."""
        now = time.time()
        self.db.execute(
            "UPDATE trials SET state = 'running', agent = ?, started = ?, heartbeat = ?, ended = NULL, "
            "exit_code = NULL, error = NULL WHERE id = ?",
            (agent, now, now, trial_id),
        )

    def set_pgid(self, trial_id: str, pgid: int) -> None:
        self.db.execute("UPDATE trials SET pgid = ? WHERE id = ?", (pgid, trial_id))

    def heartbeat(self, trial_ids: list[str]) -> None:
        now = time.time()
        self.db.executemany("UPDATE trials SET heartbeat = ? WHERE id = ?", [(now, t) for t in trial_ids])

    def add_epoch(self, trial_id: str, record: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO history (trial_id, epoch, metrics) VALUES (?, ?, ?)",
                (trial_id, int(record["epoch"]), json.dumps(record)),
            )
            self.db.execute(
                "UPDATE trials SET epochs = (SELECT COUNT(*) FROM history WHERE trial_id = ?), summary = ?, "
                "heartbeat = ? WHERE id = ?",
                (trial_id, json.dumps(record), time.time(), trial_id),
            )

    def history(self, trial_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT metrics FROM history WHERE trial_id = ? ORDER BY epoch", (trial_id,))
        return [json.loads(r[0]) for r in rows]

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
            merged = {**t.summary, **(summary or {})}
            self.db.execute(
                "UPDATE trials SET state = ?, ended = ?, exit_code = ?, error = ?, summary = ?, runtime = ? "
                "WHERE id = ?",
                (state, now, exit_code, error, json.dumps(merged), t.runtime + now - (t.started or now), trial_id),
            )

    def mark_crashed(self, sweep_id: str, stale_after: float) -> None:
        """Running trials whose agent stopped sending heartbeats (it was killed, or its machine went down)."""
        cutoff = time.time() - stale_after
        self.db.execute(
            "UPDATE trials SET state = 'crashed', ended = heartbeat, error = 'agent stopped sending heartbeats' "
            "WHERE sweep_id = ? AND state = 'running' AND heartbeat < ?",
            (sweep_id, cutoff),
        )
