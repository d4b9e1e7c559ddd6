"""A W&B server for the tests, small enough to read: the GraphQL operations and the file_stream endpoint
that the real wandb client (its Python SDK and the Go `wandb-core` service) uses on the sweep path, with
W&B's open-source `sweeps` engine deciding suggestions and hyperband stops over the runs it holds, as
W&B's sweep controller does. It keeps in memory what it received (sweeps; runs with their config, history,
summary, files and exit), for the tests to check, and can fail on purpose (500s, stalls, gone for good).

What each operation answers, and on what it rests:
- Every operation's request and answer shape is the wandb client's own: the queries it sends (wandb 0.31, its
  SDK and wandb-core; found by running the real client against this server and reading its requests), and the
  fields it reads back. Any operation the client asks for that is not served here fails the test that met it.
- Modelled on W&B's documented behaviour: sweeps (`wandb sweep`'s UpsertSweep, `wandb.Api().sweep`'s GetSweep);
  agents (CreateAgent; Heartbeat answering `run`, `resume`, `stop` and `exit` as wandb's agent acts on them);
  suggestions and hyperband stops decided by W&B's own `sweeps` engine; run_cap as W&B documents it for its
  controller; runs (UpsertBucket, RunResumeStatus, file_stream, file uploads); a preempted run handed out again.
- Guesses (W&B documents the scheduler's protocol nowhere; this is how wandb-core's `wandb sweep-scheduler`
  behaves against it, read from its requests): the SWEEPS_LOCAL_SCHEDULER server feature it requires;
  EnqueueSweepRun queuing a run that the sweep's agents take in order, while the sweep is RUNNING (the scheduler
  counts run_cap itself and then finishes the sweep with UpsertSweepState: agents then hear `exit`); StopRun
  reaching the run's agent as `stop` at its next heartbeat (the run ends `killed`); sampledHistory spreading at
  most `samples` rows evenly over the run's rows, its last kept.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

import sweeps

API_KEY = "k" * 40
ENTITY = "ada"  # the viewer's default entity


class GraphQLError(Exception):
    """Answered as a GraphQL error (HTTP 200 with `errors`), as W&B answers an unknown sweep."""


@dataclass
class Run:
    id: str
    entity: str
    project: str
    sweep: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # what the controller handed out: {name: {"value": v}}
    config: dict[str, Any] = field(default_factory=dict)  # what the client uploaded, minus wandb's own `_wandb`
    wandb_config: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    output: dict[int, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    state: str = "pending"  # named as the engine's RunState
    exitcode: int | None = None
    preempting: bool = False
    handed_out: list[str] = field(default_factory=list)  # the commands that gave it to an agent: run, resume
    stop_at: int | None = None  # history rows the controller had when it decided to stop the run
    began: float | None = None  # when a client first upserted it (time.time())
    ended: float | None = None  # when its file_stream said complete
    agent: str | None = None  # the agent it was last handed to
    queued: bool = False  # a scheduler's run, waiting for an agent to take it

    def engine_run(self) -> sweeps.SweepRun:
        return sweeps.SweepRun(
            name=self.id, state=self.state, config=self.params, history=self.history, summary_metrics=self.summary
        )


@dataclass
class Sweep:
    id: str
    entity: str
    project: str
    config: dict[str, Any]
    state: str = "RUNNING"


@dataclass
class Fault:
    target: str  # a GraphQL operation name, or "file_stream"
    kind: str  # "500": answer 500; "stall": hold the request, then drop it unanswered
    seconds: float
    until: float | None = None  # set by the first request it meets: a fault always hits


class WandbServer:
    def __init__(self) -> None:
        self.sweeps: dict[str, Sweep] = {}
        self.runs: dict[str, Run] = {}
        self.agents: dict[str, str] = {}  # agent id -> sweep id
        self.faults: list[Fault] = []
        self.failed: list[tuple[str, str]] = []  # (target, kind) of each request a fault answered
        self.unserved: list[str] = []  # GraphQL operations asked for that this server does not know
        self.lock = threading.RLock()
        self._ids = 0
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> WandbServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Gone for good: the port refuses connections from now on."""
        if self._thread.is_alive():
            self.http.shutdown()
            self.http.server_close()

    def env(self) -> dict[str, str]:
        """What a client needs to reach this server."""
        return {"WANDB_BASE_URL": self.url, "WANDB_API_KEY": API_KEY}

    def fault(self, target: str, kind: str, seconds: float) -> None:
        """From the next request to `target` on, fail them all for `seconds` (after the faults queued before)."""
        with self.lock:
            self.faults.append(Fault(target, kind, seconds))

    def heal(self) -> None:
        """Answer again from now on: every fault, pending or in its window, ends."""
        with self.lock:
            for f in self.faults:
                f.until = time.monotonic() - 1
            self.faults.clear()

    def faults_pending(self) -> bool:
        with self.lock:
            return any(f.until is None or f.until > time.monotonic() for f in self.faults)

    def sweep_runs(self, sweep_id: str) -> list[Run]:
        with self.lock:
            return [r for r in self.runs.values() if r.sweep == sweep_id]

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:04d}"

    def _fault_for(self, target: str) -> Fault | None:
        with self.lock:
            now = time.monotonic()
            fault = next((f for f in self.faults if f.target == target and (f.until or now) >= now), None)
            if fault and fault.until is None:
                fault.until = now + fault.seconds
            return fault

    # ---- GraphQL: one method per operation, each returning the `data` object ----
    def graphql(self, op: str, v: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"_gql_{op}", None)
        with self.lock:
            if handler is None:
                self.unserved.append(op)
                raise GraphQLError(f"operation {op} is not served here")
            return handler(v)

    def _gql_Viewer(self, v: dict) -> dict:
        viewer = {"id": "u1", "entity": ENTITY, "username": ENTITY, "email": "", "flags": "{}"}
        return {"viewer": {**viewer, "teams": {"edges": []}}}

    def _gql_GetDefaultEntity(self, v: dict) -> dict:
        return {"viewer": {"id": "u1", "entity": ENTITY}}

    def _gql_ServerFeaturesQuery(self, v: dict) -> dict:
        # (wandb-core's `wandb sweep-scheduler` starts only on a server that says it supports it)
        return {"serverInfo": {"features": [{"name": "SWEEPS_LOCAL_SCHEDULER", "isEnabled": True}]}}

    def _gql_OrganizationCoreWeaveOrganizationID(self, v: dict) -> dict:
        return {"entity": {"organization": None}}

    def add_sweep(self, config: dict[str, Any], project: str, entity: str = ENTITY) -> Sweep:
        """A sweep as `wandb sweep` or the W&B UI makes it."""
        with self.lock:
            sweep = Sweep(self._new_id("sw"), entity, project, config)
            self.sweeps[sweep.id] = sweep
            return sweep

    def _gql_UpsertSweep(self, v: dict) -> dict:
        sweep = self.add_sweep(
            yaml.safe_load(v["config"]), v.get("projectName") or "uncategorized", v.get("entityName") or ENTITY
        )
        project = {"id": "p1", "name": sweep.project, "entity": {"id": "e1", "name": sweep.entity}}
        return {"upsertSweep": {"sweep": {"name": sweep.id, "project": project}, "configValidationWarnings": []}}

    def _sweep(self, v: dict) -> Sweep:
        sweep = self.sweeps.get(v.get("sweep") or v.get("sweepName") or "")
        if sweep is None:
            raise GraphQLError(f"sweep {v.get('sweep')} not found")
        return sweep

    def _gql_GetSweep(self, v: dict) -> dict:
        """`wandb.Api().sweep(path)`: the sweep and its config (YAML), as `wandb sweep` registered it."""
        sweep = self.sweeps.get(v["name"])
        if sweep is None:
            return {"project": {"sweep": None}}
        runs = self.sweep_runs(sweep.id)
        return {"project": {"sweep": {"__typename": "Sweep", "id": sweep.id, "name": sweep.id, "displayName": sweep.id,
                                      "method": sweep.config.get("method"), "state": sweep.state, "description": None,
                                      "bestLoss": None, "config": yaml.safe_dump(sweep.config), "createdAt": None,
                                      "updatedAt": None, "runCount": len(runs), "runCountExpected": None}}}  # fmt: skip

    def _gql_SweepConfig(self, v: dict) -> dict:
        sweep = self._sweep(v)
        config = yaml.safe_dump(sweep.config)
        scheduler_run = f"{sweep.id}-scheduler"
        return {"project": {"sweep": {"id": sweep.id, "state": sweep.state, "config": config,
                                      "displayName": sweep.id, "controllerRunName": scheduler_run}}}  # fmt: skip

    def _poll_runs(self, runs: list[Run], specs: list[str]) -> dict[str, Any]:
        """Runs as a scheduler polls them, one page: each with the rows of each history spec (the keys it names,
        in rows that hold one of them besides _step, at most `samples` of them, evenly spread, the last kept)."""
        specs = [json.loads(spec) for spec in specs]

        def sampled(run: Run) -> list[list[dict[str, Any]]]:
            out = []
            for spec in specs:
                keys = spec.get("keys") or []
                rows = [row for row in ({k: r[k] for k in keys if k in r} for r in run.history) if set(row) - {"_step"}]
                n = spec.get("samples") or len(rows)
                out.append(
                    [rows[round(i * (len(rows) - 1) / (n - 1))] for i in range(n)] if len(rows) > n > 1 else rows
                )
            return out

        edges = [{"node": {"id": r.id, "name": r.id, "state": r.state, "config": json.dumps(r.params),
                           "summaryMetrics": json.dumps(r.summary), "sampledHistory": sampled(r)}}
                 for r in runs]  # fmt: skip
        return {"pageInfo": {"hasNextPage": False, "endCursor": None}, "edges": edges}

    def _gql_SweepRunsWithHistory(self, v: dict) -> dict:
        sweep = self._sweep(v)
        runs = self._poll_runs(self.sweep_runs(sweep.id), v.get("historySpecs") or [])
        return {"project": {"sweep": {"state": sweep.state, "runs": runs}}}

    def _gql_SweepWatchedRuns(self, v: dict) -> dict:
        """The runs a scheduler watches, by name (the one filter it sends: {"name": {"$in": [...]}})."""
        sweep = self._sweep(v)
        names = set(json.loads(v["filters"]).get("name", {}).get("$in", []))
        watched = [r for r in self.runs.values() if r.id in names]
        return {"project": {"sweep": {"state": sweep.state}, "runs": self._poll_runs(watched, v["historySpecs"])}}

    def _gql_Runs(self, v: dict) -> dict:
        """`wandb.Api().sweep(path).runs`: the project's runs (a sweep's, by the filter {"$and": [{"sweep": ID}]}) in
        one page, each with its config, summary and state (a lazy client asks for config and summary again: Run)."""
        sweeps = [f["sweep"] for f in json.loads(v.get("filters") or "{}").get("$and", []) if "sweep" in f]
        runs = [r for r in self.runs.values() if r.project == v["project"] and r.sweep in (sweeps or [r.sweep])]
        edges = [{"node": self._run_node(r), "cursor": r.id} for r in runs]
        page = {"edges": edges, "pageInfo": {"endCursor": None, "hasNextPage": False}}
        return {"project": {"internalId": "1", "runCount": len(runs), "readOnly": False, "runs": page}}

    def _run_node(self, run: Run) -> dict[str, Any]:
        keys = sorted({k for row in run.history for k in row})
        return {"id": run.id, "projectId": "1", "tags": [], "name": run.id, "displayName": run.id,
                "sweepName": run.sweep, "state": run.state, "group": run.group, "jobType": None, "commit": None,
                "readOnly": False, "createdAt": "2026-01-01T00:00:00", "heartbeatAt": "2026-01-01T00:00:00",
                "description": None, "notes": None, "systemMetrics": "{}", "historyLineCount": len(run.history),
                "user": {"name": ENTITY, "username": ENTITY}, "summaryMetrics": json.dumps(run.summary),
                "config": json.dumps({k: {"value": x} for k, x in run.config.items()}),
                "historyKeys": {"keys": {k: {} for k in keys}, "lastStep": len(run.history) - 1}}  # fmt: skip

    def _gql_RunSampledHistory(self, v: dict) -> dict:
        """`Run.history(keys=...)`: the run's rows of each spec, sampled as a scheduler's poll samples them."""
        (edge,) = self._poll_runs([self.runs[v["name"]]], v["specs"])["edges"]
        return {"project": {"run": {"sampledHistory": edge["node"]["sampledHistory"]}}}

    def _gql_EnqueueSweepRun(self, v: dict) -> dict:
        """A scheduler's run for the sweep's agents to take, in the order it came."""
        sweep = self._sweep({"sweep": v["id"]})
        run = Run(self._new_id("run"), sweep.entity, sweep.project, sweep.id, json.loads(v["config"]), queued=True)
        self.runs[run.id] = run
        return {"enqueueSweepRun": {"id": run.id, "runQueueItemId": self._new_id("rqi")}}

    def _gql_StopRun(self, v: dict) -> dict:
        """A scheduler's pruner ended the run: its agent hears `stop` at its next heartbeat."""
        run = self.runs[v["id"]]
        if run.stop_at is None and run.state in ("pending", "running"):
            run.stop_at = len(run.history)
        return {"stopRun": {"success": True}}

    def _gql_UpsertSweepState(self, v: dict) -> dict:
        """A scheduler that is done finishes the sweep: agents with nothing to run hear `exit`."""
        sweep = self._sweep({"sweep": v["id"]})
        sweep.state = v["state"]
        return {"upsertSweep": {"sweep": {"state": sweep.state}}}

    def _gql_CreateAgent(self, v: dict) -> dict:
        self._sweep(v)  # (one that exists)
        agent = self._new_id("ag")
        self.agents[agent] = v["sweep"]
        return {"createAgent": {"agent": {"id": agent}}}

    def _gql_Heartbeat(self, v: dict) -> dict:
        commands = self._controller(v["id"], json.loads(v.get("runState") or "{}"))
        return {"agentHeartbeat": {"agent": {"id": v["id"]}, "commands": json.dumps(commands)}}

    def _controller(self, agent: str, run_state: dict[str, bool]) -> list[dict[str, Any]]:
        """W&B's controller at an agent's heartbeat: stop its run if hyperband said so; a free agent gets a
        preempted run back, else the engine's next suggestion, else `exit`."""
        sweep = self.sweeps[self.agents[agent]]
        runs = self.sweep_runs(sweep.id)
        for run in runs:
            if run.id in run_state and run.stop_at is not None and run.state == "running":
                return [{"type": "stop", "run_id": run.id}]
        if run_state:
            return []  # one run per agent at a time, as wandb's agent runs them
        requeued = next((r for r in runs if r.state == "preempted"), None)
        if requeued:
            requeued.agent = agent
            return [self._hand_out(requeued, "resume")]
        if "scheduler" in sweep.config:
            # A scheduler decides: its queued runs, in order, while it keeps the sweep running (it counts run_cap
            # itself, in finished runs, and then finishes the sweep).
            queued = next((r for r in runs if r.queued), None)
            if sweep.state != "RUNNING":
                return [{"type": "exit"}]
            if queued is None:
                return []
            queued.queued, queued.agent = False, agent
            return [self._hand_out(queued, "run")]
        cap = sweep.config.get("run_cap")
        engine_runs = [r.engine_run() for r in runs]
        suggestion = (
            None if cap and len(runs) >= cap else sweeps.next_run(sweeps.SweepConfig(sweep.config), engine_runs)
        )
        if suggestion is None:
            return [{"type": "exit"}]
        run = Run(self._new_id("run"), sweep.entity, sweep.project, sweep.id, suggestion.config, agent=agent)
        self.runs[run.id] = run
        return [self._hand_out(run, "run")]

    @staticmethod
    def _hand_out(run: Run, kind: str) -> dict[str, Any]:
        run.state, run.preempting = "pending", False
        run.handed_out.append(kind)
        return {"type": kind, "run_id": run.id, "args": run.params, "program": "train.py"}

    def _gql_UpsertBucket(self, v: dict) -> dict:
        run = self.runs.get(v["name"])
        inserted = run is None
        if run is None:
            run = Run(v["name"], v.get("entity") or ENTITY, v.get("project") or "uncategorized", v.get("sweep"))
            self.runs[run.id] = run
        if run.state == "pending":
            run.state = "running"
            run.began = run.began or time.time()
        if v.get("config"):
            config = json.loads(v["config"])
            run.wandb_config = config.pop("_wandb", {}).get("value", run.wandb_config)
            run.config = {k: c.get("value") for k, c in config.items()}
        run.group = v.get("groupName") or run.group
        if v.get("summaryMetrics"):
            run.summary.update(json.loads(v["summaryMetrics"]))
        return {"upsertBucket": {"bucket": self._bucket(run), "inserted": inserted}}

    def _bucket(self, run: Run) -> dict[str, Any]:
        project = {"id": "p1", "name": run.project, "entity": {"id": "e1", "name": run.entity}}
        return {
            "id": run.id,
            "name": run.id,
            "displayName": run.id,
            "description": "",
            "config": json.dumps({k: {"value": x} for k, x in run.config.items()}),
            "sweepName": run.sweep,
            "project": project,
            "historyLineCount": len(run.history),
        }

    def _gql_RunResumeStatus(self, v: dict) -> dict:
        run = self.runs.get(v["name"])
        model = {"id": "p1", "name": v.get("project"), "entity": {"id": "e1", "name": v.get("entity") or ENTITY}}
        if run is None or not run.wandb_config:
            return {"model": {**model, "bucket": None}}
        model["bucket"] = {
            **self._bucket(run),
            "summaryMetrics": json.dumps(run.summary),
            "logLineCount": len(run.output),
            "historyLineCount": len(run.history),
            "eventsLineCount": len(run.events),
            "historyTail": json.dumps([json.dumps(h) for h in run.history[-1:]]),
            "eventsTail": json.dumps([json.dumps(e) for e in run.events[-1:]]),
            "tags": [],
            "notes": None,
            "wandbConfig": json.dumps({k: x for k, x in run.wandb_config.items() if k == "t"}),
        }
        return {"model": model}

    def _gql_CreateRunFiles(self, v: dict) -> dict:
        base = f"{self.url}/storage/{v['entity']}/{v['project']}/{v['run']}"
        files = [{"name": name, "uploadUrl": f"{base}/{name}"} for name in v["files"]]
        return {"createRunFiles": {"runID": v["run"], "uploadHeaders": [], "files": files}}

    # ---- file_stream: history, summary, console, events, and the run's end ----
    def file_stream(self, run_id: str, body: dict[str, Any]) -> None:
        with self.lock:
            run = self.runs[run_id]
            for name, chunk in body.get("files", {}).items():
                lines, offset = chunk["content"], chunk["offset"]
                if name == "wandb-history.jsonl":
                    run.history[offset:] = [json.loads(line) for line in lines]
                elif name == "wandb-summary.json":
                    run.summary = json.loads(lines[-1])
                elif name == "wandb-events.jsonl":
                    run.events[offset:] = [json.loads(line) for line in lines]
                elif name == "output.log":
                    run.output.update({offset + i: line for i, line in enumerate(lines)})
            run.preempting = run.preempting or bool(body.get("preempting"))
            if body.get("complete"):
                run.ended = time.time()
                run.exitcode = body.get("exitcode")
                run.state = self._final_state(run)
            self._decide_stops(run)

    @staticmethod
    def _final_state(run: Run) -> str:
        if run.stop_at is not None:
            return "killed"
        if run.exitcode == 0:
            return "finished"
        return "preempted" if run.preempting else "failed"  # a preempted run is handed out again

    def _decide_stops(self, run: Run) -> None:
        """Hyperband's verdict as soon as new history arrives; the agent hears it at its next heartbeat."""
        sweep = self.sweeps.get(run.sweep or "")
        if sweep is None or "early_terminate" not in sweep.config or run.state != "running" or run.stop_at is not None:
            return
        runs = [r.engine_run() for r in self.sweep_runs(sweep.id)]
        if any(r.name == run.id for r in sweeps.stop_runs(sweep.config, runs)):
            run.stop_at = len(run.history)

    def upload(self, path: str, data: bytes) -> None:
        _, _, _, _, run_id, name = path.split("/", 5)
        with self.lock:
            self.runs[run_id].files[name] = data


