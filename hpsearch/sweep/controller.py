"""The agent's whole view of a sweep: what to run next, what happened, when to stop a trial.

Two controllers implement it: `LocalController` (sweep/local.py: W&B's open-source `sweeps` engine deciding
over the store) and `WandbController` (sweep/wandb_cloud.py: a W&B server's sweep controller). The agent
(sweep/agent.py) supervises trials the same way for both and never knows which one it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from hpsearch.sweep.store import State, Trial


@dataclass
class Claim:
    """A trial handed to one of the agent's slots. how: "started" (new), "resumed" (from its checkpoint) or
    "restarted" (a preempted trial whose checkpoint this machine cannot see, from epoch 0)."""

    trial: Trial
    how: str


class Lost(Exception):
    """The controller cannot go on (a W&B server that stopped answering): the agent ends its trials and exits."""


class Controller(Protocol):
    """Every method may raise `store.StoreUnavailable` (try again later: the agent rides through it until its
    lease lapses), `store.NotOwner` (the trial was taken over: end this copy, record nothing) or `Lost`."""

    agent_id: str  # who holds the trials this controller hands out
    stopper: str  # who stops trials early, as the agent's lines name it
    stops_anytime: bool  # a stop may come at any moment (a server's), not only after a new epoch of the trial
    done: bool  # nothing more will be handed out (grid exhausted, run_cap reached, the server said exit)

    def next_trial(self, slot: int) -> Claim | None:
        """A trial for the free slot `slot`, or None: nothing now (see `done`)."""

    def started(self, trial: Trial, pgid: int) -> None:
        """The trial's process group is running."""

    def record_epochs(self, trial: Trial, records: list[dict[str, Any]]) -> None:
        """Epochs the trainer finished (and wrote to its metrics file), in order."""

    def should_stop(self, trial: Trial) -> bool:
        """Whether the sweep's early termination ends the running trial now."""

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
        """The agent is done with the controller (a W&B controller whose server is gone ends the process: exit 1)."""
