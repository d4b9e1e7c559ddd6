"""Prior results: `hpsearch create-sweep FILE --prior SOURCE` starts a sweep from what an earlier one found, as W&B's
`prior_runs` and Optuna's `add_trial` do. SOURCE is an earlier sweep of the same store (SWEEP_ID), a curve table
(FILE.jsonl, `hpsearch simulate --export-curves`'s format) or a W&B sweep (ENTITY/PROJECT/SWEEP_ID, read from its
server through W&B's public API).

A prior is a trial of the new sweep stored already ended and never run: finished, with its epoch records, its
summary and `attrs["prior"]` saying where it came from. So every engine that reads the sweep's trials learns it as
already evaluated (W&B's bayes as a finished run, Optuna's study as a complete trial, Ax as a completed arm, a grid
as a point done), and the controller leaves it out of run_cap. Only finished trials whose parameters fit the new
space are taken: a key the new sweep adds takes its fixed value, else the trainer's default; a key it drops must
have had one value across the source (else the source is refused: its results depend on that key).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.objective import finite
from hpsearch.params import DEFAULTS
from hpsearch.simulate.curves import CurveTable, SourceError
from hpsearch.sweep.spec import BOUNDED, HP, leaves
from hpsearch.sweep.store import State, Store, Sweep, Trial

ALLOWED = (
    "SWEEP_ID (an earlier sweep in this store), FILE.jsonl (a curve table, the --export-curves format), "
    "ENTITY/PROJECT/SWEEP_ID (a W&B sweep, with a W&B login)"
)
TAKEN = (State.FINISHED,)  # the source trials whose results are complete
HISTORY_ROWS = 100_000  # (W&B samples a run's history down to this many rows: every epoch of any run)
_NONE = object()  # a key with no value to take
_LOG_V1 = {HP.LOG_UNIFORM_V1, HP.Q_LOG_UNIFORM_V1}  # (bounds given as exponents)


class PriorError(ValueError):
    """A --prior source that cannot be used; one line: what, and what is allowed."""


@dataclass
class Prior:
    """A result to tell the new sweep: its parameters in the new sweep's shape, epoch records and summary."""

    params: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    attrs: dict[str, Any]


def is_prior(trial: Trial) -> bool:
    """A trial told to the sweep from a prior source, not run by it (not counted in its run_cap)."""
    return "prior" in trial.attrs


def read_priors(sources: list[str], config: dict[str, Any], store: Store | None) -> list[Prior]:
    """Every source's fitting results for a sweep of `config`; `store`: the store whose sweeps SWEEP_ID names (None
    if there is none yet). Raises PriorError naming the source."""
    out: list[Prior] = []
    for source in sources:
        rows = _rows(source, config, store)
        varied = {k for k in {k for p, _, _, _ in rows for k in p} if len({repr(p.get(k)) for p, _, _, _ in rows}) > 1}
        dropped = sorted(varied - set(leaves_of(config)))
        if dropped:
            raise PriorError(f"--prior {source}: its trials vary {', '.join(dropped)}, which the sweep drops; allowed: "
                             "a sweep that fixes or searches every key its source varied")  # fmt: skip
        fitting = [Prior(p, h, s, a) for flat, h, s, a in rows if (p := fit(config, flat)) is not None]
        if not fitting:
            raise PriorError(f"--prior {source}: none of its {len(rows)} finished trials fits the sweep's parameters; "
                             "allowed: a source with results inside the sweep's space")  # fmt: skip
        out += fitting
    return out


# (flat params, history, summary, attrs)
Row = tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], dict[str, Any]]


def _rows(source: str, config: dict[str, Any], store: Store | None) -> list[Row]:
    """The source's finished trials that hold every objective of the sweep, as (flat params, history, summary,
    attrs)."""
    names = _metrics(config)
    if not names:
        raise PriorError(f"--prior {source}: the sweep names no metric to learn from; allowed: a sweep with a metric")
    sweep = store.sweep(source) if store is not None and not source.endswith(".jsonl") else None
    if source.endswith(".jsonl"):
        try:
            table = CurveTable.from_jsonl(Path(source))
        except SourceError as e:
            raise PriorError(f"--prior {e}".replace("--curves ", "")) from None
        metrics, found = table.metrics, []
        for flat, history in table.rows:
            planned = flat.get("epochs") if isinstance(flat.get("epochs"), int) else table.longest
            if len(history) >= planned:  # (a shorter curve is a run that failed)
                found.append((flat, history, history[-1], {"prior": {"source": source}}))
    elif sweep is not None:  # (a W&B sweep whose agents ran here too: its path names it)
        metrics, histories = _metrics(sweep.config), store.histories(sweep.id)
        found = [(leaves(t.params), histories.get(t.id, []), t.summary, {"prior": {"source": source, "trial": t.id}})
                 for t in store.trials(sweep.id) if t.state in TAKEN]  # fmt: skip
    elif source.count("/") == 2 and all(source.split("/")):
        metrics, found = _wandb_rows(source, names)
    else:
        where = store.where if store is not None else "no store yet"
        raise PriorError(f"--prior {source}: no such sweep ({where}), and not a .jsonl file; allowed: {ALLOWED}")
    missing = [n for n in names if n not in metrics]
    if missing:
        raise PriorError(f"--prior {source}: records no {', '.join(missing)} (the sweep's metric); allowed: a source "
                         f"that records {', '.join(names)}")  # fmt: skip
    return [r for r in found if r[1] and all(finite(r[2].get(n)) for n in names)]


