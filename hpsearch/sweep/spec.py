"""Load a W&B sweep YAML and check it: first with W&B's own `sweeps` engine schema, then against the
trainer's hyperparameter table (every parameter a key the trainer knows, every fixed value valid).
"""

from __future__ import annotations

import warnings
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
_BOUNDED = {HP.INT_UNIFORM, HP.UNIFORM, HP.Q_UNIFORM, HP.LOG_UNIFORM_V2, HP.Q_LOG_UNIFORM_V2, HP.INV_LOG_UNIFORM_V2}
_INT_OK = {HP.CONSTANT, HP.CATEGORICAL, HP.CATEGORICAL_PROB, HP.INT_UNIFORM, HP.Q_UNIFORM, HP.Q_LOG_UNIFORM_V2}
_DISCRETE = {HP.CONSTANT, HP.CATEGORICAL, HP.CATEGORICAL_PROB}


class SpecError(ValueError):
    """The sweep file is unusable; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_spec(path: str | Path) -> dict[str, Any]:
    """The sweep config in `path`, or SpecError listing every problem as `FILE: key.path: what; allowed: ...`."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise SpecError([f"{path}: cannot read: {e.strerror}"]) from None
    except yaml.YAMLError as e:
        raise SpecError([f"{path}: not valid YAML: {' '.join(str(e).split())}"]) from None
    problems = [f"{path}: {p}" for p in check_spec(config)]
    if problems:
        raise SpecError(problems)
    return config


def check_spec(config: Any) -> list[str]:
    if not isinstance(config, dict):
        return ["the file must hold a mapping (method, metric, parameters, ...)"]
    problems = _schema_problems(config)
    method = config.get("method")
    if method not in METHODS:
        problems.append(f"method: {method!r} is not valid; allowed: {' | '.join(METHODS)}")
    program = config.get("program")
    if program is not None and not (isinstance(program, str) and Path(program).is_file()):
        problems.append(f"program: {program!r} is not a file; allowed: the path of a Python training script")
    metric = config.get("metric")
    if isinstance(metric, dict) and program is None and metric.get("name") not in RECORD_KEYS:
        problems.append(
            f"metric.name: {metric.get('name')!r} is not a metric the trainer records; "
            f"allowed: {', '.join(RECORD_KEYS)}"
        )
    if not isinstance(metric, dict) and (method == "bayes" or "early_terminate" in config):
        problems.append("metric: bayes search and early_terminate need a metric {name, goal}")
    params = config.get("parameters")
    if isinstance(params, dict) and program is None:
        problems += _parameter_problems(params, "parameters", set())
    elif isinstance(params, dict):  # the sweep's own program: its flags are its business, but for the agent's
        problems += [f"parameters.{k}: set by the agent for each trial; remove it" for k in params if k in AGENT_KEYS]
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
    try:  # the engine's checks beyond the schema: min < max, probabilities summing to 1, ...
        return list(sweeps.schema_violations_from_proposed_config(config))
    except ValueError as e:
        return [str(e)]


def _parameter_problems(params: dict[str, Any], where: str, seen: set[str]) -> list[str]:
    out = []
    for name, spec in params.items():
        path = f"{where}.{name}"
        if isinstance(spec, dict) and "parameters" in spec and isinstance(spec["parameters"], dict):
            out += _parameter_problems(spec["parameters"], path, seen)  # nested group: its leaves are the keys
            continue
        bundles = _bundles(spec)
        if name not in FIELDS and bundles:  # values that each set several keys at once (a recipe)
            for i, bundle in enumerate(bundles):
                out += _parameter_problems({k: {"value": v} for k, v in bundle.items()}, f"{path}.values[{i}]", set())
            continue
        if name not in FIELDS:
            out.append(f"{path}: {name!r} is not a trainer hyperparameter; allowed: {', '.join(sorted(FIELDS))}")
            continue
        if name in AGENT_KEYS:
            out.append(f"{path}: set by the agent for each trial; remove it from the sweep")
            continue
        if name in seen:
            out.append(f"{path}: {name!r} appears twice in the sweep")
        seen.add(name)
        try:
            hp = HP(name, dict(spec))
        except Exception:  # reported by the schema check already
            continue
        out += [f"{path}.{p}" for p in _value_problems(name, hp)]
    return out


def _value_problems(name: str, hp: HP) -> list[str]:
    t = field_type(name)
    if t in (bool, str) and hp.type not in _DISCRETE:
        return [f"distribution: {hp.config['distribution']} cannot draw {name}; allowed: value | values"]
    if t is int and hp.type not in _INT_OK:
        return [
            f"distribution: {hp.config['distribution']} draws non-integers for {name}; allowed: int_uniform, "
            "q_uniform, values"
        ]
    if hp.type == HP.CONSTANT:
        checks = [("value", hp.config["value"])]
    elif hp.type in (HP.CATEGORICAL, HP.CATEGORICAL_PROB):
        checks = [(f"values[{i}]", v) for i, v in enumerate(hp.config["values"])]
    elif hp.type in _BOUNDED:
        checks = [("min", hp.config["min"]), ("max", hp.config["max"])]
    else:
        checks = []
    out = []
    for key, value in checks:
        try:
            check_value(name, value)
        except ParamError as e:
            out.append(f"{key}: {str(e).split(': ', 1)[1]}")
    return out


def _bundles(spec: Any) -> list[dict[str, Any]]:
    """The dict values of a parameter whose every value is a dict of trainer keys ([] otherwise)."""
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
