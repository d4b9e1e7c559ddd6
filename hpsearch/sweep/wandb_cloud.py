"""The W&B server backend, kept thin: the server's sweep controller suggests and stops trials through
the wandb library's own agent (`wandb.agent`), and each trial runs exactly like a local one
(trial.py). The agent process owns the trial's W&B run: it logs each epoch the trainer writes to its
metrics file and sets the summary, so only one process talks to W&B for a trial. The local store
mirrors every trial, so `status` and `report` work the same for both backends.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from hpsearch.sweep.agent import Slot, outcome, trial_process
from hpsearch.sweep.store import Store, Sweep, Trial, new_id
from hpsearch.sweep.trial import TrialProcess
from hpsearch.train.metrics import epoch_axis, log_epoch

# wandb's agent logs each heartbeat that failed after wandb-core's retries here, then tries again forever.
HEARTBEAT_LOGGER = "wandb.apis.public.sweeps"


class TrialFailed(Exception):
    """Raised into wandb's agent so that it counts the failure (its stop-after-failures rules) and marks the run."""


class ServerError(Exception):
    """The W&B server refused a request or did not answer it within wandb's retry window."""


def _server_error(e: object) -> ServerError:
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
    """A local record of a W&B sweep made elsewhere (`wandb sweep`, another machine): the server keeps its config."""
    return store.add_sweep({}, "wandb", remote=path, sweep_id=path.split("/")[-1])


class WandbAgent:
    """Runs the trials the W&B server hands out, one at a time, until it says `exit` (or --count, a signal, a
    lost server): a hyperband `stop` ends the trial quietly, Ctrl-C/SIGTERM preempts it for the next agent."""

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
        self.ran = self.failures = 0  # trials run; failed in a row
        self.lock = threading.Lock()
        self.current: tuple[Trial, TrialProcess] | None = None  # the running trial, until its thread records its end
        self.lost = False  # the server stopped answering; the process is about to exit

    def run(self) -> int:
        import wandb

        def interrupted(signum: int, frame: Any) -> None:
            self.signum = signum
            raise KeyboardInterrupt  # wandb's agent stops the running trial's thread and returns

        # Run folders and wandb's per-run sweep files go to the sweep's folder, not ./wandb of the caller.
        os.environ["WANDB_DIR"] = str(self.store.root / self.sweep.id)
        (self.store.root / self.sweep.id).mkdir(parents=True, exist_ok=True)
        watch = _HeartbeatFailure(self._give_up)
        logging.getLogger(HEARTBEAT_LOGGER).addHandler(watch)
        previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            wandb.agent(self.sweep.remote or self.sweep.id, function=self._trial, count=self.count)
        except KeyboardInterrupt:
            pass
        except wandb.errors.Error as e:  # it could not register with the server (unknown sweep, no answer)
            raise _server_error(e) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            logging.getLogger(HEARTBEAT_LOGGER).removeHandler(watch)
        if self.signum:
            return 128 + self.signum
        if self.failures:  # wandb's agent also stops after failed runs (it said why above): the sweep goes on
            return 1
        if not (self.count and self.ran >= self.count):
            self.store.mark_exhausted(self.sweep.id)  # else it stopped on the server's `exit`: the sweep is done
        return 0

    def _trial(self) -> None:
        """One run the server handed out (`run`, or `resume` for a preempted one), in a thread of wandb's agent."""
        import wandb

        self.ran += 1
        run = wandb.init(resume="allow")  # the run the controller handed out: its id, parameters and past history
        epoch_axis(run)
        params = dict(run.config)
        known = next((t for t in self.store.trials(self.sweep.id) if t.id == run.id), None)
        with self.store.transaction():
            if known:  # a preempted trial handed back: it continues from its checkpoint
                self.store.claim(known.id, self.id)
                trial = self.store.trial(known.id)
            else:
                trial = self.store.add_trial(self.sweep.id, params, self.id, trial_id=run.id)
        proc = trial_process(self.store, self.sweep, trial, self.slot, "disabled")
        self.store.set_pgid(trial.id, proc.start())
        self.current = (trial, proc)
        verb = "resumed" if known else "started"
        self.echo(f"trial {trial.id} {verb}: " + " ".join(f"{k}={v}" for k, v in params.items()))

        def drain() -> None:
            for record in proc.new_epochs():
                self.store.add_epoch(trial.id, record)
                if record["epoch"] >= run.step:  # a resumed run already holds the epochs before its checkpoint
                    log_epoch(run, record)

        try:
            while (code := proc.poll()) is None:
                drain()
                self.store.heartbeat([trial.id])
                time.sleep(self.poll)
            drain()
        except Exception as e:
            if type(e) is not Exception:
                raise
            # wandb's agent ends a run's thread by raising a bare Exception in it: the controller's `stop`, or
            # the agent was interrupted. Either way this thread ends the trial and its run, quietly.
            proc.terminate(self.grace)
            drain()
            if self.signum:  # W&B hands a run marked preempting that exits non-zero to the next agent
                state, exit_code, note = "preempted", 128 + self.signum, "the agent was interrupted"
                run.mark_preempting()
            else:
                state, exit_code, note = "stopped", 128 + signal.SIGTERM, "stopped by the W&B sweep controller"
            if self._end(trial, state, proc.poll(), note):
                run.finish(exit_code=exit_code)
                self.echo(f"trial {trial.id} {state}: {note}")
            return
        proc.terminate(self.grace)  # workers torchrun left behind, if any
        state, summary, error = outcome(proc, code)
        if not self._end(trial, state, code, error, summary):
            return
        run.summary.update(summary)
        self.echo(f"trial {trial.id} {state}" + (f": {error}" if error else ""))
        if state == "failed":
            run.finish(exit_code=code)
            raise TrialFailed(error)

    def _end(self, trial: Trial, state: str, code: int | None, error: str | None, summary: dict | None = None) -> bool:
        """Record the trial's end, unless the agent gave up on the server (it records the trial itself)."""
        with self.lock:
            if self.lost:
                return False
            self.current = None
        self.store.end(trial.id, state, code, error, summary)
        self.failures = self.failures + 1 if state == "failed" else 0
        return True

    def _give_up(self, why: str) -> None:
        """The server did not answer a heartbeat within wandb's retry window: end the running trial's process
        group, record it and exit. Without os._exit wandb would first try to upload the run, retrying for days."""
        with self.lock:
            if self.lost:
                return
            self.lost, current = True, self.current
        error = f"lost {why}"
        if current:
            trial, proc = current
            proc.terminate(self.grace)
            self.store.end(trial.id, "crashed", proc.poll(), error)
            error += f"; trial {trial.id} ended as crashed (its W&B run is in {os.environ['WANDB_DIR']}/wandb)"
        sys.stdout.flush()
        print(f"hpsearch agent: error: {error}", file=sys.stderr, flush=True)
        os._exit(1)


class _HeartbeatFailure(logging.Handler):
    """Hands the first heartbeat failure that wandb's agent logs (after wandb-core's retries) to `give_up`."""

    def __init__(self, give_up: Callable[[str], None]):
        super().__init__(logging.ERROR)
        self.give_up = give_up

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else record.getMessage()
        self.give_up(str(_server_error(error)))
