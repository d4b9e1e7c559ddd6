"""A W&B server's sweep, run by its own controller: the server decides (it hands each slot its run and stops it),
so no engine is asked; `ServerController` holds the runs beside the store-backed `SweepController`
(sweep/controller.py), and the agent runs the trials exactly like local ones (sweep/agent.py, sweep/trial.py).
Also here: registering a sweep with the server, and mirroring one made elsewhere.

Each slot of the agent is its own agent as the server sees it, registered on its own and heartbeating its own
run's state, exactly as if one `wandb agent` ran per slot with its own CUDA_VISIBLE_DEVICES: the server hands
each slot its run, and its `stop` reaches the right trial. One hpsearch process owns the slots' W&B runs
(wandb supports several runs in one process): it logs each epoch the trainer writes to its metrics file and sets
the summary, so only one process talks to W&B per trial. The local store mirrors every trial, so `status` and
`report` work the same for every sweep.

wandb has no public API for an agent's own protocol; the calls here (CreateAgent, Heartbeat) are the ones its
own agent (`wandb.agents.pyagent`) makes, through the same wandb-core connection and its retries.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
from typing import Any

from hpsearch.defaults import POLL, WANDB_HEARTBEAT, WANDB_TIMEOUT
from hpsearch.sweep.controller import Claim, Lost, Start
from hpsearch.sweep.engine import Decision
from hpsearch.sweep.spec import leaves
from hpsearch.sweep.status import planned_epochs
from hpsearch.sweep.store import State, Store, Sweep, Trial
from hpsearch.train.metrics import epoch_axis, log_epoch

AGENT_HEARTBEAT = """
mutation Heartbeat($id: ID!, $metrics: JSONString, $runState: JSONString) {
    agentHeartbeat(input: {id: $id, metrics: $metrics, runState: $runState}) { agent { id } commands }
}
"""


class ServerError(Exception):
    """The W&B server refused a request or did not answer it within wandb's retry window."""


def server_error(e: object) -> str:
    """wandb's error as one line naming the server; wandb-core's errors end in the last attempt's cause."""
    why = str(e).split(" while retrying")[0].rsplit(": ", 1)[-1].strip() or type(e).__name__
    return f"the W&B server at {os.environ.get('WANDB_BASE_URL', 'api.wandb.ai')}: {why}"


def create_sweep(config: dict[str, Any], project: str, entity: str | None) -> str:
    """Register the sweep with the W&B server; return its path ENTITY/PROJECT/ID."""
    import wandb

    try:
        sweep_id = wandb.sweep(sweep=config, project=project, entity=entity)
        api = wandb.Api()  # without --entity: the one the server put the sweep in (wandb.sweep exports it)
        return f"{entity or api.settings['entity'] or api.default_entity}/{project}/{sweep_id}"
    except wandb.errors.Error as e:
        raise ServerError(server_error(e)) from None


def mirror_sweep(store: Store, path: str) -> Sweep:
    """A local record of a W&B sweep made elsewhere (`wandb sweep`, another machine), with the config the server
    keeps for it (its program, metric, parameters, scheduler: what the agent runs and how). Raises ServerError."""
    import wandb

    try:
        config = wandb.Api().sweep(path).config
    except Exception as e:  # wandb.errors.Error (an unknown sweep: "Could not find sweep ..."), or wandb-core's own
        raise ServerError(server_error(e)) from None
    return store.add_sweep(dict(config), "wandb", remote=path, sweep_id=path.split("/")[-1])


