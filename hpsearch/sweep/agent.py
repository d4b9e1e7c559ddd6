"""The agent: one loop that runs a sweep's trials in its slots and supervises them, for every controller.

Each round it renews its lease on its trials, claims a trial for each free slot, and looks at every running
trial: records the epochs its trainer wrote, stops it when the controller says so, ends it when it hangs, and
records how it ended. What it does when things go wrong is docs/agent.md's (The agent as a supervisor) and
docs/many-machines.md's (The database as a lease); Ctrl-C, SIGTERM, a lost server and a database gone for good
all end the trials through `_end_all`.
The agent knows nothing of how trials are suggested (sweep/controller.py) or how a process runs (sweep/trial.py);
`hpsearch simulate` runs this same loop with a simulated clock and curves for processes (simulate/replay.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpsearch import defaults
from hpsearch.formats import fmt_duration
from hpsearch.sweep.controller import Claim, Controller, Lost, Start
from hpsearch.sweep.engine import Decision
from hpsearch.sweep.slots import Slot
from hpsearch.sweep.spec import leaves
from hpsearch.sweep.store import NotOwner, State, StoreError, StoreUnavailable, Trial
from hpsearch.sweep.trial import Process, end_groups, end_stale_copy

Launch = Callable[[Trial, Slot], Process]  # the process that runs a trial in a slot (not yet started)


@dataclass
class Outcome:
    """How a trial ended, decided once its processes are gone; kept until it is on record."""

    state: State
    exit_code: int | None
    error: str | None
    summary: dict[str, Any]
    message: str  # the agent's line about it


@dataclass
class Running:
    """A trial this agent holds: its process, where it runs, and its progress as the agent saw it."""

    trial: Trial
    proc: Process
    slot: Slot
    planned: int | None  # epochs it is to run (None: a program's own business)
    seen: int  # epochs already on record when it (re)started: not announced again
    last_progress: float  # when it started, or its last new epoch (agent's clock)
    slowest: float = 0.0  # longest wait between two of its epochs, seconds
    epoch_times: list[float] = field(default_factory=list)  # the trainer's own, for the ETA
    pending: list[dict[str, Any]] = field(default_factory=list)  # epochs read, not yet on record
    last: dict[str, Any] = field(default_factory=dict)  # the latest epoch read
    registered: bool = False  # the controller knows its process group
    outcome: Outcome | None = None

    def hang_limit(self, timeout: float) -> float:
        """Seconds without a new epoch after which the trial counts as hung: the timeout, or HANG_EPOCHS times
        its slowest epoch if longer; FIRST_EPOCH_FACTOR times that before its first epoch."""
        limit = max(timeout, defaults.HANG_EPOCHS * self.slowest)
        return limit if self.epoch_times else defaults.FIRST_EPOCH_FACTOR * limit

    def progressed(self, record: dict[str, Any], now: float) -> None:
        if self.epoch_times:  # the wait for the first epoch includes start-up, not an epoch's pace
            self.slowest = max(self.slowest, now - self.last_progress)
        self.epoch_times.append(record.get("epoch_time", now - self.last_progress))  # the trainer's own, if given
        self.last_progress, self.seen = now, record["epoch"]

    def progress_line(self, record: dict[str, Any]) -> str:
        """`[TRIAL WHERE] epoch e/N  val_acc ..  best ..  lr ..  N img/s  eta ..`, with what the record holds."""
        of = f"/{self.planned}" if self.planned else ""
        parts = [f"[{self.trial.id} {self.slot.where}] epoch {record['epoch']}{of}"]
        for key, label, form in (("val_acc", "val_acc", ".2f"), ("best_acc", "best", ".2f"), ("lr", "lr", ".4g")):
            if isinstance(record.get(key), (int, float)):
                parts.append(f"{label} {record[key]:{form}}")
        if isinstance(record.get("img_per_sec"), (int, float)):
            parts.append(f"{record['img_per_sec']:,.0f} img/s")
        if self.planned:
            left = self.planned - record["epoch"]
            parts.append(f"eta {fmt_duration(left * sum(self.epoch_times) / len(self.epoch_times))}")
        return "  ".join(parts)


INTERRUPTED = "the agent was interrupted"
INTERRUPTS = {signal.SIGINT: INTERRUPTED, signal.SIGTERM: INTERRUPTED}  # Ctrl-C, kill, a scheduler's preemption


def lease_for(stale_after: float, grace: float, poll: float = defaults.POLL) -> float:
    """How long an agent keeps its trials running without renewing its lease: it must have ended them (SIGTERM,
    then SIGKILL after `grace`) before other agents count them as crashed, `stale_after` after the last renewal,
    allowing for one store operation's retries and a round of the loop."""
    return max(0.0, stale_after - grace - defaults.DB_RETRY - 2 * poll)


