"""Every default and environment knob of the agent and the store, named once and read once, here (as
wandb's agent keeps its policy knobs in one place). Command-line options take their defaults from these; a bad
environment value is one line from `check()` (every command calls it), not an exit at import.
"""

from __future__ import annotations

import os
from typing import Any

PROBLEMS: list[str] = []  # environment knobs whose values are not valid (their defaults are used meanwhile)


class SettingError(ValueError):
    """An environment knob holds a value it cannot take; one line."""


def check() -> None:
    """Raise SettingError for the first environment knob that holds a bad value."""
    if PROBLEMS:
        raise SettingError(PROBLEMS[0])


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    PROBLEMS.append(f"{name}={raw!r} is not valid; allowed: a number of seconds > 0")
    return default


# ---- supervising trials (`hpsearch agent` options) ----
GRACE = 10.0  # --grace: seconds between SIGTERM and SIGKILL when a trial is ended
HANG_TIMEOUT = 600.0  # --hang-timeout: seconds without a new epoch before a trial counts as hung ...
HANG_EPOCHS = 5  # ... or this many times its slowest epoch so far, whichever is longer
FIRST_EPOCH_FACTOR = 3  # the first epoch also starts workers, loads data and compiles: it gets 3x the limit
MAX_RESUMES = 2  # --max-resumes: times a trial whose agent died is resumed before it stays crashed
MAX_EARLY_FAILURES = 3  # as W&B's agent: this many failures before any success means the sweep is broken
POLL = 0.5  # seconds between the agent's looks at its trials' metrics files
TERM_POLL = 0.05  # seconds between looks at whether an ended trial's processes are gone
KILL_WAIT = 30.0  # SIGKILL cannot be refused: how long to wait on a stuck kernel before going on
RESERVE = 120.0  # no trial starts this close to an allocation's end (or its longest wait for a first checkpoint)
FENCE_TICK = 1.0  # seconds between the lease fence thread's looks at the loop (3 missed: the process was stopped)

# ---- the lease an agent holds on its trials in the sweep database ----
# Without a heartbeat for this long, an agent counts as dead and its running trials as crashed; an agent that
# cannot renew its lease ends its own trials before then, so no trial ever runs twice.
STALE_AFTER = _seconds("HPSEARCH_STALE_AFTER", 60.0)
HEARTBEAT = max(1.0, min(5.0, STALE_AFTER / 4))  # seconds between heartbeats
DB_RETRY = min(8.0, STALE_AFTER / 8)  # seconds a store operation retries a transient database error before giving up
DB_BACKOFF = (0.05, 1.0)  # its first and longest wait between tries (doubling)
UNREACHABLE_BEAT = min(1.0, HEARTBEAT)  # seconds between heartbeats while the database does not answer
# PostgreSQL gives up a lock waited for half a retry window (the transaction is retried), and ends a transaction
# left open by a frozen agent long before any lease could lapse.
PG_LOCK_TIMEOUT = DB_RETRY / 2
PG_IDLE_TIMEOUT = STALE_AFTER / 3
# A server gone from the network fails a connection within seconds (TCP keepalives: idle, interval, probes),
# not after the kernel's quarter of an hour; and a connection is given at least this long to open.
PG_KEEPALIVE = (3, 1, 3)
PG_CONNECT_TIMEOUT = 2

# ---- W&B ----
# wandb's own agent heartbeats every 5 s; each slot of ours is one agent as the W&B server sees it.
WANDB_HEARTBEAT = _seconds("HPSEARCH_WANDB_HEARTBEAT", 5.0)
WANDB_TIMEOUT = 60.0  # seconds a slot's heartbeat request may take, wandb's retries included
# A trial's run waits this long at its end for W&B to take its data (wandb's `finish_timeout`): a server that stopped
# answering must not hold a GPU; what it did not take stays on disk for `hpsearch sync`.
WANDB_FINISH_TIMEOUT = _seconds("HPSEARCH_WANDB_FINISH_TIMEOUT", 300.0)
UNCONFIRMED = "wandb-unconfirmed"  # in a trial's folder: the path of its online run, whose upload W&B did not confirm
WANDB_PROJECT = os.environ.get("WANDB_PROJECT")
FALLBACK_PROJECT = "hpsearch"


def project(config: dict[str, Any]) -> str:
    """The W&B project of a sweep's runs: WANDB_PROJECT, else the sweep file's `project`, else hpsearch."""
    return WANDB_PROJECT or config.get("project") or FALLBACK_PROJECT


# ---- SLURM ----
SLURM_WARNING = 300  # --warning: seconds before the time limit at which the agents preempt and requeue
SLURM_TIMEOUT = 120.0  # seconds a SLURM command (sbatch, squeue, scontrol) may take
