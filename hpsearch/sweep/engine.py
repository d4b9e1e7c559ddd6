"""What decides for a sweep: an engine suggests what to run next (a new trial, or a paused one to resume), says
what a running trial does after its new epochs (continue, stop, or pause), and when the sweep is done. Holding the
trials is sweep/controller.py's.

The engines, one module each in sweep/engines/:
- wandb_sweeps: W&B's open-source `sweeps` engine (grid, random, bayes; hyperband stops), the local default;
- optuna: an Optuna study (`method: custom`, `scheduler.engine: optuna`), shared by every agent of the sweep;
- ax: an Ax experiment (`scheduler.engine: ax`), W&B's own Ax optimizer told the sweep's trials;
- wandb_server: a W&B server's sweep controller, which hands each slot its run and stops it.
Adding an engine is one more module and its case in `engine_for`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hpsearch.sweep.store import State, Store, Sweep, Trial


class EngineError(Exception):
    """The engine cannot be built for the sweep (a missing package, a bad scheduler source or function); one line."""


class Lost(Exception):
    """The engine cannot go on (a W&B server that stopped answering): the agent ends its trials and exits."""


class Decision(StrEnum):
    """What a running trial does after its new epochs."""

    CONTINUE = "continue"
    STOP = "stop"  # ended for good (recorded stopped)
    PAUSE = "pause"  # ended after its checkpoint, kept to be resumed by a later promotion (recorded paused)


@dataclass
class Suggestion:
    """A trial to start: its parameters, the engine's own record of it (kept with the trial in the store, so
    every agent's engine sees it), and the id a server gave it (a known one resumes)."""

    params: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    trial_id: str | None = None


class Engine:
    """The interface, with what most engines leave as it is. An engine sees every trial of the sweep, every
    agent's, as the store holds them (`trials`, in creation order, each with its metric's `series`).
    `stopper` and `stops_anytime` are what the controller passes on (see controller.Controller)."""

    stopper = "early_terminate"
    stops = False  # whether decide can ever say other than continue (else it is not asked)
    stops_anytime = False
    pauses = False  # decide may pause a trial, and resume hands paused trials out again (a promotion scheduler)
    reads_trials = True  # should_stop needs the sweep's trials
    assigns_trials = False  # it hands each slot its trial, new or to resume (a server), and the controller takes it
    done = False  # it will suggest nothing more (a grid exhausted, a terminator, a server's exit)
    lost: str | None = None  # why it cannot go on

    def suggest(self, slot: int, trials: list[Trial]) -> Suggestion | None:
        """A new trial for the free slot `slot`, or None: nothing now (`done` says whether ever)."""
        raise NotImplementedError

    def resume(self, trials: list[Trial], sees: Callable[[Trial], bool]) -> Trial | Suggestion | None:
        """A promotion now: a paused trial to resume, among those whose checkpoint this agent `sees`, or a finished
        run's configuration to run again at a longer schedule (its attrs name the run, `promoted_from`); else
        None."""
        return None

    def decide(self, trial: Trial, trials: list[Trial], since: int = 0) -> tuple[Decision, dict[str, Any] | None]:
        """What the running trial does now, after the epochs it recorded since epoch `since` (its last decision),
        and its new attrs if deciding changed them (else None). Engines that only ever stop say so in
        `should_stop`."""
        stop, attrs = self.should_stop(trial, trials)
        return (Decision.STOP if stop else Decision.CONTINUE), attrs

    def should_stop(self, trial: Trial, trials: list[Trial]) -> tuple[bool, dict[str, Any] | None]:
        """Whether the running trial stops now, and its new attrs if deciding changed them (else None)."""
        return False, None

    def claimed(self, slot: int, trial: Trial) -> None:
        """The trial it handed to `slot` is now the agent's (engines that assign trials only)."""

    def unclaimed(self, slot: int, suggestion: Suggestion) -> None:
        """The store could not take the trial it handed to `slot`: hand it again next time."""

    def recorded(self, trial: Trial, records: list[dict[str, Any]]) -> None:
        """The agent recorded these epochs of its trial."""

    def ended(self, trial: Trial, state: State, exit_code: int | None, summary: dict[str, Any] | None) -> None:
        """The agent's trial ended in `state`."""

    def abandoned(self, trial: Trial) -> None:
        """The agent ended its trial without recording it."""

    def close(self) -> None:
        """The agent is done with the sweep."""


def promoted_from(trial: Trial) -> str | None:
    """The trial whose configuration this one runs again at a longer schedule (a compressed rung's promotion)."""
    return trial.attrs.get("promoted_from")


@contextlib.contextmanager
def source_file(sweep: Sweep) -> Iterator[Path | None]:
    """The scheduler source kept with the sweep, as a file under its own name (W&B's schedulers import it by path,
    and name it in their errors); None if the sweep keeps none."""
    if not sweep.code:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(sweep.code["path"]).name
        path.write_text(sweep.code["text"])
        yield path


def engine_for(store: Store | None, sweep: Sweep, slots: int, reseed: bool = True) -> Engine:
    """The engine that decides for `sweep`: its server's for a W&B sweep, else the one its scheduler names.
    `reseed`: a seeded study draws anew in each agent (see OptunaEngine); a replay keeps its seed."""
    if sweep.backend == "wandb":
        if store is None:
            raise ValueError("a W&B sweep's engine keeps its runs in the store's folder: give it the store")
        from hpsearch.sweep.engines.wandb_server import WandbServer

        return WandbServer(store, sweep, slots)
    kind = (sweep.config.get("scheduler") or {}).get("engine", "wandb")
    if kind == "optuna":
        from hpsearch.sweep.engines.optuna import OptunaEngine

        return OptunaEngine(sweep, reseed)
    if kind == "ax":
        from hpsearch.sweep.engines.ax import AxEngine

        return AxEngine(sweep)
    from hpsearch.sweep.engines.wandb_sweeps import WandbSweeps

    return WandbSweeps(sweep)
