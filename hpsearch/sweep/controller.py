"""The agent's whole view of a sweep: what to run next, what happened, when to stop a trial.

Two jobs, kept apart as optuna's RDB storage keeps its heartbeat apart from its samplers: deciding (an engine:
sweep/engine.py) and holding (`SweepController`, here): the agent holds the trials it runs through the store, as a
lease (claims, heartbeats, records, ends), whatever decides. A W&B server's sweep, where the server decides and
hands each slot its run, has its own controller beside this one (sweep/wandb_server.py). The agent
(sweep/agent.py) supervises trials the same way under either and never knows which one decides.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from hpsearch.defaults import MAX_RESUMES, STALE_AFTER
from hpsearch.sweep.engine import Decision, Engine, Suggestion, engine_for, promoted_from
from hpsearch.sweep.prior import is_prior
from hpsearch.sweep.spec import leaves
from hpsearch.sweep.status import planned_epochs
from hpsearch.sweep.store import State, Store, Sweep, Trial, Version, version

if TYPE_CHECKING:
    from hpsearch.sweep.wandb_server import ServerController

CLAIM_ATTEMPTS = 5  # suggestions made again because another agent claimed first, before trying next round
__all__ = ["Claim", "Controller", "Lost", "Start", "SweepController", "TrialCache", "controller_for"]


class Lost(Exception):
    """The controller cannot go on (a W&B server that stopped answering): the agent ends its trials and exits."""


class Start(StrEnum):
    """How a claimed trial starts, as the agent's lines say it."""

    STARTED = "started"  # a new trial
    RESUMED = "resumed"  # from its checkpoint
    PROMOTED = "promoted"  # a paused trial, from its checkpoint, to its next rung
    RESTARTED = "restarted"  # a trial that ran before, whose checkpoint this machine cannot see: from epoch 0


@dataclass
class Claim:
    """A trial handed to one of the agent's slots; planned: the epochs it is to run, where they are known."""

    trial: Trial
    how: Start
    planned: int | None = None