def _metrics(config: dict[str, Any]) -> list[str]:
    """The names of a sweep's objectives."""
    return [m["name"] for m in config.get("metrics") or [config.get("metric") or {}] if m.get("name")]


def _wandb_rows(source: str, names: list[str]) -> tuple[list[str], list[Row]]:
    """A W&B sweep's objectives and finished runs, read from its server through W&B's public API: each run's values
    of the sweep's parameters, and its history of the objectives (epoch: its `epoch`, else its step + 1)."""
    from hpsearch.wandb_env import api_key_configured

    if not api_key_configured():
        raise PriorError(f"--prior {source}: reading a W&B sweep needs a W&B login; allowed: wandb login (or "
                         f"WANDB_API_KEY), or {ALLOWED}")  # fmt: skip
    import wandb

    from hpsearch.sweep.wandb_server import server_error

    try:
        sweep = wandb.Api().sweep(source)
        keys, found = leaves_of(sweep.config), []
        for run in (r for r in sweep.runs if r.state == "finished"):
            flat = leaves(dict(run.config))
            rows = run.history(keys=["epoch", *names], samples=HISTORY_ROWS, pandas=False)
            history = [{**_logged(row), "epoch": row.get("epoch", row["_step"] + 1)} for row in rows]
            attrs = {"prior": {"source": source, "trial": run.id}}
            found.append(({k: flat[k] for k in keys if k in flat}, history, _logged(dict(run.summary)), attrs))
    except Exception as e:  # wandb.errors.Error (an unknown sweep: "Could not find sweep ..."), or wandb-core's own
        raise PriorError(f"--prior {source}: {server_error(e)}") from None
    return _metrics(sweep.config), found


def _logged(row: dict[str, Any]) -> dict[str, Any]:
    """A W&B history row or summary without W&B's own keys (_step, _runtime, _wandb, ...)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def leaves_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The sweep's parameter specs by key, nested groups flattened."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in (config.get("parameters") or {}).items():
        nested = isinstance(spec, dict) and isinstance(spec.get("parameters"), dict)
        out.update(leaves_of(spec) if nested else {name: spec})
    return out


def fit(config: dict[str, Any], flat: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A result's parameters (`flat`: nested groups flattened) in the shape of the sweep's, each key the sweep adds
    at its fixed value or the trainer's default; None if a value lies outside the sweep's space."""
    out = {}
    for name, spec in (params if params is not None else config.get("parameters") or {}).items():
        if isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):
            group = fit(config, flat, spec["parameters"])
            if group is None:
                return None
            out[name] = group
            continue
        hp = HP(name, dict(spec))
        trainers = _NONE if "program" in config else DEFAULTS.get(name, _NONE)  # (a program's defaults are its own)
        value = flat.get(name, spec["value"] if hp.type == HP.CONSTANT else trainers)
        if not lies_in(hp, value):
            return None
        out[name] = value
    return out


def lies_in(hp: HP, value: Any) -> bool:
    """Whether W&B's distribution `hp` can draw `value`."""
    if value is _NONE:
        return False
    if hp.type == HP.CONSTANT:
        return value == hp.config["value"]
    if hp.type in (HP.CATEGORICAL, HP.CATEGORICAL_PROB):
        return value in hp.config["values"]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    if hp.type == HP.INT_UNIFORM and value != int(value):
        return False
    lo, hi = hp.config.get("min"), hp.config.get("max")
    if hp.type in _LOG_V1:
        lo, hi = math.exp(lo), math.exp(hi)
    elif hp.type not in BOUNDED:
        return True  # (normal and beta distributions: any number)
    return lo <= value <= hi


def add_sweep(store: Store, config: dict[str, Any], name: str | None, sweep_id: str, code: dict[str, str] | None,
              priors: list[Prior]) -> Sweep:  # fmt: skip
    """The local sweep and its priors, in one transaction: a failure stores neither."""
    metric = (config.get("metric") or {}).get("name")

    def add() -> Sweep:
        sweep = store.add_sweep(config, "local", name, sweep_id=sweep_id, code=code)
        for p in priors:
            store.add_prior(sweep.id, p.params, p.history, p.summary, p.attrs, metric)
        return sweep

    return store.atomic(add)
