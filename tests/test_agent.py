"""The agent's rules, with a fake controller, fake trial processes and a fake clock (as wandb's own agent tests use
a dummy Popen): early failures, --count, hang limits, stops, preemption, progress lines, slots, the lease. Real
processes, stores and servers are in test_sweep.py, test_supervisor.py, test_lease.py and test_wandb_backend.py."""

from __future__ import annotations

import functools
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hpsearch import defaults
from hpsearch.sweep.agent import Agent, grace_error, lease_for
from hpsearch.sweep.controller import Claim, Lost
from hpsearch.sweep.slots import Slot
from hpsearch.sweep.store import NotOwner, State, StoreError, StoreUnavailable, Trial
from hpsearch.sweep.trial import end_groups


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.at: dict[float, Any] = {}  # time -> a callback run once the clock passes it

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for t in sorted(self.at):
            if t <= self.now:
                self.at.pop(t)()


@dataclass
class Script:
    """What a fake trial does: finishes epochs at these times (seconds after its start), then exits with `code`
    at `exit_at` (None: runs on, or hangs after its last epoch)."""

    epochs: list[float]
    exit_at: float | None = None
    code: int = 0
    deaf: bool = False  # ignores SIGTERM (a stuck worker): only SIGKILL ends it


class FakeProc:
    def __init__(self, clock: Clock, trial: Trial, slot: Slot, script: Script):
        self.clock, self.trial, self.slot, self.script = clock, trial, slot, script
        self.dir = Path("/nonexistent") / trial.id
        self.checkpoint = self.dir / "checkpoint.pt"
        self.started_at: float | None = None
        self.terminated_at: float | None = None
        self.signals: list[tuple[int, float]] = []  # (signal, when) as the group received them
        self.read = 0
        self.ended = False

    def start(self) -> int:
        self.started_at = self.clock.now
        return self.pgid

    @property
    def pgid(self) -> int:
        return -1  # never a real group: nothing here sends a real signal

    def send(self, sig: int) -> None:
        self.signals.append((sig, self.clock.now))
        if self.terminated_at is None and (sig == signal.SIGKILL or not self.script.deaf):
            self.terminated_at = self.clock.now

    def alive(self) -> bool:
        return self.started_at is not None and self.terminated_at is None

    def _elapsed(self) -> float:
        return (self.terminated_at if self.terminated_at is not None else self.clock.now) - self.started_at

    def poll(self) -> int | None:
        if self.terminated_at is not None:
            return -signal.SIGTERM
        if self.script.exit_at is not None and self._elapsed() >= self.script.exit_at:
            return self.script.code
        return None

    def new_epochs(self) -> list[dict[str, Any]]:
        done = [t for t in self.script.epochs if t <= self._elapsed()]
        out = [record(i + 1, len(self.script.epochs), t) for i, t in enumerate(done)][self.read :]
        self.read = len(done)
        return out

    def summary(self) -> dict[str, Any]:
        return {"best_acc": 50.0 + len(self.script.epochs)}

    def error(self) -> str:
        return "hpsearch train: error: boom"


def record(epoch: int, epochs: int, t: float) -> dict[str, Any]:
    return {"epoch": epoch, "val_acc": 10.0 * epoch, "best_acc": 10.0 * epoch, "lr": 0.1, "img_per_sec": 1234.5,
            "epoch_time": 10.0}  # fmt: skip


