"""The W&B server backend, kept thin: the server's sweep controller suggests and stops trials through
the wandb library's own agent (`wandb.agent`), and each trial runs exactly like a local one
(trial.py). The agent process owns the trial's W&B run: it logs each epoch the trainer writes to its
metrics file and sets the summary, so only one process talks to W&B for a trial. The local store
mirrors every trial, so `status` and `report` work the same for both backends.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from hpsearch.sweep.agent import Slot, outcome, trial_process
from hpsearch.sweep.store import Store, Sweep, new_id


class ServerError(Exception):
    """The W&B server refused a request or did not answer it within wandb's retry window."""


def _server_error(e: BaseException) -> ServerError:
    # wandb-core's errors end in the last attempt's cause (connection refused, a GraphQL error, ...)
    why = str(e).split(" while retrying")[0].rsplit(": ", 1)[-1].strip() or type(e).__name__
    return ServerError(f"the W&B server at {os.environ.get('WANDB_BASE_URL', 'api.wandb.ai')}: {why}")


def create_sweep(config: dict[str, Any], project: str, entity: str | None) -> str:
    """Register the sweep with the W&B server; return its path ENTITY/PROJECT/ID."""
    import wandb

    try:
        sweep_id = wandb.sweep(sweep=config, project=project, entity=entity)
        api = wandb.Api()  # without --entity: the one the server put the sweep in (wandb.sweep exports it)
        return f"{entity or api.settings['entity'] or api.default_entity}/{project}/{sweep_id}"
    except wandb.errors.Error as e:
        raise _server_error(e) from None


def mirror_sweep(store: Store, path: str) -> Sweep:
    """A local record of a W&B sweep made elsewhere (`wandb sweep`): the server keeps its config."""
    return store.add_sweep({}, "wandb", remote=path, sweep_id=path.split("/")[-1])


class WandbAgent:
    def __init__(
        self,
        store: Store,
        sweep: Sweep,
        slot: Slot,
        count: int | None,
        grace: float = 10.0,
        poll: float = 0.5,
        echo: Callable[[str], None] = print,
    ):
        self.store, self.sweep, self.slot, self.count = store, sweep, slot, count
        self.grace, self.poll, self.echo = grace, poll, echo
        self.id = f"{socket.gethostname()}-{os.getpid()}-{new_id(4)}"
        self.signum: int | None = None

    def run(self) -> int:
        import wandb

        def interrupted(signum: int, frame: Any) -> None:
            self.signum = signum
            raise KeyboardInterrupt  # unwinds wandb.agent, which ends the running trial's thread

        previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            wandb.agent(self.sweep.remote or self.sweep.id, function=self._trial, count=self.count)
        except KeyboardInterrupt:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 128 + self.signum if self.signum else 0

    def _trial(self) -> None:
        """One run the server handed out; raising tells wandb's agent the run failed."""
        import wandb

        run = wandb.init()  # the run the sweep controller created: its id and parameters
        params = dict(run.config)
        with self.store.transaction():
            trial = self.store.add_trial(self.sweep.id, params, self.id, trial_id=run.id)
        proc = trial_process(self.store, self.sweep, trial, self.slot, "disabled")
        self.store.set_pgid(trial.id, proc.start())
        self.echo(f"trial {trial.id} started: " + " ".join(f"{k}={v}" for k, v in params.items()))

        def drain() -> None:
            for record in proc.new_epochs():
                self.store.add_epoch(trial.id, record)
                run.log(record, step=record["epoch"])

        try:
            while (code := proc.poll()) is None:
                drain()
                self.store.heartbeat([trial.id])
                time.sleep(self.poll)
            drain()
        except BaseException:  # wandb's agent raises in this thread on a stop command; or Ctrl-C
            proc.terminate(self.grace)
            drain()
            state = "preempted" if self.signum else "stopped"
            self.store.end(trial.id, state, error="stopped by the W&B sweep controller" if state == "stopped" else None)
            self.echo(f"trial {trial.id} {state}")
            raise
        proc.terminate(self.grace)
        state, summary, error = outcome(proc, code)
        run.summary.update(summary)
        self.store.end(trial.id, state, code, error, summary)
        self.echo(f"trial {trial.id} {state}" + (f": {error}" if error else ""))
        if state == "failed":
            raise RuntimeError(error)