class Controller(Protocol):
    """Every method may raise `store.StoreUnavailable` (try again later: the agent rides through it until its
    lease lapses), `store.NotOwner` (the trial was taken over: end this copy, record nothing) or `Lost`."""

    stopper: str  # who stops trials early, as the agent's lines name it
    stops_anytime: bool  # a stop may come at any moment (a server's), not only after a new epoch of the trial
    done: bool  # nothing more will be handed out (grid exhausted, run_cap reached, the server said exit)

    def next_trial(self, slot: int) -> Claim | None:
        """A trial for the free slot `slot`, or None: nothing now (see `done`)."""

    def started(self, trial: Trial, pgid: int) -> None:
        """The trial's process group is running."""

    def record_epochs(self, trial: Trial, records: list[dict[str, Any]]) -> None:
        """Epochs the trainer finished (and wrote to its metrics file), in order."""

    def decide(self, trial: Trial) -> Decision:
        """Whether the running trial goes on, stops (the sweep's early termination) or pauses (a promotion
        scheduler's rung), after its new epochs."""

    def beat(self, trials: list[Trial]) -> list[str]:
        """Renew the agent's hold on its running trials; returns the ids of those it no longer holds."""

    def finish(
        self,
        trial: Trial,
        state: State,
        exit_code: int | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """The trial ended in `state`."""

    def abandon(self, trial: Trial) -> None:
        """The agent ended the trial without recording it (taken over by another agent, or the agent gave up)."""

    def close(self) -> None:
        """The agent is done with the controller. Raises Lost after a W&B server was lost (see
        ServerController.close)."""


class TrialCache:
    """A sweep's trials as last read. Decisions read every trial of the sweep, asked after every epoch of every
    running trial, so each call reads only the trials' versions (one query, no JSON) and then the trials whose
    version changed."""

    def __init__(self, store: Store, sweep_id: str):
        self.store, self.sweep_id = store, sweep_id
        self._known: dict[str, tuple[Version, Trial]] = {}

    def read(self) -> list[Trial]:
        versions = self.store.trial_versions(self.sweep_id)
        stale = [trial_id for trial_id, v in versions if self._known.get(trial_id, (None,))[0] != v]
        # (most of them, as for a fresh agent: the whole sweep in one plain query, not a list of every id)
        fresh = self.store.trials(self.sweep_id) if 2 * len(stale) > len(versions) else self.store.trials_by_id(stale)
        for trial in fresh:
            self._known[trial.id] = (version(trial), trial)
        return [self._known[trial_id][1] for trial_id, _ in versions]


class SweepController:
    """Holds the agent's trials in the store and asks the engine what to run and when to stop.

    Claims are exactly-once: a suggestion is recorded only if no other agent claimed since it was made (the
    sweep's short lock), else made again; so no trial or grid point is handed out twice and run_cap holds. A
    preempted trial resumes first, then a crashed one whose checkpoint this machine sees (or that crashed before
    its first epoch), at most `max_resumes` crashes each, then a paused one the engine promotes (taken from the
    paused state, so each promotion runs once), then a new one."""

    stops_anytime = False  # an engine decides only after a trial's new epochs

    def __init__(
        self,
        store: Store,
        sweep: Sweep,
        agent_id: str,
        engine: Engine,
        max_resumes: int = MAX_RESUMES,
        stale_after: float = STALE_AFTER,
    ):
        """`stale_after`: seconds without a heartbeat after which another agent's running trial counts as crashed."""
        self.store, self.sweep, self.agent_id, self.engine = store, sweep, agent_id, engine
        self.max_resumes, self.stale_after = max_resumes, stale_after
        self.trials = TrialCache(store, sweep.id)
        self.done = False
        self.engine_seconds = 0.0  # in the engine's decisions, for benchmarks (see _deciding)
        # the trials this controller handed out and the agent has not ended, each with the epoch it was last decided
        # at (its epochs when claimed): a decision judges the epochs recorded since
        self._held: dict[str, int] = {}

    @property
    def stopper(self) -> str:
        return self.engine.stopper

    @property
    def stops(self) -> bool:
        return self.engine.stops

    @contextlib.contextmanager
    def _deciding(self) -> Iterator[None]:
        """Count the time of the engine call inside in engine_seconds: the whole call, so that what an adapter
        does before its library decides (an Ax rebuild, an Optuna mirror sync) counts too."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.engine_seconds += time.perf_counter() - began

    def next_trial(self, slot: int) -> Claim | None:
        """Claim the next trial for `slot`; None when the sweep has nothing left (`done`), or nothing now (other
        agents kept claiming first: try again next round)."""
        if self.done:
            return None
        if math.isfinite(self.stale_after):
            self.store.mark_crashed(self.sweep.id, self.stale_after)
        for _ in range(CLAIM_ATTEMPTS):
            trials = self.trials.read()
            # A claim whose commit went through but whose answer was lost (the connection dropped) left a trial
            # running under this agent that it never got: it is this agent's to run, before anything new.
            orphan = next((t for t in trials if t.agent == self.agent_id and t.state == State.RUNNING
                           and t.id not in self._held), None)  # fmt: skip
            if orphan:
                seen = self.store.checkpoint(orphan).exists()
                how = Start.RESUMED if seen else Start.RESTARTED if orphan.resumes else Start.STARTED
                return self._hold(Claim(orphan, how))
            # A crashed trial's checkpoint may sit on a machine that is down: only an agent that sees it resumes it;
            # one that crashed before its first epoch was recorded has nothing to lose, and starts again anywhere.
            pick = next((t for t in trials if t.state == State.PREEMPTED), None) or next(
                (t for t in trials if self.resumable(t) and (t.epochs == 0 or self.store.checkpoint(t).exists())),
                None,
            )
            if pick:
                restart = not self.store.checkpoint(pick).exists()
                if self.store.take(pick, self.agent_id, restart=restart):
                    return self._hold(Claim(self.store.trial(pick.id), Start.RESTARTED if restart else Start.RESUMED))
                continue
            if self.engine.pauses:
                with self._deciding():
                    promoted = self.engine.resume(trials, self.sees)
                if isinstance(promoted, Suggestion):  # a configuration promoted to a longer run of its own
                    if claim := self._add(promoted, trials, Start.PROMOTED):
                        return claim
                    continue
                if promoted:
                    if self.store.take(promoted, self.agent_id):
                        return self._hold(Claim(self.store.trial(promoted.id), Start.PROMOTED))
                    continue
            # (a prior, a result told to the sweep when it was created, never ran, and a promoted configuration's
            # longer run is not a new one: neither counts in its budget)
            configurations = sum(not is_prior(t) and not promoted_from(t) for t in trials)
            capped = configurations >= self.sweep.config.get("run_cap", math.inf)
            suggestion = None
            if not capped:
                with self._deciding():
                    suggestion = self.engine.suggest(trials)
            if suggestion is None:
                # (a pausing engine may yet promote a paused trial once a running one reaches its rung)
                running = self.engine.pauses and any(t.state == State.RUNNING for t in trials)
                if not (capped or self.engine.done) or running:
                    return None  # the engine declines for now
                if self.store.exhausted_after(self.sweep.id, len(trials)):
                    self.done = True
                    return None
                continue  # another agent claimed since
            if claim := self._add(suggestion, trials, Start.STARTED):
                return claim
        return None

    def _add(self, suggestion: Suggestion, trials: list[Trial], how: Start) -> Claim | None:
        """The suggested trial, claimed if no other agent claimed since `trials` were read (else None)."""
        trial = self.store.add_trial(
            self.sweep.id, suggestion.params, self.agent_id, after=len(trials), attrs=suggestion.attrs
        )
        return self._hold(Claim(trial, how)) if trial else None

    def _hold(self, claim: Claim) -> Claim:
        self._held[claim.trial.id] = claim.trial.epochs
        claim.planned = planned_epochs(self.sweep.config, leaves(claim.trial.params))
        return claim

    def sees(self, trial: Trial) -> bool:
        """Whether this machine sees the trial's checkpoint (a paused trial is promoted only where it does)."""
        return self.store.checkpoint(trial).exists()

    def resumable(self, trial: Trial) -> bool:
        """A crashed trial that may yet be resumed (by an agent that sees its checkpoint)."""
        return trial.state == State.CRASHED and trial.crashes <= self.max_resumes

    def started(self, trial: Trial, pgid: int) -> None:
        self.store.set_process(trial.id, self.agent_id, pgid, socket.gethostname())

    def record_epochs(self, trial: Trial, records: list[dict[str, Any]]) -> None:
        self.store.add_epochs(trial.id, records, self.agent_id, self.sweep.series_metric)

    def decide(self, trial: Trial) -> Decision:
        """The engine's verdict on the running trial, over every trial of the sweep as it stands."""
        if not self.engine.stops:
            return Decision.CONTINUE
        trials = self.trials.read()
        since = self._held.get(trial.id, 0)
        self._held[trial.id] = next((t.epochs for t in trials if t.id == trial.id), since)
        with self._deciding():
            decision, attrs = self.engine.decide(trial, trials, since)
        if attrs is not None:  # the engine's record of the trial changed (a pruner's state): others see it too
            self.store.set_attrs(trial.id, attrs, self.agent_id)
        return decision

    def beat(self, trials: list[Trial]) -> list[str]:
        return self.store.heartbeat(self.agent_id, [t.id for t in trials])

    def finish(
        self,
        trial: Trial,
        state: State,
        exit_code: int | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        self.store.end(trial.id, state, self.agent_id, exit_code, error, summary)
        self._held.pop(trial.id, None)

    def abandon(self, trial: Trial) -> None:
        self._held.pop(trial.id, None)

    def close(self) -> None:
        """Nothing to let go of: the store is the caller's."""


def controller_for(
    store: Store,
    sweep: Sweep,
    agent_id: str,
    slots: int = 1,
    max_resumes: int = MAX_RESUMES,
    stale_after: float = STALE_AFTER,
    reseed: bool = True,
) -> SweepController | ServerController:
    """The controller of an agent with `slots` slots on `sweep`: a W&B server's sweep's own (which registers the
    slots with the server: raises wandb_server.ServerError), else the store's, with the engine that decides.
    `reseed`: see engine_for."""
    if sweep.backend == "wandb":
        from hpsearch.sweep.wandb_server import Server, ServerController

        return ServerController(store, sweep, agent_id, Server(sweep, slots))
    return SweepController(store, sweep, agent_id, engine_for(sweep, reseed), max_resumes, stale_after)