@dataclass
class FakeController:
    """Hands out one trial per script, in order; records what the agent tells it."""

    scripts: list[Script]
    stopper: str = "hyperband"
    stops_anytime: bool = False
    done: bool = False
    stop_after: dict[str, int] = field(default_factory=dict)  # trial id -> stop once it recorded this many epochs
    stop_now: set[str] = field(default_factory=set)  # trials a server said stop for
    pause_after: dict[str, int] = field(default_factory=dict)  # trial id -> pause once it recorded this many epochs
    unavailable: tuple[float, float] | None = None  # (from, until) on the clock: the database does not answer
    taken: set[str] = field(default_factory=set)  # trials another agent took over
    lost: str | None = None
    clock: Clock | None = None
    claims: list[tuple[int, Trial]] = field(default_factory=list)
    epochs: dict[str, list[int]] = field(default_factory=dict)
    finished: dict[str, tuple] = field(default_factory=dict)
    beats: list[float] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    def _check(self, trial_id: str | None = None) -> None:
        if self.unavailable and self.unavailable[0] <= self.clock.now < self.unavailable[1]:
            raise StoreUnavailable("db: cannot write: connection refused")
        if trial_id in self.taken:
            raise NotOwner(trial_id)

    def next_trial(self, slot: int) -> Claim | None:
        self._check()
        if len(self.claims) == len(self.scripts):
            self.done = True
            return None
        n = len(self.claims) + 1
        trial = Trial(f"t{n}", "s", n, {"lr": 0.1 * n, "epochs": len(self.scripts[n - 1].epochs)}, State.RUNNING)
        self.claims.append((slot, trial))
        return Claim(trial, "started", trial.params["epochs"])

    def started(self, trial: Trial, pgid: int) -> None:
        self._check(trial.id)

    def record_epochs(self, trial: Trial, records: list[dict[str, Any]]) -> None:
        self._check(trial.id)
        self.epochs.setdefault(trial.id, []).extend(r["epoch"] for r in records)

    def decide(self, trial: Trial) -> str:
        done = len(self.epochs.get(trial.id, []))
        if trial.id in self.stop_now or done >= self.stop_after.get(trial.id, 10**9):
            return "stop"
        return "pause" if done >= self.pause_after.get(trial.id, 10**9) else "continue"

    def beat(self, trials: list[Trial]) -> list[str]:
        if self.lost:
            raise Lost(self.lost)
        self._check()
        self.beats.append(self.clock.now)
        return [t.id for t in trials if t.id in self.taken]

    def finish(self, trial: Trial, state: State, exit_code=None, error=None, summary=None) -> None:  # noqa: ANN001
        self._check(trial.id)
        self.finished[trial.id] = (state, exit_code, error, summary)

    def abandon(self, trial: Trial) -> None:
        self.abandoned.append(trial.id)

    def close(self) -> None:
        pass


def make(scripts: list[Script], slots: int = 1, **kw: Any) -> tuple[Agent, FakeController, dict[str, FakeProc], list]:
    clock = Clock()
    controller = FakeController(scripts, clock=clock)
    procs: dict[str, FakeProc] = {}
    lines: list[str] = []

    def launch(trial: Trial, slot: Slot) -> FakeProc:
        procs[trial.id] = FakeProc(clock, trial, slot, scripts[trial.seq - 1])
        return procs[trial.id]

    options = {"grace": 2.0, "hang_timeout": 30.0, "stale_after": 60.0, "heartbeat": 5.0, "poll": 0.5, **kw}
    agent = Agent(controller, [Slot([i], 1) for i in range(slots)], launch, echo=lines.append, clock=clock,
                  sleep=clock.sleep, **options)  # fmt: skip
    agent.run = functools.partial(agent.run, fence=False)  # the fence thread watches real time
    return agent, controller, procs, lines


def test_three_failures_before_any_success_stop_the_agent():
    agent, controller, procs, lines = make([Script([], exit_at=1.0, code=1)] * 5)
    assert agent.run() == 1
    assert len(controller.claims) == 3  # no fourth trial
    assert [f[0] for f in controller.finished.values()] == [State.FAILED] * 3
    assert controller.finished["t1"][2] == "hpsearch train: error: boom"
    assert lines[-1] == "agent: 3 trials failed in a row at the start; stopping (see their errors above)"


def test_a_success_first_lets_the_agent_go_on_through_failures():
    agent, controller, *_ = make([Script([1.0], exit_at=1.5)] + [Script([], exit_at=1.0, code=1)] * 4)
    assert agent.run() == 0
    assert len(controller.claims) == 5


