"""`hpsearch agent` put together: the sweep's controller (local or W&B), the slots of this machine or of its
SLURM allocation, and the agent that runs trials in them; what the CLI calls."""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from hpsearch import defaults
from hpsearch.defaults import project
from hpsearch.params import DEFAULTS
from hpsearch.sweep import slurm
from hpsearch.sweep.agent import INTERRUPTS, Agent, grace_error
from hpsearch.sweep.controller import controller_for
from hpsearch.sweep.slots import choose_gpus, plan_slots
from hpsearch.sweep.store import Store, Sweep, new_id
from hpsearch.sweep.trial import trial_process
from hpsearch.train import fetch
from hpsearch.wandb_env import default_mode


class AgentError(Exception):
    """The agent cannot start as asked (an option its sweep or allocation cannot honour); says why."""


@dataclass
class AgentOptions:
    """`hpsearch agent`'s options; `given` names those set on the command line (not left at their default)."""

    gpus: int | None = None
    gpu_ids: str | None = None
    gpus_per_trial: int | None = None
    nodes_per_trial: int = 1
    cpu_procs: int = 1
    count: int | None = None
    grace: float = defaults.GRACE
    hang_timeout: float = defaults.HANG_TIMEOUT
    max_resumes: int = defaults.MAX_RESUMES
    given: frozenset[str] = frozenset()


def fetch_data(config: dict, echo: Callable[[str], None]) -> None:
    """The trainer's dataset on this machine before the first trial, so that trials starting together do not each
    fetch it, and a dataset that cannot be had is one line now rather than a failed trial per slot. Raises
    fetch.DataError. (Values a trial draws from `values` or a recipe are fetched by the trial, under the same lock.)"""
    if config.get("program"):
        return  # the sweep's own script: its data is its business
    fixed = {k: v["value"] for k, v in config.get("parameters", {}).items() if isinstance(v, dict) and "value" in v}
    settings = {k: fixed.get(k, DEFAULTS[k]) for k in ("dataset", "data_dir", "download")}
    if done := fetch.ensure(**settings):
        echo(f"data: {done}")


def run_agent(
    store: Store, sweep: Sweep, opts: AgentOptions, echo: Callable[[str], None], fail: Callable[[str], None]
) -> int:
    """Run the sweep's trials until it is done; the exit code. `echo` takes the agent's lines, `fail` the one line
    on why it gave up, if it did. Raises AgentError or slots.SlotError (a usage error: nothing ran) and, for a W&B
    sweep, wandb_server.ServerError (the server refused the agents) or, once `fail` has said so, Lost (the server
    is gone: the process must leave at once, see ServerController.close)."""
    alloc = slurm.allocation()
    if opts.nodes_per_trial > 1 and (alloc is None or alloc.nodes < opts.nodes_per_trial):
        has = f"an allocation of {alloc.nodes}" if alloc else "no SLURM allocation"
        raise AgentError(
            f"--nodes-per-trial: {opts.nodes_per_trial} nodes per trial need a SLURM allocation of that many "
            f"(`hpsearch slurm --nodes-per-trial {opts.nodes_per_trial}`); this agent has {has}"
        )
    if sweep.backend == "wandb" and "max_resumes" in opts.given:
        raise AgentError("--max-resumes: applies to local sweeps; on a W&B sweep the server decides what runs again")
    if why := grace_error(opts.grace):
        raise AgentError(why)
    slots = plan_slots(choose_gpus(opts.gpus, opts.gpu_ids), opts.gpus_per_trial, opts.cpu_procs, opts.nodes_per_trial)
    # The store and the logs name the agent by host (or SLURM node and job) and process.
    agent_id = f"{alloc.agent_tag if alloc else socket.gethostname()}-{os.getpid()}-{new_id(4)}"
    fetch_data(sweep.config, echo)
    controller = controller_for(store, sweep, agent_id, len(slots), opts.max_resumes)
    # A local sweep's trials log their own runs: live with a W&B login, else offline for `hpsearch sync`. On a W&B
    # server the agent owns the runs.
    wandb_mode = "disabled" if sweep.backend == "wandb" else default_mode()
    if wandb_mode == "online":
        where = "/".join(filter(None, (sweep.config.get("entity"), project(sweep.config))))
        echo(f"W&B: each trial logs a live run to {where}, group {sweep.id}")
    elif wandb_mode == "offline":
        echo(f"W&B: no login, so each trial keeps an offline run; `hpsearch sync {sweep.id}` uploads them")
    launch = functools.partial(trial_process, store, sweep, wandb_mode=wandb_mode)
    ends_at = time.monotonic() + alloc.ends_at - time.time() if alloc and alloc.ends_at else None
    warning = {slurm.WARNING_SIGNUM: "the agent's SLURM job reached its time-limit warning"} if alloc else {}
    agent = Agent(controller, slots, launch, opts.count, opts.grace, opts.hang_timeout, echo=echo, ends_at=ends_at,
                  signals={**INTERRUPTS, **warning})  # fmt: skip
    code = agent.run()
    if alloc and agent.signum == slurm.WARNING_SIGNUM:
        # The time limit is near: this job comes back (same id, its own agent) for the work left.
        if agent.preempted or not controller.done:
            failed = slurm.requeue(alloc.job_id)
            echo(f"agent: {'could not requeue' if failed else 'requeued'} SLURM job {alloc.label}" +
                 (f": {failed}" if failed else " for the work left"))  # fmt: skip
    if agent.error:
        fail(agent.error)
    controller.close()
    return code
