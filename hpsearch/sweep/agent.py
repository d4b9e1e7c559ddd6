"""Where and how trials run: GPU slots, one torchrun process group per trial, metrics tailing,
hyperband stops, signals, preemption and resume. The agent asks its controller what to run and
reports what happened; it does not know how suggestions are made.
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpsearch.params import DEFAULTS
from hpsearch.sweep.spec import leaves
from hpsearch.sweep.status import fmt_duration
from hpsearch.sweep.store import Store, StoreError, Sweep, Trial, new_id
from hpsearch.sweep.trial import TrialProcess

MAX_EARLY_FAILURES = 3  # as W&B's agent: failing this often before any success means the sweep is broken


class AgentError(Exception):
    """The agent cannot start as asked (bad GPU list, ...); the message says why."""


class Controller(Protocol):
    def next_trial(self, agent: str) -> tuple[Trial, str] | None: ...
    def record_epoch(self, trial: Trial, record: dict[str, Any]) -> None: ...
    def should_stop(self, trial: Trial) -> bool: ...
    def finish(
        self,
        trial: Trial,
        state: str,
        exit_code: int | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None: ...


@dataclass
class Slot:
    """Where one trial runs: these GPUs (None: the CPU) with one torchrun worker each, on these cores."""

    gpus: list[int] | None
    nproc: int
    cpus: list[int] | None = None


def choose_gpus(gpus: int | None, gpu_ids: str | None) -> list[int]:
    """--gpu-ids as given, else the first --gpus of the visible GPUs, else all of them."""
    try:
        if gpu_ids is not None:
            return [int(g) for g in gpu_ids.split(",") if g.strip()]
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = [int(g) for g in env.split(",") if g.strip()] if env is not None else _counted_gpus()
    except ValueError:
        raise AgentError(f"--gpu-ids: {gpu_ids!r} is not valid; allowed: GPU indices such as 0,1,2,3") from None
    if gpus is not None and gpus > len(visible):
        raise AgentError(f"--gpus: {gpus} asked for, but {len(visible)} GPUs are visible")
    return visible[:gpus] if gpus is not None else visible


def _counted_gpus() -> list[int]:
    # No GPU device node (NVIDIA, ROCm, WSL): no GPU, and no need to spend seconds importing torch to hear it.
    if not any(glob.glob(pattern) for pattern in ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")):
        return []
    import torch

    return list(range(torch.cuda.device_count()))


def plan_slots(gpu_ids: list[int], gpus_per_trial: int | None, cpu_procs: int) -> list[Slot]:
    """Split the GPUs into trial slots (all of them for one trial by default); CPU-only: one slot."""
    if not gpu_ids:
        return [Slot(None, cpu_procs)]
    k = gpus_per_trial or len(gpu_ids)
    if k < 1 or len(gpu_ids) % k:
        raise AgentError(f"--gpus-per-trial: {k} does not divide the {len(gpu_ids)} GPUs; allowed: a divisor of it")
    groups = [gpu_ids[i : i + k] for i in range(0, len(gpu_ids), k)]
    cores = sorted(os.sched_getaffinity(0))
    per = len(cores) // len(groups)
    if len(groups) == 1 or per == 0:
        return [Slot(g, k) for g in groups]
    # Concurrent trials get disjoint cores, so each one's loader workers size themselves to its share.
    return [Slot(g, k, cores[i * per : (i + 1) * per]) for i, g in enumerate(groups)]


def trial_process(store: Store, sweep: Sweep, trial: Trial, slot: Slot, wandb_mode: str) -> TrialProcess:
    """The trial's torchrun command; under the local backend its rank 0 writes an offline W&B run
    into the sweep's folder (group = sweep, name = trial), so `wandb sync` / `wandb leet` see them all."""
    env = {}
    if wandb_mode == "offline":
        env = {
            "WANDB_DIR": str(store.root / sweep.id),
            "WANDB_PROJECT": os.environ.get("WANDB_PROJECT") or sweep.config.get("project") or "hpsearch",
            "WANDB_RUN_GROUP": sweep.id,
            "WANDB_NAME": trial.id,
            "WANDB_RUN_ID": trial.id,
            "WANDB_SILENT": "true",
        }
    return TrialProcess(store.trial_dir(trial), leaves(trial.params), slot.nproc, slot.gpus, slot.cpus, env, wandb_mode)