def test_a_failure_then_a_success_the_agent_goes_on():
    agent, controller, *_ = make(
        [Script([], exit_at=1.0, code=1), Script([1.0], exit_at=1.5), Script([1.0], exit_at=1.5)]
    )
    assert agent.run() == 0
    assert [f[0] for f in controller.finished.values()] == [State.FAILED, State.FINISHED, State.FINISHED]


def test_count_limits_the_trials_started():
    agent, controller, *_ = make([Script([1.0], exit_at=1.0)] * 5, count=2)
    assert agent.run() == 0
    assert [t.id for _, t in controller.claims] == ["t1", "t2"]
    assert not controller.done


def test_progress_lines_carry_the_epoch_numbers_and_an_eta_from_the_trainers_epoch_times():
    agent, controller, procs, lines = make([Script([10.0, 20.0, 30.0], exit_at=30.5)])
    assert agent.run() == 0
    progress = [line for line in lines if line.startswith("[t1 ")]
    assert progress == [
        "[t1 GPU 0] epoch 1/3  val_acc 10.00  best 10.00  lr 0.1  1,234 img/s  eta 20s",
        "[t1 GPU 0] epoch 2/3  val_acc 20.00  best 20.00  lr 0.1  1,234 img/s  eta 10s",
        "[t1 GPU 0] epoch 3/3  val_acc 30.00  best 30.00  lr 0.1  1,234 img/s  eta 0s",
    ]
    assert lines[0] == "trial t1 started on GPU 0: lr=0.1 epochs=3"
    assert lines[-1] == "trial t1 finished: best_acc=53.00"
    assert controller.epochs["t1"] == [1, 2, 3]
    assert controller.finished["t1"] == (State.FINISHED, 0, None, {"best_acc": 53.0})


@pytest.mark.parametrize(
    "epochs, limit",
    [
        ([], 3 * 30.0),  # before the first epoch: 3x the timeout (30 s)
        ([5.0, 10.0], 30.0),  # 5 s epochs: 5 x 5 s is less than the timeout, which holds
        ([10.0, 20.0], 5 * 10.0),  # 10 s epochs: 5 x 10 s (the first epoch's wait includes start-up: not counted)
        ([10.0, 30.0], 5 * 20.0),  # its slowest epoch, 20 s
    ],
)
def test_the_hang_limit_is_the_timeout_or_five_slowest_epochs_and_three_times_that_before_the_first(
    epochs: list[float], limit: float
):
    agent, controller, procs, lines = make([Script(epochs)])
    assert agent.run() == 0  # one failure does not stop the agent; then the sweep is done
    proc = procs["t1"]
    last = epochs[-1] if epochs else 0.0
    assert last + limit < proc.terminated_at - proc.started_at <= last + limit + 0.5  # the first look past it
    assert controller.finished["t1"][:3] == (
        State.FAILED, -signal.SIGTERM, f"no progress for {limit:.0f} s after epoch {len(epochs)}"
    )  # fmt: skip
    assert lines[-1] == f"trial t1 failed: no progress for {limit:.0f} s after epoch {len(epochs)}; ended its processes"


def test_a_stop_from_the_controller_ends_only_that_trial_and_records_its_last_epoch():
    agent, controller, procs, lines = make([Script([1.0, 2.0, 3.0, 4.0], exit_at=4.5)] * 2, slots=2)
    controller.stop_after = {"t2": 2}
    assert agent.run() == 0
    assert procs["t2"].terminated_at is not None and procs["t1"].terminated_at is not None  # t1: after it exited
    state, _, _, summary = controller.finished["t2"]
    assert state == State.STOPPED and summary["epoch"] == 2
    assert controller.finished["t1"][0] == State.FINISHED
    assert "trial t2 stopped early by hyperband after epoch 2" in lines


