"""The trial's hyperparameters: one table of names, types, defaults and checks.

Every entry point reads it: `hpsearch train` and `python -m hpsearch.train` parse argv with
`parse_args`, and the sweep validator checks YAML values with `check_value`. Names follow timm's
train.py (`--opt`, `--sched`, `--aa`, `--cutmix`, `--reprob`, ...) so sweep parameters read the same.
Defaults reproduce the reference report's best run (Exp 4 in the seed report).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.metadata
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DATASETS = ("cifar100", "cifar10", "fashion_mnist", "digits", "synthetic")
SCHEDULERS = ("cosine", "tanh", "step", "poly", "constant", "wsd")
COOLDOWN_SHAPES = ("1-sqrt", "linear")
WANDB_MODES = ("auto", "online", "offline", "disabled")
DEVICES = ("auto", "cuda", "cpu")
AUGMENT_PATHS = ("auto", "pil", "batched")
DEFAULT_DATA_DIR = "~/.cache/hpsearch/data"  # one place per user, whichever folder a sweep is started from
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class ParamError(ValueError):
    """A bad key or value; the message is one line naming the key and what is allowed."""


def _range(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    bounds = " and ".join(parts)

    def check(v: float) -> str | None:
        bad = (lo is not None and (v <= lo if lo_open else v < lo)) or (
            hi is not None and (v >= hi if hi_open else v > hi)
        )
        return bounds if bad else None

    check.bounds = bounds
    return check


def _check_model(name: str) -> str | None:
    if name in _known_models():
        return None
    import timm  # a name the cache lacks: timm itself decides, and the cache is refreshed

    _known_models.cache_clear()
    _remember_models(timm.list_models())
    return None if timm.is_model(name) else "a timm model name (see timm.list_models())"


@functools.cache
def _known_models() -> frozenset[str]:
    """timm's model names as the installed timm last listed them. Importing timm takes seconds, and
    `create-sweep` checks every model name it is given, so the list is kept in the user's cache folder."""
    try:
        return frozenset(_models_cache().read_text().split())
    except OSError:
        return frozenset()


def _models_cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "hpsearch" / f"timm-{importlib.metadata.version('timm')}-models.txt"


def _remember_models(names: Iterable[str]) -> None:
    path = _models_cache()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(names) + "\n")
        tmp.replace(path)  # atomic: a concurrent reader sees the old list or the new one
    except OSError:
        pass  # a read-only home only costs the next check the timm import


def _check_opt(name: str) -> str | None:
    import timm.optim

    if name.lower() in timm.optim.list_optimizers():
        return None
    return "a timm optimizer (e.g. sgd, momentum, adamw, lamb; see timm.optim.list_optimizers())"


def _check_aa(policy: str) -> str | None:
    if policy == "none":
        return None  # no need to import torchvision and timm to know that
    from hpsearch.train.policy import augment_policy

    try:
        augment_policy(policy, img_size=32, mean=(0.5, 0.5, 0.5))
    except Exception:  # timm raises assorted errors for unparsable policy strings
        return "none, cifar10, or a timm policy such as original, v0, rand-m9-n2-mstd0.5, augmix-m5-w3"
    return None


def _epochs_list(text: str) -> list[int]:
    """`cooldown_at`'s epochs: "10, 20" -> [10, 20]; ValueError for anything but positive integers."""
    epochs = [int(part) for part in text.split(",")] if text.strip() else []
    if any(e < 1 for e in epochs):
        raise ValueError(text)
    return sorted(set(epochs))


def _check_epochs_list(text: str) -> str | None:
    try:
        _epochs_list(text)
    except ValueError:
        return "comma-separated epochs (positive integers), e.g. 10,20"
    return None


def cooldown_epochs(frac: float, length: int) -> int:
    """Whole epochs of a cooldown over `frac` of `length` epochs, rounded up (0.1 x 30 is 3, not 4)."""
    return max(1, math.ceil(round(frac * length, 9)))