def local_wandb_mode() -> str:
    """Trials of a local sweep write offline W&B runs, unless W&B is switched off (WANDB_MODE=disabled)."""
    return "disabled" if os.environ.get("WANDB_MODE", "").lower() == "disabled" else "offline"


def outcome(proc: TrialProcess, code: int) -> tuple[str, dict[str, Any], str | None]:
    """(state, summary, error) of a trial whose process group exited with `code`."""
    if code == 0:
        return "finished", proc.summary(), None
    return "failed", {}, proc.error() or f"exit code {code}"


HANG_TIMEOUT = 600.0  # default seconds without a new epoch before a trial counts as hung
HANG_EPOCHS = 5  # ... or this many times its slowest epoch so far, whichever is longer
FIRST_EPOCH_FACTOR = 3  # the first epoch also starts workers, loads data and compiles the model


@dataclass
class Running:
    """A trial this agent supervises: its process, where it runs, and its progress as the agent saw it."""

    trial: Trial
    proc: TrialProcess
    where: str  # "GPU 0,1" or "CPU"
    epochs: int  # planned
    seen: int  # epochs already on record when it (re)started: not announced again
    last_progress: float = field(default_factory=time.monotonic)  # when it started, or its last new epoch
    slowest: float = 0.0  # longest wait between two of its epochs, seconds
    epoch_times: list[float] = field(default_factory=list)  # the trainer's own, for the ETA

    def hang_limit(self, timeout: float) -> float:
        """Seconds without a new epoch after which the trial counts as hung."""
        limit = max(timeout, HANG_EPOCHS * self.slowest)
        return limit if self.epoch_times else FIRST_EPOCH_FACTOR * limit

    def progressed(self, record: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.epoch_times:  # the wait for the first epoch includes start-up, not an epoch's pace
            self.slowest = max(self.slowest, now - self.last_progress)
        self.last_progress, self.seen = now, record["epoch"]
        self.epoch_times.append(record["epoch_time"])

    def progress_line(self, record: dict[str, Any]) -> str:
        left = self.epochs - record["epoch"]
        eta = left * sum(self.epoch_times) / len(self.epoch_times)
        return (
            f"[{self.trial.id} {self.where}] epoch {record['epoch']}/{self.epochs}  val_acc {record['val_acc']:.2f}  "
            f"best {record['best_acc']:.2f}  lr {record['lr']:.4g}  {record['img_per_sec']:,.0f} img/s  "
            f"eta {fmt_duration(eta)}"
        )


class Agent:
    def __init__(
        self,
        store: Store,
        sweep: Sweep,
        controller: Controller,
        slots: list[Slot],
        count: int | None = None,
        grace: float = 10.0,
        poll: float = 0.5,
        echo: Callable[[str], None] = print,
        hang_timeout: float = HANG_TIMEOUT,
    ):
        self.store, self.sweep, self.controller, self.slots = store, sweep, controller, slots
        self.count, self.grace, self.poll, self.echo = count, grace, poll, echo
        self.hang_timeout = hang_timeout
        self.id = f"{socket.gethostname()}-{os.getpid()}-{new_id(4)}"
        self.signum: int | None = None
        self.running: dict[int, Running] = {}  # slot index -> trial

    def run(self) -> int:
        """Run trials until the sweep or --count is done; returns the exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._loop()
        except StoreError as e:
            # Nothing half-written (each change is one transaction); the trials' agent is gone, so once the
            # heartbeat window passes they count as crashed and the next agent resumes them.
            for rn in self.running.values():
                rn.proc.terminate(self.grace)
            self.echo(f"agent: error: {e}; ended its trials, which the next agent resumes from their checkpoints")
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> int:
        launched, failures, successes = 0, 0, 0
        exhausted = False
        beat = interval = max(1.0, min(5.0, float(os.environ.get("HPSEARCH_STALE_AFTER", "60")) / 4))
        while True:
            if self.signum is not None:
                self._preempt_all()
                return 128 + self.signum
            broken = failures >= MAX_EARLY_FAILURES and successes == 0
            for i, slot in enumerate(self.slots):
                if i in self.running or exhausted or broken or (self.count and launched >= self.count):
                    continue
                claimed = self.controller.next_trial(self.id)
                if claimed is None:
                    exhausted = True
                    break
                self._start(i, slot, *claimed)
                launched += 1
            for i in list(self.running):
                state = self._supervise(i)
                failures += state == "failed"
                successes += state in ("finished", "stopped")
            if not self.running and (exhausted or broken or (self.count and launched >= self.count)):
                break
            beat -= self.poll
            if beat <= 0:
                self.store.heartbeat([rn.trial.id for rn in self.running.values()])
                beat = interval
            time.sleep(self.poll)
        if broken:
            self.echo(f"agent: {failures} trials failed in a row at the start; stopping (see their errors above)")
            return 1
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def _start(self, i: int, slot: Slot, trial: Trial, how: str) -> None:
        if how == "restarted":
            self.echo(
                f"trial {trial.id}: no checkpoint of it at {self.store.checkpoint(trial)} (it ran on another "
                "machine, or stopped before its first epoch ended); restarting it from epoch 0"
            )
        proc = trial_process(self.store, self.sweep, trial, slot, local_wandb_mode())
        self.store.set_pgid(trial.id, proc.start())
        where = f"GPU {','.join(map(str, slot.gpus))}" if slot.gpus is not None else "CPU"
        params = leaves(trial.params)
        self.echo(
            f"trial {trial.id} {how} on {where}"
            + (f" x{slot.nproc}" if slot.gpus is None else "")
            + ": "
            + " ".join(f"{k}={v}" for k, v in params.items())
        )
        epochs = params.get("epochs", DEFAULTS["epochs"])
        self.running[i] = Running(trial, proc, where, epochs, seen=trial.epochs if how == "resumed" else 0)

    def _record(self, rn: Running) -> dict[str, Any] | None:
        """Record the trial's epochs that appeared in its metrics file and announce the new ones; the last."""
        last = None
        for record in rn.proc.new_epochs():
            self.controller.record_epoch(rn.trial, record)
            if record["epoch"] > rn.seen:  # not one a resumed trial's file still holds from before
                rn.progressed(record)
                self.echo(rn.progress_line(record))
            last = record
        return last

    def _supervise(self, i: int) -> str | None:
        """Feed new epochs to the controller; end the trial if it exited, hyperband says stop, or it hangs.
        Returns the trial's final state if it ended."""
        rn = self.running[i]
        trial, proc = rn.trial, rn.proc
        record = self._record(rn)
        if record is not None and proc.poll() is None and self.controller.should_stop(trial):
            proc.terminate(self.grace)
            self.controller.finish(trial, "stopped", summary=record)
            self.echo(f"trial {trial.id} stopped early by hyperband after epoch {record['epoch']}")
            del self.running[i]
            return "stopped"
        code = proc.poll()
        if code is None:
            quiet = time.monotonic() - rn.last_progress
            if quiet <= rn.hang_limit(self.hang_timeout):
                return None
            proc.terminate(self.grace)  # SIGTERM, then SIGKILL: a stopped or deadlocked worker gets the latter
            error = f"no progress for {quiet:.0f} s after epoch {rn.seen}"
            self.controller.finish(trial, "failed", proc.poll(), error)
            self.echo(f"trial {trial.id} failed: {error}; ended its processes")
            del self.running[i]
            return "failed"
        self._record(rn)
        proc.terminate(self.grace)  # workers torchrun left behind, if any
        state, summary, error = outcome(proc, code)
        self.controller.finish(trial, state, code, error, summary)
        detail = f"best_acc={summary.get('best_acc', float('nan')):.2f}" if state == "finished" else error
        self.echo(f"trial {trial.id} {state}: {detail}")
        del self.running[i]
        return state

    def _preempt_all(self) -> None:
        for rn in self.running.values():
            rn.proc.terminate(self.grace)
            for record in rn.proc.new_epochs():
                self.controller.record_epoch(rn.trial, record)
            self.controller.finish(rn.trial, "preempted", rn.proc.poll(), "the agent was interrupted")
            self.echo(f"trial {rn.trial.id} preempted; the next agent on this sweep resumes it from its checkpoint")
        self.running.clear()