def test_a_pause_ends_the_trial_and_records_it_paused_and_a_trial_at_its_last_epoch_is_never_asked():
    agent, controller, procs, lines = make([Script([1.0, 2.0, 3.0, 4.0], exit_at=4.5)] * 2, slots=2)
    controller.pause_after = {"t2": 2}
    controller.stop_after = {"t1": 4}  # its 4th epoch is its last: it has finished, whatever a stop rule says
    assert agent.run() == 0
    state, _, _, summary = controller.finished["t2"]
    assert state == State.PAUSED and summary["epoch"] == 2 and procs["t2"].terminated_at is not None
    assert "trial t2 paused by hyperband after epoch 2; a promotion resumes it from its checkpoint" in lines
    assert controller.finished["t1"][0] == State.FINISHED


def test_slots_run_trials_at_once_each_in_its_own_slot():
    agent, controller, procs, lines = make([Script([5.0], exit_at=5.0)] * 4, slots=2)
    assert agent.run() == 0
    assert [slot for slot, _ in controller.claims] == [0, 1, 0, 1]
    assert [procs[f"t{i}"].slot.gpus for i in (1, 2, 3, 4)] == [[0], [1], [0], [1]]
    assert procs["t1"].started_at == procs["t2"].started_at  # the second did not wait for the first
    assert "trial t2 started on GPU 1: lr=0.2 epochs=1" in lines


def test_a_signal_preempts_every_running_trial():
    agent, controller, procs, lines = make([Script([1.0, 2.0, 3.0, 50.0], exit_at=60)] * 2, slots=2)
    agent.clock.at[2.2] = lambda: setattr(agent, "signum", signal.SIGTERM)
    assert agent.run() == 128 + signal.SIGTERM
    for t in ("t1", "t2"):
        assert procs[t].terminated_at == pytest.approx(2.5)
        assert controller.finished[t] == (State.PREEMPTED, 143, "the agent was interrupted", {})
        assert controller.epochs[t] == [1, 2]
    assert len(controller.claims) == 2


def test_an_unreachable_database_is_ridden_through_and_the_records_catch_up():
    agent, controller, procs, lines = make([Script([5.0, 10.0, 15.0, 20.0], exit_at=20.5)])
    controller.unavailable = (6.0, 16.0)
    assert agent.run() == 0
    assert procs["t1"].terminated_at > 20  # ran to its end: only ended after it exited
    assert controller.epochs["t1"] == [1, 2, 3, 4]  # every epoch recorded, the ones of the outage after it
    assert controller.finished["t1"][0] == State.FINISHED
    down = [line for line in lines if line.startswith("agent: the sweep database")]
    assert len(down) == 2
    assert down[0].startswith("agent: the sweep database is unreachable (db: cannot write: connection refused); ")
    assert re.fullmatch(r"agent: the sweep database answers again, after 1[0-6] s", down[1])


def test_an_agent_that_cannot_renew_its_lease_ends_its_trials_before_the_lease_lapses():
    agent, controller, procs, lines = make([Script([5.0] + [10.0 * i for i in range(1, 30)])], stale_after=60.0)
    controller.unavailable = (7.0, 10**9)
    assert agent.run() == 1
    renewed = max(controller.beats)
    lease = lease_for(60.0, 2.0, 0.5)
    assert lease == 60.0 - 2.0 - defaults.DB_RETRY - 1.0 > 0
    ended = procs["t1"].terminated_at
    assert renewed + lease < ended <= renewed + lease + 1.5  # given up on the first look past the lease
    assert ended + agent.grace < renewed + 60.0  # ... and ended before the others may count it crashed
    assert "t1" not in controller.finished  # nothing could be recorded
    assert re.fullmatch(
        r"the sweep database did not answer for \d+ s \(db: cannot write: connection refused\); this agent's lease "
        r"on its trials lapsed; ended trial t1",
        agent.error,
    )