def _handler(server: WandbServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode():
                return self._answer(401, {"errors": [{"message": "bad API key"}]})
            if self.path == "/graphql":
                request = json.loads(body)
                op = request.get("operationName") or re.search(r"(?:query|mutation)\s+(\w+)", request["query"])[1]
                if self._faulty(op):
                    return
                try:
                    return self._answer(200, {"data": server.graphql(op, request.get("variables") or {})})
                except GraphQLError as e:
                    return self._answer(200, {"errors": [{"message": str(e)}]})
            match = re.fullmatch(r"/files/[^/]+/[^/]+/([^/]+)/file_stream", self.path)
            if match:
                if self._faulty("file_stream"):
                    return
                server.file_stream(match[1], json.loads(body))
                return self._answer(200, {"exitcode": None, "limits": {}})
            self._answer(404, {})

        def do_PUT(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.path.startswith("/storage/"):
                return self._answer(404, {})
            server.upload(self.path, data)
            self._answer(200, {})

        def _faulty(self, target: str) -> bool:
            fault = server._fault_for(target)
            if fault is None:
                return False
            with server.lock:
                server.failed.append((target, fault.kind))
            if fault.kind == "500":
                self._answer(500, {"errors": [{"message": "injected fault"}]})
            else:  # stall: hold the request until the window ends, then drop the connection unanswered
                while time.monotonic() < (fault.until or 0):
                    time.sleep(0.05)
                self.close_connection = True
            return True

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up on this request (its timeout); it retries

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
