"""Recorded learning curves to replay a sweep on: a trial's configuration in, the epoch records it would have
written out, as YAHPO Gym's benchmarks take a configuration and a fidelity and give metrics.

Three sources (`hpsearch simulate --curves SOURCE`):
- `lcbench:TASK`: YAHPO Gym's LCBench surrogate (an ONNX model of 2,000 SGD-trained MLPs per OpenML task), through
  the `yahpo-gym` package and its data folder. Any configuration in its space has a curve.
- `FILE.jsonl`: a curve table, one run a line, `{"config": {...}, "history": [{"epoch": 1, METRIC: v,
  "epoch_time": s}, ...]}` (the records a trial's metrics.jsonl holds). A configuration gets the curve of the
  table's nearest one, by the sweep's own scales. A table may hold each configuration at several schedules (its
  config's `sched`, `epochs`, `cooldown_frac`, ..., and a wsd run's cooldown branches as `"rungs": [{"rung": E,
  "rung_val_acc": v, ...}, ...]`, as benchmarks/record_schedules.py records them): `CurveTable.reading` then
  gives a configuration's value at a rung in each fidelity mode.
- `sweep:SWEEP_ID`: the finished and failed trials of a sweep already run, as such a table.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hpsearch.sweep.spec import BOUNDED, DISCRETE, HP, Target, leaves, named_values
from hpsearch.sweep.store import State, Store, Sweep

# A checkout's copy of its LCBench files (Apache-2.0); an installed hpsearch has none, so --data names one there.
YAHPO_DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "yahpo_data"
FORMAT = '{"config": {NAME: VALUE, ...}, "history": [{"epoch": 1, METRIC: VALUE, ...}, ...]}'
_LOG = {HP.LOG_UNIFORM_V1, HP.LOG_UNIFORM_V2, HP.Q_LOG_UNIFORM_V1, HP.Q_LOG_UNIFORM_V2, HP.LOG_NORMAL, HP.Q_LOG_NORMAL}
_LOG |= {HP.INV_LOG_UNIFORM_V1, HP.INV_LOG_UNIFORM_V2}


class SourceError(Exception):
    """The source cannot be used (unknown, missing package or data, an empty or malformed table); one line."""


@dataclass
class Curve:
    """What a configuration did: its epoch records (epochs 1.. in order) and the epochs it was to run; fewer
    records than that is a run that failed after its last one. `config` names which of the source's
    configurations it is (for counting distinct ones)."""

    records: list[dict[str, Any]]
    planned: int
    config: str


class Source(Protocol):
    name: str  # as given on the command line

    def target(self) -> Target:
        """What a sweep replayed on this source is checked against: its configuration keys and metrics."""

    def curve(self, config: dict[str, Any], scales: dict[str, Scale]) -> Curve:
        """The curve of a trial's configuration (its parameters, nested groups flattened)."""

    def budget(self) -> int:
        """The default budget in epochs: what running every configuration of the source once costs."""


@dataclass
class Reading:
    """A configuration's metrics at a rung: `record` names them as an epoch record does (val_acc, ...), `epochs`
    and `seconds` are what training from scratch to read them took (a cooldown branch's own included), `config`
    names the table's line that was read."""

    record: dict[str, Any]
    epochs: int
    seconds: float
    config: str


@dataclass(frozen=True)
class Scale:
    """How a sweep parameter measures distance between values: `exact` (categories, fixed values), or on a
    linear or log axis, divided by the span of its range there."""

    kind: str  # exact | linear | log
    lo: float | None = None
    hi: float | None = None


def scales(config: dict[str, Any]) -> dict[str, Scale]:
    """The scale of each parameter of a sweep, by its distribution: log for W&B's log distributions, linear for
    its other numeric ones (with their bounds where they have them), exact for `value` and `values`."""
    out: dict[str, Scale] = {}

    def walk(params: dict[str, Any]) -> None:
        for name, spec in params.items():
            if isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):
                walk(spec["parameters"])
                continue
            hp = HP(name, dict(spec))
            if hp.type in DISCRETE:
                values = [hp.config["value"]] if hp.type == HP.CONSTANT else hp.config["values"]
                keys = {k for v in values if isinstance(v, dict) for k in v} or {name}  # recipes: each key
                out.update((k, Scale("exact")) for k in keys)
                continue
            kind = "log" if hp.type in _LOG else "linear"
            if hp.type in BOUNDED:
                lo, hi = float(hp.config["min"]), float(hp.config["max"])
                out[name] = Scale(kind, *((math.log(lo), math.log(hi)) if kind == "log" else (lo, hi)))
            else:
                out[name] = Scale(kind)

    walk(config.get("parameters", {}))
    return out


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---- curve tables ----