def test_a_grace_that_leaves_no_time_to_miss_a_heartbeat_is_refused():
    # lease = window - grace - a store operation's retries (7.5 s) - two rounds (1 s); it must cover a heartbeat
    assert grace_error(46.5, stale_after=60.0, heartbeat=5.0) == ""
    assert grace_error(46.6, stale_after=60.0, heartbeat=5.0) == (
        "--grace: 46.6 s leaves an agent no time to ride through a database error within the heartbeat window "
        "(HPSEARCH_STALE_AFTER=60 s); allowed: at most 46.5 s, or a longer HPSEARCH_STALE_AFTER"
    )


def test_a_trial_taken_over_by_another_agent_is_ended_here_and_records_nothing():
    agent, controller, procs, lines = make([Script([5.0, 10.0, 15.0], exit_at=15.5)] * 2)
    agent.clock.at[7.0] = lambda: controller.taken.add("t1")
    assert agent.run() == 0
    assert procs["t1"].terminated_at < 7.0 + agent.heartbeat + 0.5
    assert "t1" not in controller.finished and controller.epochs["t1"] == [1]
    assert (
        "trial t1: another agent took it over while this one could not renew its lease; ended this copy without "
        "recording anything"
    ) in lines
    assert controller.finished["t2"][0] == State.FINISHED  # the slot went on with the next trial


def test_a_lost_controller_ends_every_trial_at_once():
    agent, controller, procs, lines = make([Script([5.0, 10.0, 15.0], exit_at=15.5)] * 2, slots=2)
    agent.clock.at[6.0] = lambda: setattr(controller, "lost", "lost the W&B server at http://x: connection refused")
    assert agent.run() == 1
    for t in ("t1", "t2"):
        assert procs[t].terminated_at <= 6.0 + agent.heartbeat + 0.5
        assert controller.finished[t][0] == State.CRASHED
    assert agent.error == "lost the W&B server at http://x: connection refused; ended trials t1, t2"


def test_no_trial_is_claimed_that_could_not_start_before_the_allocation_ends():
    agent, controller, procs, lines = make([Script([30.0], exit_at=30.0)] * 5, ends_at=200.0)
    assert agent.run() == 0
    starts = [p.started_at for p in procs.values()]
    assert starts == [0.0, 30.5, 61.0]  # the next would start at 91.5, within 120 s of the end


def test_an_idle_agent_whose_database_stays_away_gives_up_after_as_long():
    agent, controller, procs, lines = make([Script([5.0], exit_at=5.0)])
    controller.unavailable = (0.0, 10**9)
    assert agent.run() == 1 and not procs
    assert re.fullmatch(r"the sweep database did not answer for \d+ s \(db: cannot write: connection refused\)",
                        agent.error)  # fmt: skip
    assert agent.clock.now <= agent.lease + 1.5


def test_a_database_error_that_will_not_pass_ends_the_trials_with_one_line():
    agent, controller, procs, lines = make([Script([5.0, 10.0, 15.0], exit_at=15.5)])

    def dropped(trial: Trial, records: list[dict]) -> None:
        raise StoreError("db: cannot write: no such table: history")

    controller.record_epochs = dropped
    assert agent.run() == 1
    assert procs["t1"].terminated_at == pytest.approx(5.0)
    assert agent.error == "db: cannot write: no such table: history; ended trial t1"


def test_a_stop_that_comes_between_epochs_is_acted_on_when_the_controller_says_stops_come_any_time():
    agent, controller, procs, lines = make([Script([5.0, 20.0, 30.0], exit_at=30.5)])
    controller.stops_anytime = True  # as a W&B server's stop, on a heartbeat
    agent.clock.at[7.0] = lambda: controller.stop_now.add("t1")
    assert agent.run() == 0
    assert 7.0 <= procs["t1"].terminated_at <= 7.5
    assert controller.finished["t1"][0] == State.STOPPED and controller.epochs["t1"] == [1]


