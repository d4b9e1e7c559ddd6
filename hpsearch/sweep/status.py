"""A sweep's state and its trials sorted by the sweep metric: `hpsearch status`, and the data the
report draws from."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpsearch.defaults import STALE_AFTER
from hpsearch.formats import fmt_duration, fmt_value
from hpsearch.objective import Objective, finite
from hpsearch.params import DEFAULTS
from hpsearch.sweep.prior import is_prior
from hpsearch.sweep.spec import leaves, varying
from hpsearch.sweep.store import ACTIVE, State, Store, Sweep, Trial


def sweep_state(sweep: Sweep, trials: list[Trial]) -> str:
    # A W&B server hands a preempted trial to whichever agent asks next, maybe on another machine: once it has
    # said `exit` (exhausted), this store's preempted trials were resumed there.
    active = (State.RUNNING,) if sweep.backend == "wandb" else ACTIVE
    return "finished" if sweep.exhausted and not any(t.state in active for t in trials) else "running"


def objectives(sweep: Sweep) -> list[Objective]:
    """The sweep's metrics to optimize: its `metrics` (a multi-objective search), else its metric."""
    chosen = sweep.config.get("metrics") or ([sweep.metric] if sweep.metric else [])
    return [Objective.of(m) for m in chosen]


def planned_epochs(config: dict[str, Any], params: dict[str, Any]) -> int | None:
    """The epochs a trial is to run: its `epochs` parameter, else the trainer's default; None for a sweep's own
    program that takes none (its epochs are its business)."""
    if isinstance(params.get("epochs"), int):
        return params["epochs"]
    return None if config.get("program") else DEFAULTS["epochs"]


def best_epoch(history: list[dict[str, Any]], objective: Objective) -> int | None:
    """The epoch whose record is best by the objective (the first of equals; None if no record has a value of it)."""
    best = min(history, key=lambda r: objective.sort_key(r.get(objective.name)), default=None)
    return best["epoch"] if best is not None and finite(best.get(objective.name)) else None


def pareto_front(trials: list[Trial], goals: list[Objective]) -> set[str]:
    """The finished trials with every objective that no other such trial beats: at least as good on each objective
    and better on one."""
    scored = [t for t in trials if t.state == State.FINISHED and all(finite(t.summary.get(g.name)) for g in goals)]
    if not scored:
        return set()
    signs = np.array([g.sign for g in goals], dtype=float)
    values = np.array([[t.summary[g.name] for g in goals] for t in scored], dtype=float) * signs  # higher: better
    beaten = [bool(np.any(np.all(values >= v, axis=1) & np.any(values > v, axis=1))) for v in values]
    return {t.id for t, b in zip(scored, beaten, strict=True) if not b}


def sorted_trials(sweep: Sweep, trials: list[Trial], front: set[str] | None = None) -> list[Trial]:
    """Best first by the sweep metric (trials without a value last, in creation order); a multi-objective sweep's
    Pareto front (`front`) first, each part by its first metric."""
    goals = objectives(sweep)
    first = goals[0] if goals else None
    front = front or set()

    def key(t: Trial) -> tuple[bool, int, float, int]:
        rank = first.sort_key(t.summary.get(first.name)) if first else (1, 0.0)
        return (t.id not in front, *rank, t.seq)

    return sorted(trials, key=key)


def status(store: Store, sweep: Sweep) -> dict[str, Any]:
    """The `status --json` object. It only reads: a running trial whose agent has sent no heartbeat for longer
    than the lease shows how long it has been quiet (`quiet`, seconds); the next agent that claims work marks
    such a trial crashed."""
    return status_of(sweep, store.trials(sweep.id), store.clock())


def status_of(sweep: Sweep, stored: list[Trial], now: float) -> dict[str, Any]:
    """`status` of the sweep's trials as read at `now` (the database's clock)."""
    goals = objectives(sweep)
    front = pareto_front(stored, goals) if len(goals) > 1 else None
    trials = sorted_trials(sweep, stored, front)

    def quiet(t: Trial) -> float | None:
        silent = now - (t.heartbeat or now)
        return round(silent, 1) if t.state == State.RUNNING and silent > STALE_AFTER else None

    data = {
        "sweep": {
            "id": sweep.id,
            "name": sweep.name,
            "backend": sweep.backend,
            "method": sweep.config.get("method"),
            "metric": goals[0].as_dict() if goals else None,  # (the first objective of a multi-objective search)
            "state": sweep_state(sweep, trials),
            # the sweep's own trials; its priors (results told to it, never run: sweep/prior.py) apart
            "counts": {str(s): n for s in State if (n := sum(t.state == s and not is_prior(t) for t in trials))},
            "priors": sum(map(is_prior, trials)),
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
                "prior": t.attrs.get("prior"),  # {source, trial}: where a prior came from (None: the sweep ran it)
                **({"pareto": t.id in front} if front is not None else {}),
            }
            for t in trials
        ],
    }
    if front is not None:
        data["sweep"]["metrics"] = [g.as_dict() for g in goals]
    return data


def format_status(data: dict[str, Any]) -> str:
    """A terminal table: sweep line, then one row per trial (varying parameters as columns)."""
    s = data["sweep"]
    goals = s.get("metrics") or ([s["metric"]] if s["metric"] else [])
    names = [g["name"] for g in goals]
    counts = ", ".join(f"{n} {state}" for state, n in s["counts"].items()) or "no trials yet"
    counts += f" (and {s['priors']} prior results, not run)" * bool(s.get("priors"))
    said = ", ".join(f"{g['goal']} {g['name']}" for g in goals)
    goal = f" ({said})" if goals else ""
    lines = [f"sweep {s['id']}: {s['method']}{goal}, {s['state']}: {counts}"]
    resumed = any(t["resumes"] for t in data["trials"])  # the column only once some trial was resumed
    front = "metrics" in s  # a multi-objective search marks its Pareto front
    cols = ["trial", "state", *(names or ["metric"])] + ["pareto"] * front + ["epochs", "runtime"]
    cols += ["resumes"] * resumed + s["varying"]
    rows = [
        [
            t["id"],
            t["state"]
            + (f" (agent quiet {fmt_duration(t['quiet'])})" if t["quiet"] else "")
            + " (prior)" * bool(t["prior"]),
            *[fmt_value(t["summary"].get(name)) for name in names or [None]],
        ]
        + ["*" if t.get("pareto") else ""] * front
        + [str(t["epochs"]), f"{t['runtime']:.0f}s"]
        + [str(t["resumes"])] * resumed
        + [fmt_value(t["params"].get(k)) for k in s["varying"]]
        for t in data["trials"]
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    for row in [cols, *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
