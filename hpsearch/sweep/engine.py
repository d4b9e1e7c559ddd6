"""What decides for a sweep: an engine suggests what to run next (a new trial, or a paused one to resume), says
what a running trial does after its new epochs (continue, stop, or pause), and when the sweep is done; it holds
nothing. Holding the trials is sweep/controller.py's, and a W&B server's sweep, which its server decides, has its
own controller (sweep/wandb_server.py), with no engine.

The engines, one module each in sweep/engines/:
- wandb_sweeps: W&B's open-source `sweeps` engine (grid, random, bayes; hyperband stops), the local default;
- optuna: an Optuna study (`method: custom`, `scheduler.engine: optuna`), shared by every agent of the sweep;
- ax: an Ax experiment (`scheduler.engine: ax`), W&B's own Ax optimizer told the sweep's trials.
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

from hpsearch.sweep.store import Sweep, Trial


class EngineError(Exception):
    """The engine cannot be built for the sweep (a missing package, a bad scheduler source or function); one line."""


class Decision(StrEnum):
    """What a running trial does after its new epochs."""

    CONTINUE = "continue"
    STOP = "stop"  # ended for good (recorded stopped)
    PAUSE = "pause"  # ended after its checkpoint, kept to be resumed by a later promotion (recorded paused)


@dataclass
class Suggestion:
    """A trial to start: its parameters, and the engine's own record of it (kept with the trial in the store, so
    every agent's engine sees it)."""

    params: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)


class Engine:
    """The interface, with what most engines leave as it is. An engine sees every trial of the sweep, every
    agent's, as the store holds them (`trials`, in creation order, each with its metric's `series`).
    `stopper` is what the controller passes on (see controller.Controller)."""

    stopper = "early_terminate"
    stops = False  # whether decide can ever say other than continue (else it is not asked)
    pauses = False  # decide may pause a trial, and resume hands paused trials out again (a promotion scheduler)
    done = False  # it will suggest nothing more (a grid exhausted, a terminator)

    def suggest(self, trials: list[Trial]) -> Suggestion | None:
        """A new trial for a free slot, or None: nothing now (`done` says whether ever)."""
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


def engine_for(sweep: Sweep, reseed: bool = True) -> Engine:
    """The engine that decides for a local `sweep`: the one its scheduler names. `reseed`: a seeded study draws
    anew in each agent (see OptunaEngine); a replay keeps its seed."""
    kind = (sweep.config.get("scheduler") or {}).get("engine", "wandb")
    if kind == "optuna":
        from hpsearch.sweep.engines.optuna import OptunaEngine

        return OptunaEngine(sweep, reseed)
    if kind == "ax":
        from hpsearch.sweep.engines.ax import AxEngine

        return AxEngine(sweep)
    from hpsearch.sweep.engines.wandb_sweeps import WandbSweeps

    return WandbSweeps(sweep)