class _SlotAgent:
    """One slot as the W&B server sees it: an agent of its own that heartbeats (in a thread, so a slow server
    never holds up the supervision of trials) with its run's state. A free slot heartbeats (which asks the server
    for a run) only while the agent keeps asking for a trial for it, so the server never hands it a run that
    will not start (after --count, a signal, ...)."""

    def __init__(self, owner: Server, agent_id: str):
        self.owner, self.id = owner, agent_id
        self.run_id: str | None = None  # the run the server handed to this slot, until it ends
        self.command: dict[str, Any] | None = None  # a `run` or `resume` not yet started
        self.stop = False  # the server said stop for this slot's run
        self.wanted_at = -math.inf  # when the agent last asked for a trial for this slot
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"wandb-agent-{agent_id}", daemon=True)

    def _loop(self) -> None:
        while not self.owner.closing:
            with self.owner.lock:
                state = {self.run_id: True} if self.run_id else {}
                wanted = time.monotonic() - self.wanted_at < 2 * POLL and self.command is None
                asking = bool(state) or wanted
            if asking:
                try:
                    commands = self.owner.heartbeat(self.id, state)
                except Exception as e:  # wandb-core gave up after its retries: the server is gone
                    self.owner.lose(f"lost {server_error(e)}")
                    return
                with self.owner.lock:
                    for command in commands:
                        self._take(command)
            self.wake.wait(WANDB_HEARTBEAT)
            self.wake.clear()

    def _take(self, command: dict[str, Any]) -> None:
        kind = command.get("type")
        if kind in ("run", "resume") and self.run_id is None:
            self.command, self.run_id = command, command["run_id"]
        elif kind == "stop" and command.get("run_id") == self.run_id:
            self.stop = True
        elif kind == "exit":
            self.owner.done = True


class Server:
    """The agent's slots as the W&B server sees them: one registered W&B agent each, heartbeating in its own
    thread; what the server handed and said to each, under one lock."""

    def __init__(self, sweep: Sweep, slots: int):
        """Registers one W&B agent per slot with the server; raises ServerError (one line) if it refuses."""
        import wandb
        from wandb.apis.public.sweeps import _register_agent

        self.entity, self.project, self.sweep_name = (sweep.remote or "//" + sweep.id).split("/")
        self.lock = threading.Lock()
        self.closing = False
        self.done = False  # the server said exit: it hands out nothing more
        self.lost: str | None = None  # why the server cannot be reached any more
        try:
            self.api = wandb.Api()
            host = socket.gethostname()
            ids = [
                _register_agent(
                    self.api, host, sweep_id=self.sweep_name, project=self.project or None, entity=self.entity or None
                )["id"]
                for _ in range(slots)
            ]
        except Exception as e:  # wandb.errors.Error, or wandb-core's own
            raise ServerError(server_error(e)) from None
        self.slots = [_SlotAgent(self, i) for i in ids]
        for slot in self.slots:
            slot.thread.start()

    def heartbeat(self, agent_id: str, run_state: dict[str, bool]) -> list[dict[str, Any]]:
        data = self.api._service_api.execute_graphql(
            AGENT_HEARTBEAT,
            variables={"id": agent_id, "metrics": "{}", "runState": json.dumps(run_state)},
            timeout=WANDB_TIMEOUT,
        )
        return json.loads(data["agentHeartbeat"]["commands"] or "[]")

    def lose(self, why: str) -> None:
        with self.lock:
            self.lost = self.lost or why

    def _slot_of(self, run_id: str) -> _SlotAgent | None:
        return next((s for s in self.slots if s.run_id == run_id), None)

    def handed(self, slot: int) -> dict[str, Any] | None:
        """The `run` or `resume` command the server handed to this slot; None until one came."""
        agent = self.slots[slot]
        with self.lock:
            command, agent.command = agent.command, None
            first_ask = command is None and time.monotonic() - agent.wanted_at > 2 * POLL
            if command is None and not self.done:
                agent.wanted_at = time.monotonic()
        if command is None and first_ask:  # a slot that just became free asks at once, then at the heartbeat's pace
            agent.wake.set()
        return command

    def hand_back(self, slot: int, command: dict[str, Any]) -> None:
        """The store could not take the run handed to `slot`: hand it again next time."""
        with self.lock:
            self.slots[slot].command = command

    def stopped(self, run_id: str) -> bool:
        """Whether the server said stop for the run."""
        with self.lock:
            slot = self._slot_of(run_id)
            return bool(slot and slot.stop)

    def free(self, run_id: str) -> None:
        """Free the run's slot; its run is another agent's now, or the server's to hand out again."""
        with self.lock:
            slot = self._slot_of(run_id)
            if slot:
                slot.run_id, slot.stop = None, False

    def close(self) -> None:
        """Stop heartbeating."""
        self.closing = True
        for slot in self.slots:
            slot.wake.set()


