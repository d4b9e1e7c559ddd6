"""One trial as an OS process: `torchrun ... -m hpsearch.train --key=value ...` in its own process group
(a one-worker trial runs the trainer directly, with torchrun's environment: the launcher would only add a
process and seconds of start-up).

Shared by both backends. The trial's folder holds its stdout/stderr logs, metrics file, checkpoint
and (local backend) its offline W&B run. Ending a trial signals its whole process group (torchrun,
its workers and their data-loader workers), SIGTERM first and SIGKILL after a grace period, so no
process outlives its trial; and each trial asks the kernel for SIGTERM if its agent dies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from hpsearch.defaults import KILL_WAIT, TERM_POLL, project
from hpsearch.params import format_value
from hpsearch.sweep.slots import Slot
from hpsearch.sweep.spec import leaves
from hpsearch.train import CHECKPOINT

if TYPE_CHECKING:
    from hpsearch.sweep.store import Store, Sweep, Trial

# Runs in the child before exec: die with the agent (PR_SET_PDEATHSIG = 1), pin to the slot's cores.
_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "cpus = os.environ.pop('HPSEARCH_CPUS', '')\n"
    "cpus and os.sched_setaffinity(0, [int(c) for c in cpus.split(',')])\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)
_TORCHRUN_LOG = re.compile(r"^[WEI]\d{4} \d")  # torchrun's own glog-style lines


class TrialProcess:
    def __init__(
        self,
        trial_dir: Path,
        params: dict[str, Any],
        slot: Slot,
        env: dict[str, str] | None = None,
        wandb_mode: str = "disabled",
        program: str | None = None,
    ):
        """The trial in `slot`; `program`: the sweep's own training script (W&B's `program` key) instead of
        hpsearch's trainer."""
        self.dir = trial_dir
        self.checkpoint = trial_dir / CHECKPOINT
        self.metrics_path = trial_dir / "metrics.jsonl"
        self.stdout_path, self.stderr_path = trial_dir / "stdout.log", trial_dir / "stderr.log"
        flags = [f"--{k}={format_value(v)}" for k, v in params.items()]
        flags += [
            f"--output_dir={trial_dir}",
            f"--metrics_file={self.metrics_path}",
            f"--wandb={wandb_mode}",
            "--resume=true",
        ]  # a new trial has no checkpoint yet; a preempted one continues from its own
        self.argv = [*_launcher(slot, trial_dir.name), *([program] if program else ["-m", "hpsearch.train"]), *flags]
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        if slot.nproc == 1 and slot.nodes == 1:
            self.env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        self.env.pop("HPSEARCH_DB", None)  # the trainer never needs the database, or its password
        if slot.gpus is not None:
            self.env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot.gpus))
        if slot.cpus:
            self.env["HPSEARCH_CPUS"] = ",".join(map(str, slot.cpus))
        self.proc: subprocess.Popen | None = None
        self.ended = False  # signalled to end once (see end_groups)
        self._offset, self._inode = 0, -1

    def start(self) -> int:
        """Launch; return the process group id."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, *self.argv],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # its own process group: one signal reaches every process of the trial
            )
        return self.proc.pid

    @property
    def pgid(self) -> int:
        return self._started().pid

    def poll(self) -> int | None:
        return self._started().poll()

    def _started(self) -> subprocess.Popen:
        if self.proc is None:
            raise RuntimeError(f"trial {self.dir.name}: asked about its processes before it started")
        return self.proc

    def new_epochs(self) -> list[dict[str, Any]]:
        """Epoch records appended to the metrics file since the last call (complete lines only). A resumed
        trainer replaces the file with the epochs its checkpoint holds: then it is read again from the start.
        A rung's record (keyed `rung`, no `epoch`: a cooldown branch's value) is no epoch of its own: its `rung_*`
        values join the record of its epoch, which the trainer writes with it."""
        try:
            with open(self.metrics_path, "rb") as fh:
                inode = os.fstat(fh.fileno()).st_ino
                if inode != self._inode:
                    self._inode, self._offset = inode, 0
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        records = [r for r in map(_record, chunk[:end].splitlines()) if r is not None]
        epochs = {r["epoch"]: r for r in records if "epoch" in r}
        for rung in (r for r in records if "epoch" not in r and r["rung"] in epochs):
            epochs[rung["rung"]].update((k, v) for k, v in rung.items() if k.startswith("rung_"))
        return [r for r in records if "epoch" in r]

    def send(self, sig: int) -> None:
        """Signal every process of the trial."""
        _signal_group(self.pgid, sig)

    def alive(self) -> bool:
        """Whether any process of the trial still runs (its leader reaped if it ended)."""
        return _group_alive(self.pgid, self.poll)

    def summary(self) -> dict[str, Any]:
        """The trainer's final JSON line (rank 0's last stdout line), if it got that far."""
        try:
            lines = self.stdout_path.read_text().strip().splitlines()
            summary = json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            return {}
        return summary if isinstance(summary, dict) else {}

    def error(self, max_lines: int = 20) -> str:
        """The failing worker's own words: its error lines, or the end of its traceback, minus torchrun's report."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        ours = list(dict.fromkeys(line for line in text.splitlines() if line.startswith("hpsearch train: error:")))
        if ours:
            return "\n".join(ours)
        report = text.rfind("ChildFailedError")  # torchrun's wrapper traceback and report come last
        if report != -1:
            text = text[: text.rfind("Traceback (most recent call last):", 0, report)]
        lines = [line for line in text.splitlines() if line.strip() and not _TORCHRUN_LOG.match(line)]
        return "\n".join(lines[-max_lines:])