# How a rung at b epochs is read (issue 32): `truncated`, the full-length cosine run at its epoch b (its learning
# rate still high there); `compressed`, the last epoch of a cosine run of b epochs (its whole schedule in b);
# `cooldown`, the wsd run's branch cooled at b (at the full length, the run's own end).
MODES = ("truncated", "compressed", "cooldown")
# The config keys that name a line's schedule rather than its configuration: a mode chooses them.
SCHEDULE = ("sched", "epochs", "warmup_epochs", "cooldown_frac", "cooldown_shape", "cooldown_at")


class CurveTable:
    """Configurations with the curves they ran. A trial gets the curve of the nearest configuration: those with
    the fewest categorical mismatches (values compared exactly), then the nearest in the numeric parameters on
    the sweep's scales, each distance divided by the parameter's span; the earliest line breaks ties."""

    def __init__(
        self,
        name: str,
        rows: list[tuple[dict[str, Any], list[dict[str, Any]]]],
        rungs: list[list[dict[str, Any]]] | None = None,
    ):
        if not rows:
            raise SourceError(f"{name}: holds no curves; allowed: one JSON line per configuration, {FORMAT}")
        self.name, self.rows = name, rows
        self.rungs = rungs or [[] for _ in rows]  # each line's cooldown branches
        self.keys = list(dict.fromkeys(k for config, _ in rows for k in config))
        self.metrics = list(dict.fromkeys(k for _, h in rows for r in h for k in r if k != "epoch"))
        self.longest = max(len(h) for _, h in rows)
        self._values = {k: [config.get(k) for config, _ in rows] for k in self.keys}
        self._numeric = {k: self._column(v) for k, v in self._values.items()}

    @staticmethod
    def _column(values: list[Any]) -> np.ndarray | None:
        """A numeric key's values as floats (NaN where a configuration lacks it); None for other keys."""
        if not all(v is None or _number(v) for v in values):
            return None
        return np.array([math.nan if v is None else float(v) for v in values])

    @classmethod
    def from_jsonl(cls, path: Path) -> CurveTable:
        try:
            return cls.from_lines(str(path), path.read_text().splitlines())
        except OSError as e:
            raise SourceError(f"--curves {path}: cannot read: {e.strerror}") from None

    @classmethod
    def from_lines(cls, name: str, lines: list[str]) -> CurveTable:
        rows, rungs = [], []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            ok = isinstance(row, dict) and isinstance(row.get("config"), dict) and isinstance(row.get("history"), list)
            if not ok or not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in row["history"]):
                raise SourceError(f"{name}:{n}: not a curve; allowed: {FORMAT}")
            if row["history"]:  # (a configuration that never finished an epoch has no curve to replay)
                rows.append((row["config"], sorted(row["history"], key=lambda r: r["epoch"])))
                rungs.append([r for r in row.get("rungs") or () if isinstance(r, dict) and _integer(r.get("rung"))])
        return cls(name, rows, rungs)

    def target(self) -> Target:
        return Target(self.keys, self._problems, self.metrics, f"a configuration key of {self.name}", self.name)

    def _problems(self, name: str, hp: HP) -> list[str]:
        """Values the sweep names for an exactly matched key must be ones the table holds."""
        if hp.type not in DISCRETE:
            return []
        held = self._values[name]
        return [
            f"{where}: {v!r} is in none of the table's configurations; allowed: "
            + ", ".join(map(repr, dict.fromkeys(x for x in held if x is not None)))
            for where, v in named_values(hp)
            if not any(v == x and type(v) is type(x) or _number(v) and _number(x) and v == x for x in held)
        ]

    def budget(self) -> int:
        """Every line's epochs; in a table recorded at several schedules, only the full-length cosine runs' (a
        configuration's other runs are readings of it at lower rungs, not configurations of their own)."""
        if not any("sched" in c for c, _ in self.rows):
            return sum(len(h) for _, h in self.rows)
        full = self._schedule("cosine", self.full_epochs)
        return sum(len(h) for (_, h), ok in zip(self.rows, full, strict=True) if ok)

    def nearest(self, config: dict[str, Any], scales: dict[str, Scale], among: np.ndarray | None = None) -> int:
        """The line (0-based) of the configuration nearest to `config`, of those `among` marks (default: all)."""
        n = len(self.rows)
        mismatches, distance = np.zeros(n), np.zeros(n)
        if among is not None:
            mismatches[~among] = math.inf
        for key, value in config.items():
            if key not in self._values:
                continue
            scale, column = scales.get(key, Scale("exact")), self._numeric[key]
            if scale.kind == "exact" or column is None or not _number(value):
                mismatches += [not (value == v and type(value) is type(v) or _number(v) and value == v)
                               for v in self._values[key]]  # fmt: skip
                continue
            ok = column > 0 if scale.kind == "log" else np.isfinite(column)
            axis = np.log(np.where(ok, column, 1.0)) if scale.kind == "log" else np.nan_to_num(column)
            x = math.log(value) if scale.kind == "log" and value > 0 else float(value)
            lo, hi = (scale.lo, scale.hi) if scale.lo is not None else (axis[ok].min(), axis[ok].max())
            span = (hi - lo) or 1.0
            distance += np.where(ok, ((axis - x) / span) ** 2, math.inf)
        return int(np.lexsort((np.arange(n), distance, mismatches))[0])

    def curve(self, config: dict[str, Any], scales: dict[str, Scale]) -> Curve:
        """The nearest configuration's curve as it was recorded (for a trial that branches, `cooldown_at`, its
        cooldown branches' values with their epochs' records). A line is one whole run: its schedule's length (its
        `epochs`) is part of what was matched, so it runs to those epochs (else the longest curve's), never to the
        trial's own; a curve shorter than that is a run that failed there."""
        i = self.nearest(config, scales)
        row_config, history = self.rows[i]
        planned = row_config["epochs"] if _integer(row_config.get("epochs")) else self.longest
        branches = {r["rung"]: {k: v for k, v in r.items() if k.startswith("rung_")} for r in self.rungs[i]}
        if branches and config.get("cooldown_at"):  # a trial that branches: each rung's values with its epoch's
            history = [{**r, **branches.get(r["epoch"], {})} for r in history]  # record, as the agent reads them
        return Curve(history, planned, str(i))

    # -- fidelity modes: a table of configurations recorded at several schedules --

    @property
    def full_epochs(self) -> int:
        """E, the full length: the longest cosine run's epochs."""
        return max((c.get("epochs", len(h)) for c, h in self.rows if c.get("sched", "cosine") == "cosine"), default=0)

    def _schedule(self, sched: str, epochs: int, cooldown: float | None = None) -> np.ndarray:
        """Which lines ran `sched` for `epochs` (with that cooldown fraction)."""
        return np.array(
            [
                c.get("sched", "cosine") == sched
                and c.get("epochs", len(h)) == epochs
                and (cooldown is None or c.get("cooldown_frac") == cooldown)
                for c, h in self.rows
            ]
        )

    def reading(
        self,
        config: dict[str, Any],
        scales: dict[str, Scale],
        mode: str,
        rung: int | None = None,
        cooldown: float | None = None,
    ) -> Reading:
        """A configuration's value at `rung` epochs (default: the full length E) in `mode` (one of MODES), from the
        nearest line of the schedule the mode reads: `truncated`, the cosine run of E epochs at its epoch `rung`;
        `compressed`, the cosine run of `rung` epochs at its end; `cooldown`, the wsd run of E epochs with this
        `cooldown` fraction, its branch at `rung` (at E, its own end). At E, truncated and compressed both read the
        full-length cosine run, the reference value. `config` holds the searched parameters (its schedule keys are
        the mode's to choose); a rung the table did not record for it is a SourceError."""
        full = self.full_epochs
        rung = full if rung is None else rung
        if mode not in MODES:
            raise SourceError(f"{self.name}: fidelity mode {mode!r} is unknown; allowed: {', '.join(MODES)}")
        if mode == "cooldown" and cooldown is None:
            raise SourceError(f"{self.name}: mode cooldown needs its cooldown fraction; allowed: a number in (0, 1)")
        if mode == "cooldown":
            among = self._schedule("wsd", full, cooldown)
        else:
            among = self._schedule("cosine", rung if mode == "compressed" else full)
        if mode == "cooldown" and not among.any():
            fractions = sorted({c["cooldown_frac"] for c, _ in self.rows if _number(c.get("cooldown_frac"))})
            raise SourceError(
                f"{self.name}: no wsd run of {full} epochs with cooldown fraction {cooldown}; allowed: "
                + (", ".join(map(str, fractions)) or "none (the table holds no wsd run)")
            )
        if not among.any() or not 1 <= rung <= full:
            raise self._unrecorded(mode, rung, cooldown)
        i = self.nearest({k: v for k, v in config.items() if k not in SCHEDULE}, scales, among)
        history, times = self.rows[i][1], [float(r.get("epoch_time", 0.0)) for r in self.rows[i][1]]
        branched = mode == "cooldown" and rung < full
        branch = next((r for r in self.rungs[i] if r["rung"] == rung), None) if branched else None
        if len(history) < rung or branched and branch is None:
            raise self._unrecorded(mode, rung, cooldown, f" (line {i + 1} ran {len(history)} epochs)")
        if branch is None:  # an epoch of a whole run: the truncated reading, or a run's own end
            return Reading(_metrics(history[rung - 1]), rung, sum(times[:rung]), str(i))
        record = {k.removeprefix("rung_"): v for k, v in branch.items() if k.startswith("rung_")}
        extra, seconds = int(record.pop("epochs", 0)), float(record.pop("time", 0.0))
        return Reading(record, rung + extra, sum(times[:rung]) + seconds, str(i))

    def _unrecorded(self, mode: str, rung: int, cooldown: float | None, where: str = "") -> SourceError:
        """A rung the table holds no reading for in `mode`, and the rungs it holds."""
        if mode == "truncated":
            held = f"1..{self.full_epochs}"
        elif mode == "compressed":
            held = ", ".join(map(str, sorted({c.get("epochs", len(h)) for c, h in self.rows
                                              if c.get("sched", "cosine") == "cosine"})))  # fmt: skip
        else:
            branches = {r["rung"] for (c, _), rs in zip(self.rows, self.rungs, strict=True)
                        if c.get("cooldown_frac") == cooldown for r in rs}  # fmt: skip
            held = ", ".join(map(str, sorted(branches | {self.full_epochs})))
        what = f"cooldown {cooldown:g}" if mode == "cooldown" else mode
        return SourceError(f"{self.name}: no {what} reading at rung {rung}{where}; allowed: rungs {held}")


