"""Load a W&B sweep YAML and check it: first with W&B's own `sweeps` engine schema, then against what runs its
trials: the trainer's hyperparameter table (every parameter a key the trainer knows, every fixed value valid), a
sweep's own `program` (its flags are its business), or, for `hpsearch simulate`, a source of recorded curves.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpsearch.params import FIELDS, ParamError, check_value, field_type
from hpsearch.train.metrics import RECORD_KEYS

warnings.filterwarnings("ignore", message="Valid config keys have changed in V2", category=UserWarning)
from sweeps.config.schema import validator  # noqa: E402
from sweeps.params import HyperParameter as HP  # noqa: E402

import sweeps  # noqa: E402  (after the filter: the engine's pydantic config warns on import)

METHODS = ("grid", "random", "bayes")
AGENT_KEYS = ("output_dir", "metrics_file", "resume", "wandb")  # the agent sets these for every trial
# Distributions whose min/max are values of the parameter itself (log_uniform v1's are exponents).
BOUNDED = {HP.INT_UNIFORM, HP.UNIFORM, HP.Q_UNIFORM, HP.LOG_UNIFORM_V2, HP.Q_LOG_UNIFORM_V2, HP.INV_LOG_UNIFORM_V2}
_INT_OK = {HP.CONSTANT, HP.CATEGORICAL, HP.CATEGORICAL_PROB, HP.INT_UNIFORM, HP.Q_UNIFORM, HP.Q_LOG_UNIFORM_V2}
DISCRETE = {HP.CONSTANT, HP.CATEGORICAL, HP.CATEGORICAL_PROB}


class SpecError(ValueError):
    """The sweep file is unusable; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Target:
    """What a sweep's parameters and metric are checked against: the keys it takes (None: any), the check of one
    parameter's values (its problems, each `key: what; allowed: ...`), the metrics it records (None: any), and
    how its keys and itself are named in errors."""

    keys: Collection[str] | None
    check: Callable[[str, HP], list[str]]
    metrics: Collection[str] | None
    key_name: str  # "a trainer hyperparameter", ...
    name: str  # "the trainer", ...


def load_spec(path: str | Path, target: Target | None = None) -> dict[str, Any]:
    """The sweep config in `path`, or SpecError listing every problem as `FILE: key.path: what; allowed: ...`.
    Checked against `target`, else against what the agent runs: the sweep's `program`, or the trainer."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise SpecError([f"{path}: cannot read: {e.strerror}"]) from None
    except yaml.YAMLError as e:
        raise SpecError([f"{path}: not valid YAML: {' '.join(str(e).split())}"]) from None
    problems = [f"{path}: {p}" for p in check_spec(config, target)]
    if problems:
        raise SpecError(problems)
    return config


def check_spec(config: Any, target: Target | None = None) -> list[str]:
    if not isinstance(config, dict):
        return ["the file must hold a mapping (method, metric, parameters, ...)"]
    problems = _schema_problems(config)
    method = config.get("method")
    scheduler = config.get("scheduler")
    if method not in METHODS and not (method == "custom" and isinstance(scheduler, dict)):
        problems.append(f"method: {method!r} is not valid; allowed: {' | '.join(METHODS)}, or custom with a scheduler")
    program = config.get("program")
    if target is None:
        if program is not None and not (isinstance(program, str) and Path(program).is_file()):
            problems.append(f"program: {program!r} is not a file; allowed: the path of a Python training script")
        target = PROGRAM if program is not None else TRAINER
    metric = config.get("metric")
    objectives = [("metric", metric)] + [(f"metrics[{i}]", m) for i, m in enumerate(config.get("metrics") or [])]
    for where, m in objectives:
        if isinstance(m, dict) and target.metrics is not None and m.get("name") not in target.metrics:
            problems.append(
                f"{where}.name: {m.get('name')!r} is not a metric {target.name} records; "
                f"allowed: {', '.join(target.metrics)}"
            )
    if not isinstance(metric, dict) and (method == "bayes" or "early_terminate" in config):
        problems.append("metric: bayes search and early_terminate need a metric {name, goal}")
    params = config.get("parameters")
    if isinstance(params, dict):
        problems += _parameter_problems(params, "parameters", set(), target)
    return problems


def _schema_problems(config: dict[str, Any]) -> list[str]:
    """The engine's own schema errors, each with the key path it concerns."""
    out = []
    for err in validator.iter_errors(config):
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if len(err.absolute_path) == 2 and err.absolute_path[0] == "parameters":
            out.append(
                f"{where}: not a W&B parameter spec; allowed: value | values [+ probabilities] | "
                "min + max [+ distribution] | mu + sigma + distribution | parameters (nested)"
            )
        else:
            out.append(f"{where}: {err.message}")
    if out:
        return out
    try:  # the engine's checks beyond the schema: min < max, probabilities summing to 1, what goes with what
        return [_named(m) for m in sweeps.schema_violations_from_proposed_config(config)]
    except ValueError as e:
        return [str(e)]


def _named(message: str) -> str:
    """The engine's message led by the key it names first, as our own lines are (`early_terminate` cannot be used
    together with ... -> early_terminate: ...)."""
    key = re.match(r"`([\w.]+)", message) or re.match(r"([\w.]+) '", message)
    return f"{key.group(1)}: {message}" if key else message