class ServerController:
    """The controller of an agent on a W&B server's sweep (controller.Controller): the server hands each slot its
    run and stops it, so no engine is asked and nothing of the store-backed claims applies (no resume of crashed
    trials, no run_cap: the server's). Each run is mirrored into the store, a known one taken (a `resume`: the
    server hands a preempted run to whichever agent asks next), a new one added, and held there exactly like a
    local trial (leases, heartbeats, records); this process owns each trial's W&B run and logs its epochs."""

    stopper = "the W&B sweep controller"
    stops_anytime = True  # the server's stop comes on a slot's heartbeat

    def __init__(self, store: Store, sweep: Sweep, agent_id: str, server: Server):
        self.store, self.sweep, self.agent_id, self.server = store, sweep, agent_id, server
        self.dir = store.root / sweep.id  # run folders go to the sweep's folder, not ./wandb of the caller
        self.dir.mkdir(parents=True, exist_ok=True)
        self.done = False
        self.runs: dict[str, Any] = {}  # trial id -> its wandb Run

    def next_trial(self, slot: int) -> Claim | None:
        """The run the server handed to `slot`, claimed: a known one resumes (from its checkpoint), a new one
        starts; None until the server hands one (or after its exit: `done`)."""
        if self.done:
            return None
        command = self.server.handed(slot)
        if command is None:
            self.done = self.server.done
            return None
        run_id, params = command["run_id"], {k: v["value"] for k, v in command["args"].items()}
        try:  # the store first: if the database does not answer, the server's run is handed again next round
            known = next((t for t in self.store.trials(self.sweep.id) if t.id == run_id), None)
            if known and self.store.take(known, self.agent_id):
                claim = Claim(self.store.trial(known.id), Start.RESUMED)
            elif known:  # another agent took it first: a lost race, not an error
                self.server.hand_back(slot, command)
                return None
            else:
                claim = Claim(self.store.add_trial(self.sweep.id, params, self.agent_id, run_id), Start.STARTED)
        except Exception:
            self.server.hand_back(slot, command)
            raise
        self._init_run(claim.trial)
        claim.planned = planned_epochs(self.sweep.config, leaves(claim.trial.params))
        return claim

    def _init_run(self, trial: Trial) -> None:
        """Start the trial's W&B run in this process."""
        import wandb

        server = self.server
        try:
            run = wandb.init(
                id=trial.id,
                entity=server.entity or None,
                project=server.project or None,
                config=trial.params,
                dir=self.dir,
                resume="allow",  # a `resume` hands back a preempted run: its history goes on where it stopped
                reinit="create_new",
                settings=wandb.Settings(sweep_id=server.sweep_name, silent=True),
            )
        except Exception as e:
            raise Lost(f"lost {server_error(e)}") from None
        epoch_axis(run)
        self.runs[trial.id] = run

    def started(self, trial: Trial, pgid: int) -> None:
        self.store.set_process(trial.id, self.agent_id, pgid, socket.gethostname())

    def record_epochs(self, trial: Trial, records: list[dict[str, Any]]) -> None:
        self.store.add_epochs(trial.id, records, self.agent_id, self.sweep.series_metric)
        run = self.runs[trial.id]
        for record in records:
            if record["epoch"] >= run.step:  # a resumed run already holds the epochs before its checkpoint
                log_epoch(run, record)

    def decide(self, trial: Trial) -> Decision:
        return Decision.STOP if self.server.stopped(trial.id) else Decision.CONTINUE

    def beat(self, trials: list[Trial]) -> list[str]:
        if self.server.lost:
            raise Lost(self.server.lost)
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
        run = self.runs[trial.id]
        self.abandon(trial)
        if self.server.lost:  # the run cannot reach the server; close() leaves without waiting on it
            return
        if state == State.PREEMPTED:  # W&B hands a run marked preempting that exits non-zero to the next agent
            run.mark_preempting()
        if summary and state == State.FINISHED:
            run.summary.update(summary)
        codes = {State.FINISHED: 0, State.STOPPED: 128 + signal.SIGTERM}
        run.finish(exit_code=codes.get(state, exit_code or 1))

    def abandon(self, trial: Trial) -> None:
        self.runs.pop(trial.id, None)
        self.server.free(trial.id)

    def close(self) -> None:
        """Stop heartbeating; after the server's exit the store records the sweep exhausted. After a lost server,
        raises Lost: the process must then leave without wandb's exit handlers, which would first try to upload
        the runs (retrying for days)."""
        if self.server.done and not self.server.lost:
            self.store.mark_exhausted(self.sweep.id)
        self.server.close()
        if self.server.lost:
            raise Lost(self.server.lost)