def _p(default: Any, help: str, choices: Iterable[str] | None = None, check: Callable | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": tuple(choices or ()), "check": check})


@dataclass
class TrainConfig:
    """One trial's hyperparameters (the sweep parameter names)."""

    model: str = _p("resnet50", "timm model name", check=_check_model)
    pretrained: bool = _p(False, "load timm's pretrained weights (needs them cached or a network)")
    cifar_stem: bool = _p(True, "3x3 stride-1 first conv and no max-pool, for 32x32 inputs")
    dataset: str = _p("cifar100", "dataset", choices=DATASETS)
    data_dir: str = _p(
        DEFAULT_DATA_DIR, "dataset root, one per user by default (CIFAR-100: the folder holding cifar-100-python/)"
    )
    download: bool = _p(True, "fetch a missing dataset (torchvision's download, once per data_dir)")
    val_split: int = _p(
        -1,
        "training images held out to validate on (val_acc, the sweep metric), stratified; -1 = a tenth, at most "
        "5,000; 0 = validate on the test set every epoch, as papers report",
        check=_range(-1),
    )
    val_seed: int = _p(0, "seed of the held-out split: the same images for every trial, whatever its seed")
    train_subset: int = _p(0, "use only the first N training images (0 = all)", check=_range(0))
    val_subset: int = _p(0, "use only the first N validation images (0 = all)", check=_range(0))
    epochs: int = _p(250, "epochs", check=_range(1))
    batch_size: int = _p(512, "GLOBAL batch size, split evenly across ranks", check=_range(1))
    opt: str = _p("sgd", "timm optimizer name", check=_check_opt)
    lr: float = _p(0.25, "peak learning rate", check=_range(0, lo_open=True))
    momentum: float = _p(0.9, "optimizer momentum", check=_range(0, 1, hi_open=True))
    weight_decay: float = _p(1e-3, "weight decay (not applied to biases and norm layers)", check=_range(0))
    nesterov: bool = _p(False, "Nesterov momentum (SGD)")
    sched: str = _p(
        "cosine", "LR schedule, stepped every update: timm's, or wsd (warmup, constant, cooldown)", choices=SCHEDULERS
    )
    warmup_epochs: int = _p(5, "linear warmup epochs", check=_range(0))
    warmup_lr: float = _p(0.01, "learning rate at the start of warmup", check=_range(0))
    min_lr: float = _p(1e-6, "floor of the schedule", check=_range(0))
    decay_epochs: float = _p(30.0, "step schedule: epochs between decays", check=_range(0, lo_open=True))
    decay_rate: float = _p(0.1, "step schedule: LR factor at each decay", check=_range(0, 1))
    cooldown_frac: float = _p(
        0.2,
        "wsd: the cooldown's share of the run (and of a rung's epochs, for its branch), rounded up to whole epochs",
        check=_range(0, 1, lo_open=True, hi_open=True),
    )
    cooldown_shape: str = _p("1-sqrt", "wsd: how the cooldown falls to min_lr", choices=COOLDOWN_SHAPES)
    cooldown_at: str = _p(
        "",
        "wsd: rung epochs (comma-separated) at whose end a cooldown branch measures the cooled model; the run goes "
        "on from the stable state",
        check=_check_epochs_list,
    )
    hflip: float = _p(0.7, "horizontal flip probability", check=_range(0, 1))
    color_jitter: float = _p(0.0, "colour jitter strength (0 = off)", check=_range(0))
    aa: str = _p("original", "AutoAugment policy: none | cifar10 | timm policy string", check=_check_aa)
    augment: str = _p(
        "auto",
        "where training augmentation runs: pil (loader workers), batched (on the device, a batch at a time), "
        "auto (batched on CUDA, pil on CPU)",
        choices=AUGMENT_PATHS,
    )
    cutmix: float = _p(1.0, "CutMix Beta alpha (0 = off)", check=_range(0))
    mixup: float = _p(0.0, "MixUp Beta alpha (0 = off)", check=_range(0))
    mixup_prob: float = _p(1.0, "probability of mixing a batch", check=_range(0, 1))
    mixup_switch_prob: float = _p(0.5, "probability of CutMix instead of MixUp when both are on", check=_range(0, 1))
    smoothing: float = _p(0.0, "label smoothing", check=_range(0, 1, hi_open=True))
    reprob: float = _p(0.0, "random erasing probability", check=_range(0, 1))
    seed: int = _p(42, "random seed")
    workers: int = _p(-1, "PIL path: data loader workers per rank (-1 = cores / ranks - 1)", check=_range(-1))
    device: str = _p("auto", "auto | cuda | cpu", choices=DEVICES)
    amp: bool = _p(True, "bf16 autocast (CUDA only)")
    channels_last: bool = _p(True, "channels_last memory format (CUDA only)")
    compile: bool = _p(True, "torch.compile the model (CUDA only)")
    output_dir: str = _p("output", "checkpoint folder (checkpoint.pt, rewritten every epoch)")
    resume: bool = _p(False, "continue from output_dir/checkpoint.pt")
    wandb: str = _p("auto", "W&B logging; auto = online with a W&B login, else offline", choices=WANDB_MODES)
    metrics_file: str = _p("", "append one JSON line of metrics per epoch here (empty = off)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def rungs(self) -> list[int]:
        """The epochs of `cooldown_at`, ascending."""
        return _epochs_list(self.cooldown_at)

    def argv(self) -> list[str]:
        """The `--key=value` flags that reproduce this config (non-defaults only)."""
        return [f"--{k}={format_value(v)}" for k, v in self.to_dict().items() if v != DEFAULTS[k]]


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
DEFAULTS: dict[str, Any] = {k: f.default for k, f in FIELDS.items()}


def format_value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _type_name(t: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[t]


def allowed(key: str) -> str:
    """What values `key` takes, in words (for error messages and help)."""
    f = FIELDS[key]
    t = field_type(key)
    if f.metadata["choices"]:
        return " | ".join(f.metadata["choices"])
    text = _type_name(t)
    bounds = getattr(f.metadata["check"], "bounds", "")
    return f"{text} {bounds}" if bounds else text


def field_type(key: str) -> type:
    """The Python type a key's values take (bool, int, float or str)."""
    return {"bool": bool, "int": int, "float": float, "str": str}[str(FIELDS[key].type)]


def normalize_key(raw: str) -> str:
    return raw.lstrip("-").replace("-", "_")


def unknown_key_message(key: str, where: str = "") -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{where}unknown key '{key}'{hint}; allowed: {', '.join(sorted(FIELDS))}"


def check_value(key: str, value: Any) -> Any:
    """Return `value` converted to the key's type, or raise ParamError naming what is allowed."""
    if key not in FIELDS:
        raise ParamError(unknown_key_message(key))
    t = field_type(key)
    f = FIELDS[key]
    try:
        v = _coerce(t, value)
    except (TypeError, ValueError):
        raise ParamError(f"{key}: {value!r} is not valid; allowed: {allowed(key)}") from None
    choices = f.metadata["choices"]
    if choices and v not in choices:
        raise ParamError(f"{key}: {value!r} is not valid; allowed: {allowed(key)}")
    check = f.metadata["check"]
    problem = check(v) if check is not None else None
    if problem:
        what = allowed(key) if hasattr(check, "bounds") else problem
        raise ParamError(f"{key}: {value!r} is not valid; allowed: {what}")
    return v


def _coerce(t: type, value: Any) -> Any:
    if t is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ValueError(value)
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise TypeError(value)
    if t is int:
        f = float(value)
        if not f.is_integer():
            raise ValueError(value)
        return int(f)
    if t is float:
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")):
            raise ValueError(value)
        return f
    return str(value)


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML file of `key: value` (or W&B's `key: {value: v}`) into raw values."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as e:
        raise ParamError(f"--config: cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ParamError(f"--config: {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ParamError(f"--config: {path} must hold a mapping of key: value")
    out = {}
    for raw_key, value in data.items():
        key = normalize_key(str(raw_key))
        if key not in FIELDS:
            raise ParamError(unknown_key_message(key, where=f"{path}: "))
        out[key] = value["value"] if isinstance(value, dict) and "value" in value else value
    return out


def parse_args(argv: list[str]) -> TrainConfig:
    """Parse `[--config FILE] --key=value | --key value | --flag | key=value ...` into a TrainConfig."""
    raw: dict[str, Any] = {}
    files: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok.startswith("-"):
            name, eq, value = tok.partition("=")
            key = normalize_key(name)
            if not key:
                raise ParamError(f"unexpected argument {tok!r}")
            if not eq:
                is_bool = key in FIELDS and field_type(key) is bool
                nxt = argv[i] if i < len(argv) else None
                if is_bool and (nxt is None or nxt.lower() not in _TRUE + _FALSE):
                    value = "true"  # a bare --flag
                elif nxt is None:
                    raise ParamError(f"{key}: missing value; allowed: {allowed(key) if key in FIELDS else 'a value'}")
                else:
                    value, i = nxt, i + 1
        elif "=" in tok:  # W&B's ${args_no_hyphens} form
            name, _, value = tok.partition("=")
            key = normalize_key(name)
        else:
            raise ParamError(f"unexpected argument {tok!r}; use --key=value")
        if key == "config":
            files.append(value)
        elif key not in FIELDS:
            raise ParamError(unknown_key_message(key))
        else:
            raw[key] = value
    merged: dict[str, Any] = {}
    for path in files:
        merged.update(load_config_file(path))
    merged.update(raw)
    cfg = TrainConfig(**{k: check_value(k, v) for k, v in merged.items()})
    check_schedule(cfg)
    return cfg


def check_schedule(cfg: TrainConfig) -> None:
    """What one key cannot say alone: wsd's cooldown fits the run after warmup, and cooldown branches need wsd
    and lie within the run."""
    if cfg.rungs and cfg.sched != "wsd":
        raise ParamError(f"cooldown_at: cooldown branches need sched wsd (sched is {cfg.sched}); allowed: sched=wsd")
    if cfg.rungs and cfg.rungs[-1] > cfg.epochs:
        raise ParamError(
            f"cooldown_at: epoch {cfg.rungs[-1]} is above epochs ({cfg.epochs}); allowed: epochs 1..{cfg.epochs}"
        )
    cooldown = cooldown_epochs(cfg.cooldown_frac, cfg.epochs)
    if cfg.sched == "wsd" and cfg.warmup_epochs + cooldown > cfg.epochs:
        raise ParamError(
            f"cooldown_frac: the cooldown ({cooldown} of {cfg.epochs} epochs) overlaps warmup_epochs "
            f"({cfg.warmup_epochs}); allowed: warmup_epochs + ceil(cooldown_frac x epochs) <= epochs"
        )


def help_text() -> str:
    """One line per key: name, default, allowed values, meaning."""
    lines = []
    for key, f in FIELDS.items():
        flag = f"--{key}={format_value(f.default)}"
        lines.append(f"  {flag:<26} {f.metadata['help']} [{allowed(key)}]")
    return "\n".join(lines)
