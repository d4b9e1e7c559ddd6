"""A sweep's state and its trials sorted by the sweep metric: `hpsearch status`, and the data the
report draws from."""

from __future__ import annotations

import math
from typing import Any

from hpsearch.defaults import STALE_AFTER
from hpsearch.params import format_value
from hpsearch.sweep.spec import leaves, varying
from hpsearch.sweep.store import ACTIVE, State, Store, Sweep, Trial


def sweep_state(sweep: Sweep, trials: list[Trial]) -> str:
    # A W&B server hands a preempted trial to whichever agent asks next, maybe on another machine: once it has
    # said `exit` (exhausted), this store's preempted trials were resumed there.
    active = (State.RUNNING,) if sweep.backend == "wandb" else ACTIVE
    return "finished" if sweep.exhausted and not any(t.state in active for t in trials) else "running"


def sorted_trials(sweep: Sweep, trials: list[Trial]) -> list[Trial]:
    """Best first by the sweep metric (trials without a value last, in creation order)."""
    metric = sweep.metric or {}
    name, sign = metric.get("name"), (-1 if metric.get("goal", "minimize") == "maximize" else 1)

    def key(t: Trial) -> tuple[int, float, int]:
        v = t.summary.get(name) if name else None
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        return (0, sign * v, t.seq) if ok else (1, 0.0, t.seq)

    return sorted(trials, key=key)


def status(store: Store, sweep: Sweep) -> dict[str, Any]:
    """The `status --json` object. It only reads: a running trial whose agent has sent no heartbeat for longer
    than the lease shows how long it has been quiet (`quiet`, seconds); the next agent that claims work marks
    such a trial crashed."""
    return status_of(sweep, store.trials(sweep.id), store.clock())


def status_of(sweep: Sweep, stored: list[Trial], now: float) -> dict[str, Any]:
    """`status` of the sweep's trials as read at `now` (the database's clock)."""
    trials = sorted_trials(sweep, stored)

    def quiet(t: Trial) -> float | None:
        silent = now - (t.heartbeat or now)
        return round(silent, 1) if t.state == State.RUNNING and silent > STALE_AFTER else None

    metric = sweep.metric or {}
    return {
        "sweep": {
            "id": sweep.id,
            "name": sweep.name,
            "backend": sweep.backend,
            "method": sweep.config.get("method"),
            "metric": {"name": metric.get("name"), "goal": metric.get("goal", "minimize")} if metric else None,
            "state": sweep_state(sweep, trials),
            "counts": {str(s): n for s in State if (n := sum(t.state == s for t in trials))},
            "varying": varying(sweep.config),
        },
        "trials": [
            {
                "id": t.id,
                "state": str(t.state),
                "params": leaves(t.params),
                "summary": t.summary,
                "epochs": t.epochs,
                "runtime": round(t.runtime, 1),
                "resumes": t.resumes,
                "error": t.error,
                "quiet": quiet(t),
            }
            for t in trials
        ],
    }


def format_status(data: dict[str, Any]) -> str:
    """A terminal table: sweep line, then one row per trial (varying parameters as columns)."""
    s = data["sweep"]
    metric = (s["metric"] or {}).get("name")
    counts = ", ".join(f"{n} {state}" for state, n in s["counts"].items()) or "no trials yet"
    goal = f" ({s['metric']['goal']} {metric})" if metric else ""
    lines = [f"sweep {s['id']}: {s['method']}{goal}, {s['state']}: {counts}"]
    resumed = any(t["resumes"] for t in data["trials"])  # the column only once some trial was resumed
    cols = ["trial", "state", metric or "metric", "epochs", "runtime"] + ["resumes"] * resumed + s["varying"]
    rows = [
        [
            t["id"],
            t["state"] + (f" (agent quiet {fmt_duration(t['quiet'])})" if t["quiet"] else ""),
            fmt_value(t["summary"].get(metric)),
            str(t["epochs"]),
            f"{t['runtime']:.0f}s",
        ]
        + [str(t["resumes"])] * resumed
        + [fmt_value(t["params"].get(k)) for k in s["varying"]]
        for t in data["trials"]
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    for row in [cols, *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def fmt_value(v: Any) -> str:
    """A table cell: '-' for nothing, 4 significant digits for floats, true/false for booleans."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return format_value(v)


def fmt_duration(seconds: float) -> str:
    """As the reference report writes wall times: 42s, 49m45s, 1h01m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