def test_a_trial_that_ended_while_the_database_was_away_is_recorded_as_it_ended_on_a_signal():
    agent, controller, procs, lines = make([Script([2.0, 4.0], exit_at=4.5)] + [Script([50.0], exit_at=60)])
    controller.unavailable = (3.0, 6.0)
    agent.clock.at[6.2] = lambda: setattr(agent, "signum", signal.SIGINT)
    assert agent.run() == 130
    assert controller.finished["t1"] == (State.FINISHED, 0, None, {"best_acc": 52.0})  # not preempted
    assert agent.preempted == [] and "trial t1 finished: best_acc=52.00" in lines
    assert controller.epochs["t1"] == [1, 2]


def test_a_taken_over_trial_frees_its_slot_in_the_controller():
    agent, controller, procs, lines = make([Script([5.0, 10.0, 15.0], exit_at=15.5)] * 2)
    agent.clock.at[7.0] = lambda: controller.taken.add("t1")
    assert agent.run() == 0
    assert controller.abandoned == ["t1"]


def test_a_trial_deaf_to_sigterm_is_killed_after_the_grace_period():
    agent, controller, procs, lines = make([Script([5.0, 10.0, 15.0], exit_at=15.5, deaf=True)], grace=2.0)
    controller.stop_after["t1"] = 1
    assert agent.run() == 0
    (term, at), (kill, later) = procs["t1"].signals
    assert (term, kill) == (signal.SIGTERM, signal.SIGKILL) and later - at == pytest.approx(2.0, abs=0.1)
    assert controller.finished["t1"][0] == State.STOPPED


@dataclass
class Group:
    pgid: int
    deaf: bool = False
    ended: bool = False
    got: list[tuple[int, float]] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)

    def send(self, sig: int) -> None:
        self.got.append((sig, self.clock.now))

    def alive(self) -> bool:
        return not self.got or (self.deaf and self.got[-1][0] != signal.SIGKILL)


def test_the_terminator_escalates_after_the_grace_and_spares_a_group_it_already_ended():
    clock = Clock()
    quick, stuck, done = Group(1, clock=clock), Group(2, deaf=True, clock=clock), Group(3, ended=True, clock=clock)
    done.got = []  # a group ended before: its number (alive again: another group took it) is not ours
    end_groups([quick, stuck, done], 10.0, clock, clock.sleep)
    assert quick.got == [(signal.SIGTERM, 0.0)]  # gone at once: no SIGKILL
    assert [sig for sig, _ in stuck.got] == [signal.SIGTERM, signal.SIGKILL]
    assert stuck.got[1][1] == pytest.approx(10.0, abs=0.1)  # after the grace, not before
    assert done.got == []


def test_ending_everything_records_the_epochs_written_meanwhile_or_abandons():
    """A signal while the database was away: the epochs read since, and the preemption, are recorded once it
    answers; a trial the store cannot record is abandoned (it counts as crashed once its heartbeats stop)."""
    agent, controller, procs, lines = make([Script([2.0, 4.0, 6.0, 8.0])], slots=1)
    controller.unavailable = (3.0, 7.9)  # epochs 2 and 3 wait in memory; epoch 4 comes as the signal does
    agent.clock.at[7.6] = lambda: setattr(agent, "signum", signal.SIGTERM)
    assert agent.run() == 128 + signal.SIGTERM
    assert controller.epochs["t1"] == [1, 2, 3, 4] and controller.finished["t1"][0] == State.PREEMPTED
    assert controller.abandoned == [] and agent.preempted == ["t1"]

    agent, controller, procs, lines = make([Script([2.0, 4.0, 6.0, 8.0])], slots=1)
    controller.unavailable = (3.0, 100.0)  # away for good: nothing can be recorded
    agent.clock.at[5.0] = lambda: setattr(agent, "signum", signal.SIGINT)
    assert agent.run() == 128 + signal.SIGINT
    assert controller.epochs["t1"] == [1] and "t1" not in controller.finished and controller.abandoned == ["t1"]
