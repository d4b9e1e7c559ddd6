"""What a replay gives the real agent in place of the machine: a simulated clock, and trial processes that replay
curves on it, as Syne Tune's simulator backend gives its tuner loop.

A curve's process releases each record when the clock reaches the record's end (`epoch_time` each, plus its
cooldown branch's `rung_time`), and exits at its last: 0 when the curve reaches its planned epochs, else 1 (a
curve that ends early is a trial that failed there). The clock's `sleep` jumps to the next record due, so the
agent's poll loop costs one round per event, not one per poll; after a round in which something happened while
a slot is free it does not move (the agent claims at the moment a trial ended, as a real one does within a poll).
The budget, in epochs each record costs, ends the replay: no record is released past it, and the next sleep
raises `Spent`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hpsearch.simulate.curves import Curve


class Spent(Exception):
    """The replay is over: its budget is spent, or nothing runs and nothing more will start."""


def epoch_time(record: dict[str, Any]) -> float:
    """The epoch's seconds, and its cooldown branch's if it ended on one."""
    t = record.get("epoch_time")
    branch = record.get("rung_time", 0.0)
    return (float(t) if isinstance(t, (int, float)) and t > 0 else 1.0) + float(branch)


def epochs_of(record: dict[str, Any]) -> int:
    """The epochs an epoch record cost: 1, and its cooldown branch's epochs if it ended on one."""
    return 1 + int(record.get("rung_epochs", 0))


class Clock:
    """The simulated clock of one replay, and its budget: the agent's `clock` and `sleep`."""

    def __init__(self, workers: int, budget: float = math.inf):
        self.now, self.spent, self.budget, self.workers = 0.0, 0, budget, workers
        self.live: list[CurveProcess] = []  # started, not yet exited or ended
        self.changed = False  # a record was released or a process ended since the last sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if self.spent >= self.budget:
            raise Spent
        if self.changed and len(self.live) < self.workers:
            self.changed = False
            return  # a round at the same moment: the free slots are claimed before anything else happens
        self.changed = False
        due = [p.next_at for p in self.live if p.next_at is not None]
        if not due:
            raise Spent
        self.now = min(due)


class CurveProcess:
    """A trial's process that replays `curve` on `clock` from record `done` on (a promoted trial's curve goes on
    where it paused). What the agent uses of a TrialProcess; it writes nothing."""

    def __init__(self, clock: Clock, curve: Curve, done: int, trial_dir: Path):
        self.clock, self.curve, self.ran = clock, curve, done
        self.dir, self.checkpoint = trial_dir, trial_dir / "checkpoint"  # (never written: no copy to end, none seen)
        self.next_at: float | None = None  # when its next record is due; None once it has no more
        self.code: int | None = None
        self.ended = False

    def start(self) -> int:
        self.clock.live.append(self)
        self._due(self.clock.now)
        return self.pgid

    pgid = 0  # no process group: nothing to signal, nothing to find running later

    def _due(self, now: float) -> None:
        records = self.curve.records
        self.next_at = now + epoch_time(records[self.ran]) if self.ran < len(records) else None
        if self.next_at is None:
            self._exit(0 if self.ran >= self.curve.planned else 1)

    def _exit(self, code: int) -> None:
        if self.code is None:
            self.code, self.next_at = code, None
            self.clock.live.remove(self)
            self.clock.changed = True

    def new_epochs(self) -> list[dict[str, Any]]:
        out, clock = [], self.clock
        while self.next_at is not None and self.next_at <= clock.now and clock.spent < clock.budget:
            record = self.curve.records[self.ran]
            out.append(record)
            self.ran += 1
            clock.spent += epochs_of(record)
            clock.changed = True
            self._due(self.next_at)
        return out

    def poll(self) -> int | None:
        return self.code

    def send(self, sig: int) -> None:
        self._exit(-sig)

    def alive(self) -> bool:
        return self.code is None

    def summary(self) -> dict[str, Any]:
        return self.curve.records[self.ran - 1] if self.ran else {}

    def error(self) -> str:
        return f"its curve ends after epoch {self.ran} of {self.curve.planned}"