def grace_error(grace: float, stale_after: float = defaults.STALE_AFTER, heartbeat: float = defaults.HEARTBEAT) -> str:
    """Why `--grace` is too long for the heartbeat window ('' if it is not): an agent must be able to miss a
    heartbeat and still end its trials before others count them as crashed."""
    if lease_for(stale_after, grace) >= heartbeat:
        return ""
    most = max(0.0, lease_for(stale_after, 0.0) - heartbeat)
    return (
        f"--grace: {grace:g} s leaves an agent no time to ride through a database error within the heartbeat "
        f"window (HPSEARCH_STALE_AFTER={stale_after:g} s); allowed: at most {most:g} s, or a longer "
        "HPSEARCH_STALE_AFTER"
    )


class Agent:
    def __init__(
        self,
        controller: Controller,
        slots: list[Slot],
        launch: Launch,
        count: int | None = None,
        grace: float = defaults.GRACE,
        hang_timeout: float = defaults.HANG_TIMEOUT,
        stale_after: float = defaults.STALE_AFTER,
        heartbeat: float = defaults.HEARTBEAT,
        poll: float = defaults.POLL,
        echo: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        ends_at: float | None = None,
        signals: dict[int, str] | None = None,
    ):
        """`ends_at` (on `clock`): when this agent's allocation ends (a SLURM job's time limit); it claims no trial
        after `reserve()` before it. `signals`: those that preempt every trial, each with the reason its trials
        are recorded with (default: SIGINT and SIGTERM, INTERRUPTS)."""
        self.controller, self.slots, self.launch = controller, slots, launch
        self.count, self.grace, self.hang_timeout = count, grace, hang_timeout
        self.heartbeat, self.poll, self.echo, self.clock, self.sleep = heartbeat, poll, echo, clock, sleep
        self.lease = lease_for(stale_after, grace, poll)
        self.ends_at, self.signals = ends_at, INTERRUPTS if signals is None else signals
        self.preempted: list[str] = []  # trials it ended on a signal, recorded preempted
        self.signum: int | None = None
        self.error: str | None = None  # why the agent gave up, for one line on stderr
        self.running: dict[int, Running] = {}  # slot index -> trial
        self.launched = self.failures = self.successes = 0
        self.first_epoch_wait = 0.0  # longest time a trial of this agent took to its first checkpoint
        self.last_renewal = clock()  # when the last successful renewal of the lease began
        self.next_beat = self.last_renewal + heartbeat
        self.unreachable_since: float | None = None
        self.round_began = self.last_renewal

    # ---- the loop ----
    def run(self, fence: bool = True) -> int:
        """Run trials until the sweep or --count is done; returns the exit code. With `fence`, a thread ends the
        trials and the process if the loop itself is stuck past the lease (see `_fence`)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in self.signals}
        done = threading.Event()
        if fence:
            threading.Thread(target=self._fence, args=(done,), name="lease-fence", daemon=True).start()
        try:
            return self._loop()
        finally:
            done.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _fence(self, done: threading.Event) -> None:
        """The last line of the lease: a database call that never returns (a server or a proxy that keeps the
        connection open but does not answer) would keep the loop from ever checking its lease. If the loop has
        been stuck in one round past the lease and one more store operation's time, this thread ends the trials
        (before other agents may take them) and the process, with one line. After the whole process was stopped
        (SIGSTOP, a suspended machine) it first lets the loop have its round: that is the loop's own case."""
        tick = since = self.clock()  # since: when the fence last saw the loop begin a round, or woke
        seen_round = self.round_began
        while not done.wait(defaults.FENCE_TICK):
            now = self.clock()
            if now - tick > 3 * defaults.FENCE_TICK or self.round_began != seen_round:  # woke from a stop, or moved on
                since, seen_round = now, self.round_began
            tick = now
            stuck = now - since > defaults.DB_RETRY + 2 * self.poll + self.grace  # (a round may end trials)
            if self.running and stuck and now - self.last_renewal > self.lease + defaults.DB_RETRY:
                running = list(self.running.values())
                end_groups([rn.proc for rn in running], self.grace)  # (real time: the loop's clock is stuck)
                ids = f"trial{'s' * (len(running) > 1)} {', '.join(rn.trial.id for rn in running)}"
                print(f"hpsearch agent: error: the sweep database has not answered for {now - self.last_renewal:.0f} "
                      f"s (a call to it never returned); ended {ids}", file=sys.stderr, flush=True)  # fmt: skip
                os._exit(1)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def _loop(self) -> int:
        while True:
            self.round_began = self.clock()
            if self.signum is not None:
                why = self.signals.get(self.signum, INTERRUPTED)
                self._end_all(State.PREEMPTED, why, 128 + self.signum, record=True)
                return 128 + self.signum
            try:
                if not self._keep_lease():
                    return 1
                if self.unreachable_since is None:  # no claims while the database does not answer
                    self._try(self._claim)
                for i in list(self.running):
                    self._try(self._supervise, i)
            except Lost as e:
                self._give_up(str(e), record=True)
                return 1
            except StoreError as e:  # one that will not pass (a wrong password, a dropped table, a full disk)
                self._give_up(str(e), record=False)
                return 1
            if not self.running and not self._claiming():
                break
            self.sleep(self.poll)
        if self.broken:
            self.echo(f"agent: {self.failures} trials failed in a row at the start; stopping (see their errors above)")
            return 1
        return 0

    def _try(self, step: Callable[..., None], *args: Any) -> None:
        """One step of the round; one that needs the database while it does not answer waits for the next."""
        try:
            step(*args)
        except StoreUnavailable as e:
            self._unreachable(e)

    @property
    def broken(self) -> bool:
        return self.failures >= defaults.MAX_EARLY_FAILURES and self.successes == 0

    def reserve(self) -> float:
        """Seconds before the allocation's end after which no new trial starts: a trial that could not reach its
        first checkpoint would only waste the time (the longest such wait seen so far, or 2 minutes)."""
        return max(defaults.RESERVE, self.first_epoch_wait)

    def _claiming(self) -> bool:
        """Whether the agent still takes new trials."""
        if self.controller.done or self.broken or (self.count and self.launched >= self.count):
            return False
        return self.ends_at is None or self.clock() + self.reserve() < self.ends_at

    # ---- the lease ----
    def _keep_lease(self) -> bool:
        """Renew the lease when due (at once if it may have lapsed: after a freeze nothing is written before
        this); ends the trials another agent took over. False when the agent gave up."""
        now = self.clock()
        if now < self.next_beat and now - self.last_renewal <= self.lease:
            return True
        try:
            lost = self.controller.beat([rn.trial for rn in self.running.values()])
        except StoreUnavailable as e:
            self._unreachable(e)
            if self.clock() - self.last_renewal > self.lease:
                silent = f"the sweep database did not answer for {self.clock() - self.last_renewal:.0f} s ({e})"
                self._give_up(silent + ("; this agent's lease on its trials lapsed" if self.running else ""), False)
                return False
            self.next_beat = self.clock() + defaults.UNREACHABLE_BEAT
            return True
        self.last_renewal, self.next_beat = now, now + self.heartbeat
        if self.unreachable_since is not None:
            self.echo(f"agent: the sweep database answers again, after {now - self.unreachable_since:.0f} s")
            self.unreachable_since = None
        for i, rn in list(self.running.items()):
            if rn.trial.id in lost:
                self._taken_over(i)
        return True

    def _unreachable(self, e: StoreUnavailable) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = self.last_renewal
            left = max(0.0, self.last_renewal + self.lease - self.clock())
            self.echo(f"agent: the sweep database is unreachable ({e}); trials run on, records wait; "
                      f"this agent ends its trials in {left:.0f} s unless it answers")  # fmt: skip

    def _end(self, procs: list[Process]) -> None:
        end_groups(procs, self.grace, self.clock, self.sleep)

    def _taken_over(self, i: int) -> None:
        rn = self.running.pop(i)
        self._end([rn.proc])
        self.controller.abandon(rn.trial)
        self.echo(
            f"trial {rn.trial.id}: another agent took it over while this one could not renew its lease; "
            "ended this copy without recording anything"
        )

    def _give_up(self, why: str, record: bool) -> None:
        """End every trial (they resume elsewhere from their checkpoints) and leave `why` for stderr; with `record`
        (the store still answers), recorded crashed, or as they ended if they had."""
        ids = self._end_all(State.CRASHED, why, None, record)
        self.error = why + (f"; ended trial{'s' * (len(ids) > 1)} {', '.join(ids)}" if ids else "")

    def _end_all(self, state: State, why: str, exit_code: int | None, record: bool) -> list[str]:
        """The one way the agent ends all its trials (a signal, a lost server, a database gone for good): ends
        their processes together, then, with `record`, records each with the epochs it wrote meanwhile and how it
        ended (as it had, or `state` with `why`); a trial that cannot be recorded is abandoned (it counts as
        crashed once its heartbeats stop). Returns the trials' ids."""
        running = list(self.running.values())
        self.running.clear()
        self._end([rn.proc for rn in running])
        for rn in running:
            recorded = False
            if record:
                if rn.outcome is None:
                    self._read(rn)  # the epochs it finished before it ended
                out = rn.outcome or Outcome(state, exit_code if exit_code is not None else rn.proc.poll(), why, {}, "")
                try:
                    self._record(rn)
                    self.controller.finish(rn.trial, out.state, out.exit_code, out.error, out.summary)
                    recorded = True
                except NotOwner:
                    pass
                except StoreError as e:
                    print(f"hpsearch agent: warning: trial {rn.trial.id} could not be recorded {out.state} ({e}); it "
                          "counts as crashed once its heartbeats stop, and resumes then", file=sys.stderr)  # fmt: skip
            if not recorded:
                self.controller.abandon(rn.trial)
            elif rn.outcome:
                self.echo(rn.outcome.message)
            elif state == State.PREEMPTED:
                self.preempted.append(rn.trial.id)
                self.echo(f"trial {rn.trial.id} preempted; the next agent on this sweep resumes it from its checkpoint")
        return [rn.trial.id for rn in running]

    # ---- trials ----
    def _claim(self) -> None:
        for i, slot in enumerate(self.slots):
            if i in self.running or not self._claiming():
                continue
            claim = self.controller.next_trial(i)
            if claim is None:
                continue
            self.launched += 1
            self._start(i, slot, claim)

    def _start(self, i: int, slot: Slot, claim: Claim) -> None:
        trial, how = claim.trial, claim.how
        proc = self.launch(trial, slot)
        if how == "restarted":
            self.echo(
                f"trial {trial.id}: no checkpoint of it at {proc.checkpoint} (it ran on another machine, or stopped "
                "before its first epoch ended); restarting it from epoch 0"
            )
        if how != "started" and trial.pgid and trial.host == socket.gethostname():
            # A frozen agent's copy that may still run here: it must not write into the folder the resumed one uses.
            if end_stale_copy(trial.pgid, proc.dir, self.grace):
                self.echo(f"trial {trial.id}: ended the copy its previous agent left running")
        proc.start()
        params = leaves(trial.params)
        workers = f" x{slot.nproc}" if slot.gpus is None else ""
        where = slot.where.replace(" (", f"{workers} (") if slot.nodes > 1 else slot.where + workers
        self.echo(f"trial {trial.id} {how} on {where}: " + " ".join(f"{k}={v}" for k, v in params.items()))
        seen = trial.epochs if how in (Start.RESUMED, Start.PROMOTED) else 0
        self.running[i] = Running(trial, proc, slot, claim.planned, seen, self.clock())
        try:
            self._register(self.running[i])
        except NotOwner:
            self._taken_over(i)

    def _register(self, rn: Running) -> None:
        """Tell the controller where the trial's processes run, once (it waits if the database does not answer)."""
        if not rn.registered:
            self.controller.started(rn.trial, rn.proc.pgid)
            rn.registered = True

    def _read(self, rn: Running) -> bool:
        """Take the epochs that appeared in the trial's metrics file and announce the new ones; whether any new one
        came (not one a resumed trial's file still holds from before)."""
        records = rn.proc.new_epochs()
        new = False
        for record in records:
            rn.pending.append(record)
            rn.last = record
            if record["epoch"] > rn.seen:
                if not rn.epoch_times:
                    self.first_epoch_wait = max(self.first_epoch_wait, self.clock() - rn.last_progress)
                rn.progressed(record, self.clock())
                self.echo(rn.progress_line(record))
                new = True
        return new

    def _record(self, rn: Running) -> None:
        if rn.pending:  # one write for the epochs of a round (or of an outage)
            self.controller.record_epochs(rn.trial, rn.pending)
            rn.pending = []

    def _supervise(self, i: int) -> None:
        """Record the trial's new epochs; end it if it exited, the controller stops it, or it hangs; record how it
        ended. A record that cannot be written now waits for the next round."""
        rn = self.running[i]
        offline = self.unreachable_since is not None  # records wait for the heartbeat to get through again
        try:
            if rn.outcome is None:
                new = self._read(rn)
                if not offline:
                    try:
                        self._register(rn)
                        self._record(rn)
                    except StoreUnavailable as e:  # the watchdog and exits are still seen to; stop decisions wait
                        self._unreachable(e)
                        new = False
                rn.outcome = self._ended(rn, new)
            if rn.outcome is None or offline:
                return
            self._register(rn)
            self._record(rn)
            out = rn.outcome
            self.controller.finish(rn.trial, out.state, out.exit_code, out.error, out.summary)
        except NotOwner:
            self._taken_over(i)
            return
        self.echo(out.message)
        del self.running[i]

    def _ended(self, rn: Running, new_epochs: bool) -> Outcome | None:
        """How the trial ended, once its processes are gone; None while it runs on."""
        trial, proc = rn.trial, rn.proc
        code = proc.poll()
        # (a trial whose records reach its planned epochs has finished: nothing is left to decide)
        asked = (new_epochs or self.controller.stops_anytime) and not (rn.planned and rn.seen >= rn.planned)
        decision = Decision.CONTINUE
        if code is None and asked and self.unreachable_since is None:
            decision = self.controller.decide(trial)
        if decision != Decision.CONTINUE:
            self._end([proc])
            self.successes += 1
            if decision == Decision.PAUSE:
                message = (f"trial {trial.id} paused by {self.controller.stopper} after epoch {rn.seen}; a promotion "
                           "resumes it from its checkpoint")  # fmt: skip
                return Outcome(State.PAUSED, proc.poll(), None, rn.last, message)
            message = f"trial {trial.id} stopped early by {self.controller.stopper} after epoch {rn.seen}"
            return Outcome(State.STOPPED, proc.poll(), None, rn.last, message)
        if code is None:
            quiet = self.clock() - rn.last_progress
            if quiet <= rn.hang_limit(self.hang_timeout):
                return None
            self._end([proc])  # SIGTERM, then SIGKILL: a stopped or deadlocked worker gets the latter
            self.failures += 1
            error = f"no progress for {quiet:.0f} s after epoch {rn.seen}"
            return Outcome(
                State.FAILED, proc.poll(), error, {}, f"trial {trial.id} failed: {error}; ended its processes"
            )
        self._read(rn)  # the last epochs, written just before it exited
        self._end([proc])  # workers torchrun left behind, if any
        if code == 0:
            self.successes += 1
            summary = proc.summary()
            best = summary.get("best_acc")
            said = f": best_acc={best:.2f}" if isinstance(best, (int, float)) else ""
            return Outcome(State.FINISHED, 0, None, summary, f"trial {trial.id} finished{said}")
        self.failures += 1
        error = proc.error() or f"exit code {code}"
        return Outcome(State.FAILED, code, error, {}, f"trial {trial.id} failed: {error}")