def trial_process(store: Store, sweep: Sweep, trial: Trial, slot: Slot, wandb_mode: str) -> TrialProcess:
    """The trial's command in its folder of the store. With `wandb_mode` online or offline (local sweeps) its rank 0
    logs a W&B run (group = sweep, name = id = trial, in the sweep's project and entity) whose files go to the
    sweep's folder, so `hpsearch sync`, `wandb sync` and `wandb leet` find them all; under a W&B server the agent
    owns the run and the trial logs none."""
    env = {}
    if wandb_mode in ("online", "offline"):
        env = {
            "WANDB_DIR": str(store.root / sweep.id),
            "WANDB_PROJECT": project(sweep.config),
            **({"WANDB_ENTITY": sweep.config["entity"]} if sweep.config.get("entity") else {}),
            "WANDB_RUN_GROUP": sweep.id,
            "WANDB_NAME": trial.id,
            "WANDB_RUN_ID": trial.id,
            "WANDB_SILENT": "true",
        }
    params = leaves(trial.params)
    program = sweep.config.get("program")
    return TrialProcess(store.trial_dir(trial), params, slot, env, wandb_mode, program)


def _launcher(slot: Slot, name: str) -> list[str]:
    """What starts the trainer's workers: the interpreter itself for one worker (torchrun's environment is set
    by hand), torchrun for several, and for a trial that spans nodes one torchrun per node, started by srun on
    the nodes of the agent's SLURM allocation and meeting at a c10d rendezvous on this (the first) node."""
    if slot.nodes > 1:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        # A step gets one core per task unless told (newer SLURM no longer passes on the job's cpus-per-task).
        cpus = os.environ.get("SLURM_CPUS_ON_NODE")
        return [
            shutil.which("srun") or "srun", f"--nodes={slot.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            *([f"--cpus-per-task={cpus}"] if cpus else []), f"--job-name={name}",
            sys.executable, "-m", "torch.distributed.run", f"--nnodes={slot.nodes}", f"--nproc_per_node={slot.nproc}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={socket.gethostname()}:{port}", f"--rdzv_id={name}",
        ]  # fmt: skip
    if slot.nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={slot.nproc}"]
    return [sys.executable]


class Group(Protocol):
    """A process group to end: a trial's, or a copy of it left by another agent."""

    ended: bool  # signalled once: its number is no longer ours to signal (it may belong to another group since)

    def send(self, sig: int) -> None: ...

    def alive(self) -> bool: ...


class Process(Group, Protocol):
    """What the agent uses of a trial's process: a TrialProcess, or a replay's curve (simulate/backend.py)."""

    dir: Path
    checkpoint: Path

    def start(self) -> int: ...

    @property
    def pgid(self) -> int: ...

    def poll(self) -> int | None: ...

    def new_epochs(self) -> list[dict[str, Any]]: ...

    def summary(self) -> dict[str, Any]: ...

    def error(self) -> str: ...


def end_groups(
    groups: list[Group],
    grace: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """End process groups together: SIGTERM to all, SIGKILL after `grace` seconds to those still alive (a group
    whose processes are all gone is never signalled again: its number may be another group's by then), so ending
    many takes one grace period, not one each. The one way every caller ends processes."""
    live = [g for g in groups if not g.ended]
    for g in live:
        g.ended = True
        g.send(signal.SIGTERM)
    deadline = clock() + grace
    while clock() < deadline and any(g.alive() for g in live):
        sleep(TERM_POLL)
    left = [g for g in live if g.alive()]
    for g in left:
        g.send(signal.SIGKILL)
    deadline = clock() + KILL_WAIT  # SIGKILL cannot be refused; this only bounds a stuck kernel
    while clock() < deadline and any(g.alive() for g in left):
        sleep(TERM_POLL)


@dataclass
class _Copy:
    """A process group that another agent started (its copy of a trial): not our child, seen by its members."""

    pgid: int
    ended: bool = False

    def send(self, sig: int) -> None:
        _signal_group(self.pgid, sig)

    def alive(self) -> bool:
        return bool(_members(self.pgid))


def end_stale_copy(pgid: int, trial_dir: Path, grace: float) -> bool:
    """End the process group `pgid` if it still runs this trial (its commands name the trial's folder): a copy
    left by an agent that was frozen past its lease. Whether there was one."""
    if not any(str(trial_dir) in " ".join(p.info["cmdline"] or []) for p in _members(pgid, ["cmdline"])):
        return False
    end_groups([_Copy(pgid)], grace)
    return True


def _record(line: bytes) -> dict[str, Any] | None:
    """One epoch or rung record of a metrics file; None for a line that is neither (a custom program's stray
    output)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return record if isinstance(record.get("epoch", record.get("rung")), int) else None


def _members(pgid: int, attrs: list[str] | None = None) -> list[psutil.Process]:
    """The live processes of a group. Zombies don't count: orphaned workers are reaped by init, and an init that
    never reaps (some containers) must not make us wait forever."""
    out = []
    for proc in psutil.process_iter(attrs):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return out


def _group_alive(pgid: int, reap: Callable[[], object]) -> bool:
    reap()  # reap the leader ourselves
    return bool(_members(pgid))


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