def _metrics(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch record's metrics, without its epoch and timing."""
    return {k: v for k, v in record.items() if k not in ("epoch", "epoch_time", "img_per_sec")}


def export_lines(store: Store, sweep: Sweep) -> list[str]:
    """A sweep's finished and failed trials as curve-table lines (the stopped, preempted and crashed ones ended for
    reasons their curves do not show, so they are left out)."""
    histories = store.histories(sweep.id)
    return [
        json.dumps({"config": leaves(t.params), "history": histories[t.id]})
        for t in store.trials(sweep.id)
        if t.state in (State.FINISHED, State.FAILED) and histories.get(t.id)
    ]


# ---- YAHPO Gym's LCBench ----


class LCBench:
    """YAHPO Gym's LCBench surrogate for one OpenML task: MLPs trained with SGD and cosine annealing for 52 epochs.
    YAHPO's FAQ: epoch 1 is the untrained model and 52 repeats 51, so a trial's epochs 1..50 are its 2..51.
    Integer keys take the nearest integer of a drawn value (W&B's q distributions draw floats), values outside
    the space are clipped to it, and keys the sweep leaves out take the space's defaults."""

    EPOCHS = 50
    FIRST = 2  # YAHPO's epoch of our epoch 1
    BUDGET = 6544  # YAHPO Gym's multi-fidelity protocol for LCBench (the paper's budget, in summed epochs)

    def __init__(self, task: str, data: Path):
        self.name = f"lcbench:{task}"
        if not (data / "lcbench" / "model.onnx").is_file():
            raise SourceError(
                f"--data {data}: no lcbench/model.onnx there; allowed: a folder of YAHPO Gym's data "
                "(github.com/slds-lmu/yahpo_data) holding lcbench/"
            )
        try:
            from yahpo_gym import benchmark_set, local_config
        except ImportError:
            raise SourceError(
                f"{self.name}: needs the yahpo-gym package; allowed: pip install 'hpsearch[simulate]'"
            ) from None
        # yahpo_gym reads the data folder from a settings file it writes (by default in the user's home), once per
        # process: a file of our own, removed once read. Its request to cite it must not go into the table or --json.
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            local_config.settings_path = Path(tmp) / "yahpo.yaml"
            local_config.init_config(data_path=str(data))
            # check=False: each query would check its configuration against the space; ours are clipped to it
            self.bench = benchmark_set.BenchmarkSet("lcbench", multithread=False, check=False)
        if task not in self.bench.instances:
            raise SourceError(
                f"--curves {self.name}: {task!r} is not an LCBench task; allowed: {', '.join(self.bench.instances)}"
            )
        self.task = task
        self.bench.set_instance(task)
        space = self.bench.get_opt_space(drop_fidelity_params=True)
        self.space = {hp.name: hp for hp in space.get_hyperparameters() if hp.name != "OpenML_task_id"}
        self.defaults = {k: v for k, v in space.get_default_configuration().get_dictionary().items() if k in self.space}
        self.metrics = [y for y in self.bench.config.y_names if y != "time"] + ["epoch_time"]
        self._cache: dict[str, Curve] = {}

    def target(self) -> Target:
        return Target(list(self.space), self._problems, self.metrics, f"a key of {self.name}'s space", self.name)

    def _problems(self, name: str, hp: HP) -> list[str]:
        lo, hi = self.space[name].lower, self.space[name].upper
        slack = 1e-9 * max(abs(lo), abs(hi))  # its bounds went through a log and back: 1e-4 reads 1.0000000000000009e-4
        return [
            f"{where}: {v!r} is outside {self.name}'s space; allowed: a number >= {lo:g} and <= {hi:g}"
            for where, v in named_values(hp)
            if not (_number(v) and lo - slack <= v <= hi + slack)
        ]

    def budget(self) -> int:
        return self.BUDGET

    def curve(self, config: dict[str, Any], scales: dict[str, Scale]) -> Curve:
        full = dict(self.defaults)
        for key, value in config.items():
            if key in self.space:
                hp = self.space[key]
                value = min(max(value, hp.lower), hp.upper)
                full[key] = round(value) if type(hp.lower) is int else float(value)
        key = json.dumps(full, sort_keys=True)
        if key not in self._cache:
            epochs = range(self.FIRST - 1, self.FIRST + self.EPOCHS)  # one before the first: its time is the start
            got = self.bench.objective_function([dict(full, OpenML_task_id=self.task, epoch=e) for e in epochs])
            records = []
            for epoch, (before, now) in enumerate(zip(got, got[1:], strict=False), 1):
                record = {"epoch": epoch, **{k: float(now[k]) for k in self.metrics if k in now}}
                record["epoch_time"] = max(float(now["time"]) - float(before["time"]), 1e-3)
                records.append(record)
            self._cache[key] = Curve(records, self.EPOCHS, key)
        return self._cache[key]


def open_source(source: str, data: Path | None, sweep_store: Callable[[str], tuple[Store, Sweep]]) -> Source:
    """The source a `--curves` value names: LCBench's from YAHPO Gym's data folder `data` (default: the copy in
    a checkout's benchmarks/); `sweep_store(SWEEP_ID)` opens the store of a `sweep:` source."""
    kind, _, rest = source.partition(":")
    if kind == "lcbench" and rest:
        if data is None and not YAHPO_DATA.is_dir():
            raise SourceError(
                f"--curves {source}: needs YAHPO Gym's data folder; allowed: --data DIR or HPSEARCH_YAHPO_DATA=DIR, "
                "a folder holding lcbench/ (github.com/slds-lmu/yahpo_data)"
            )
        return LCBench(rest, data or YAHPO_DATA)
    if kind == "sweep" and rest:
        return CurveTable.from_lines(source, export_lines(*sweep_store(rest)))
    path = Path(source)
    if path.suffix == ".jsonl":
        return CurveTable.from_jsonl(path)
    raise SourceError(f"--curves: {source!r} is not a source of curves; allowed: lcbench:TASK, FILE.jsonl, sweep:ID")
