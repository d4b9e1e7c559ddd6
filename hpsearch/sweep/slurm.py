"""Clusters scheduled by SLURM: SLURM obtains the machines, and each allocation runs the same `hpsearch agent`.

`hpsearch slurm` writes a batch script into the sweep's folder and submits it with sbatch: a job array whose
tasks each hold the nodes of one agent (one node, or --nodes-per-trial nodes for trials that span nodes),
requeueable, with a warning signal before the time limit. Inside a task the agent learns its allocation from
SLURM's environment (`allocation`): its GPUs and cores are those SLURM gave it, its id names the job and node, it
claims no trial it could not start before the job ends, and it treats the warning and SIGTERM as preemption
(trials recorded preempted, resumed by the requeued task or any other agent).

Why a batch script of our own and not submitit (whose job arrays and requeue-on-signal Hydra's SLURM launcher
uses): submitit runs a pickled Python function in its own process model and installs its own handlers for the
time-limit and termination signals, which would sit beside the agent's own (preemption must end the trials'
process groups and record them first); and a plain script in the sweep's folder is what cluster users read,
change and resubmit by hand. What submitit would add, we need two calls of: sbatch and `scontrol requeue`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hpsearch.defaults import SLURM_TIMEOUT, SLURM_WARNING

# Sent by SLURM `warning` seconds before the time limit (sbatch --signal=B:USR1@SECONDS).
WARNING_SIGNUM = signal.SIGUSR1
WARNING_SIGNAL = WARNING_SIGNUM.name.removeprefix("SIG")


class SlurmError(Exception):
    """sbatch refused the job, or SLURM cannot be used as asked; the message says what to do."""


@dataclass
class Allocation:
    """What SLURM gave the agent that runs inside a job."""

    job_id: str  # SLURM_JOB_ID: this array task's own job id, what `scontrol requeue` takes
    label: str  # ARRAYJOB_TASK for an array task, else the job id
    node: str  # the node the agent runs on
    nodes: int  # nodes of the allocation (trials span them with --nodes-per-trial)
    ends_at: float | None  # the job's time limit, as time.time(); None without one

    @property
    def agent_tag(self) -> str:
        """What the agent's id says of it: node and job."""
        return f"{self.node}-slurm{self.label}"


def allocation(env: dict[str, str] | None = None) -> Allocation | None:
    """The SLURM job this process runs in, or None outside SLURM."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    label = f"{array}_{task}" if array and task else job
    node = env.get("SLURMD_NODENAME") or env.get("HOSTNAME", "node")
    return Allocation(job, label, node, int(env.get("SLURM_JOB_NUM_NODES", "1")), job_end(job))


def job_end(job_id: str) -> float | None:
    """When the job's time limit ends (squeue's EndTime), or None (no limit, or squeue cannot say)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True, timeout=SLURM_TIMEOUT
        ).stdout.split()
        return datetime.fromisoformat(out[0]).timestamp() if out else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def requeue(job_id: str) -> str | None:
    """Put the job back in the queue (it keeps its id; its agent resumes the preempted trials); the error, if any."""
    try:
        p = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=SLURM_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return p.stderr.strip() or None if p.returncode else None


@dataclass
class Job:
    """What `hpsearch slurm` submits."""

    sweep_id: str
    store_dir: Path
    nodes: int
    gpus_per_node: int | None = None
    gpus_per_trial: int | None = None
    nodes_per_trial: int = 1
    cpu_procs: int = 1
    cpus_per_node: int | None = None
    time_limit: str | None = None
    partition: str | None = None
    account: str | None = None
    warning: int = SLURM_WARNING  # seconds before the time limit that the agent hears WARNING_SIGNAL
    sbatch_args: tuple[str, ...] = ()
    agent_args: tuple[str, ...] = ()  # --grace, --hang-timeout, ... as the user gave them

    @property
    def tasks(self) -> int:
        return self.nodes // self.nodes_per_trial

    @property
    def log_dir(self) -> Path:
        return self.store_dir.resolve() / self.sweep_id / "slurm"

    def script(self) -> str:
        """The batch script: one array task per agent. The store's URL and W&B's settings reach the job through
        the environment sbatch exports, so no password or API key is written here."""
        sbatch = [
            f"--job-name=hpsearch-{self.sweep_id}",
            f"--array=0-{self.tasks - 1}",
            f"--nodes={self.nodes_per_trial}",
            "--ntasks-per-node=1",
            *([f"--gpus-per-node={self.gpus_per_node}"] if self.gpus_per_node else []),
            *([f"--cpus-per-task={self.cpus_per_node}"] if self.cpus_per_node else []),
            *([f"--time={self.time_limit}"] if self.time_limit else []),
            *([f"--partition={self.partition}"] if self.partition else []),
            *([f"--account={self.account}"] if self.account else []),
            "--requeue",  # a preempted or self-requeued task runs again, resuming its trials
            f"--signal=B:{WARNING_SIGNAL}@{self.warning}",  # the agent's warning before the time limit
            "--open-mode=append",  # a requeued task's output continues its log
            f"--output={self.log_dir}/%A_%a.out",
            *self.sbatch_args,
        ]
        agent = [sys.executable, "-m", "hpsearch.cli", "agent", self.sweep_id, "--dir", str(self.store_dir.resolve())]
        if self.nodes_per_trial > 1:
            agent += ["--nodes-per-trial", str(self.nodes_per_trial)]
        if self.gpus_per_trial:
            agent += ["--gpus-per-trial", str(self.gpus_per_trial)]
        if not self.gpus_per_node:
            agent += ["--cpu-procs", str(self.cpu_procs)]
        agent += list(self.agent_args)
        lines = [
            "#!/bin/bash",
            f"# {self.tasks} hpsearch agent(s) for sweep {self.sweep_id}, written by `hpsearch slurm`; "
            "resubmit with sbatch.",
            *(f"#SBATCH {shlex.quote(arg)}" for arg in sbatch),
            "",
            "# The agent is the job's main process (exec), so SLURM's signals reach it: the time-limit warning",
            "# and SIGTERM (preemption, scontrol requeue, scancel) end its trials as preempted, to be resumed.",
            "# HPSEARCH_DB, PGPASSWORD and WANDB_* come from the environment sbatch exports.",
            "exec " + shlex.join(agent),
            "",
        ]
        return "\n".join(lines)


def submit(script: Path, env: dict[str, str]) -> str:
    """sbatch the script; its job id."""
    try:
        p = subprocess.run(
            ["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True, timeout=SLURM_TIMEOUT
        )
    except FileNotFoundError:
        raise SlurmError("sbatch: not found; run on a SLURM login node (or --dry-run to see the script)") from None
    if p.returncode:
        raise SlurmError(f"sbatch: {' '.join(p.stderr.split()) or f'exit code {p.returncode}'}")
    return p.stdout.strip().split(";")[0]