def read_code(config: dict[str, Any], where: Path = Path(".")) -> dict[str, str] | None:
    """`scheduler.source` as the sweep keeps it, {path, text, sha256}: read once, so every agent builds its study
    from the same code (None if the sweep names none). Raises SpecError if it cannot be read."""
    source = (config.get("scheduler") or {}).get("source")
    if source is None:
        return None
    path = _source_path(source, where)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError([f"scheduler.source: cannot read {source!r}: {e.strerror} (tried {path.absolute()}); "
                         "allowed: a Python file, relative to the working directory"]) from None  # fmt: skip
    return {"path": source, "text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()}


_PACKAGE = Path(__file__).resolve().parents[1]  # hpsearch's own folder, in a checkout or installed


def _source_path(source: str, where: Path) -> Path:
    """Where `scheduler.source` is: relative to `where` (the working directory), as `wandb sweep-scheduler` reads
    it; or, where that is no file and it names one of hpsearch's own (`hpsearch/studies.py`, as the shipped sweeps
    do), the installed package's, so that the shipped sweep files work from any directory and from a wheel."""
    path = where / source
    parts = Path(source).parts
    if path.exists() or Path(source).is_absolute() or parts[:1] != (_PACKAGE.name,):
        return path
    ours = _PACKAGE.joinpath(*parts[1:])
    return ours if ours.is_file() else path


def _parameter_problems(params: dict[str, Any], where: str, seen: set[str], target: Target) -> list[str]:
    out = []
    for name, spec in params.items():
        path = f"{where}.{name}"
        if isinstance(spec, dict) and "parameters" in spec and isinstance(spec["parameters"], dict):
            out += _parameter_problems(spec["parameters"], path, seen, target)  # nested group: its leaves are the keys
            continue
        if name in AGENT_KEYS:
            out.append(f"{path}: set by the agent for each trial; remove it from the sweep")
            continue
        if target.keys is None:
            continue
        bundles = _bundles(spec)
        if name not in target.keys and bundles:  # values that each set several keys at once (a recipe)
            for i, bundle in enumerate(bundles):
                recipe = {k: {"value": v} for k, v in bundle.items()}
                out += _parameter_problems(recipe, f"{path}.values[{i}]", set(), target)
            continue
        if name not in target.keys:
            out.append(f"{path}: {name!r} is not {target.key_name}; allowed: {', '.join(sorted(target.keys))}")
            continue
        if name in seen:
            out.append(f"{path}: {name!r} appears twice in the sweep")
        seen.add(name)
        try:
            hp = HP(name, dict(spec))
        except Exception:  # reported by the schema check already
            continue
        out += [f"{path}.{p}" for p in target.check(name, hp)]
    return out


def named_values(hp: HP) -> list[tuple[str, Any]]:
    """The values a parameter spec names, each with its place in the spec: its value, its values, or its bounds."""
    if hp.type == HP.CONSTANT:
        return [("value", hp.config["value"])]
    if hp.type in (HP.CATEGORICAL, HP.CATEGORICAL_PROB):
        return [(f"values[{i}]", v) for i, v in enumerate(hp.config["values"])]
    if hp.type in BOUNDED:
        return [("min", hp.config["min"]), ("max", hp.config["max"])]
    return []


def _trainer_problems(name: str, hp: HP) -> list[str]:
    t = field_type(name)
    if t in (bool, str) and hp.type not in DISCRETE:
        return [f"distribution: {hp.config['distribution']} cannot draw {name}; allowed: value | values"]
    if t is int and hp.type not in _INT_OK:
        return [
            f"distribution: {hp.config['distribution']} draws non-integers for {name}; allowed: int_uniform, "
            "q_uniform, values"
        ]
    out = []
    for key, value in named_values(hp):
        try:
            check_value(name, value)
        except ParamError as e:
            out.append(f"{key}: {str(e).split(': ', 1)[1]}")
    return out


TRAINER = Target(FIELDS, _trainer_problems, RECORD_KEYS, "a trainer hyperparameter", "the trainer")
PROGRAM = Target(None, lambda name, hp: [], None, "a key of the program", "the program")  # its flags: its business


def _bundles(spec: Any) -> list[dict[str, Any]]:
    """The dict values of a parameter whose every value is a dict of keys ([] otherwise)."""
    values = spec.get("values", [spec.get("value")]) if isinstance(spec, dict) else []
    return values if values and all(isinstance(v, dict) for v in values) else []


def leaves(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameter values with nested groups flattened: {key: value} for the trainer."""
    out = {}
    for name, value in params.items():
        if isinstance(value, dict) and name not in FIELDS:
            out.update(leaves(value))
        else:
            out[name] = value
    return out


def varying(config: dict[str, Any]) -> list[str]:
    """The trainer keys the sweep searches over (not fixed with `value`), in file order."""
    out = []

    def walk(params: dict[str, Any]) -> None:
        for name, spec in params.items():
            if isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):
                walk(spec["parameters"])
            elif name not in FIELDS and (bundles := _bundles(spec)):
                keys = dict.fromkeys(k for b in bundles for k in b)
                out.extend(k for k in keys if len({repr(b.get(k)) for b in bundles}) > 1)
            elif isinstance(spec, dict) and "value" not in spec:
                out.append(name)

    walk(config.get("parameters", {}))
    return out
