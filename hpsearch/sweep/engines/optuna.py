"""An Optuna study as the engine (`method: custom`, `scheduler: {engine: optuna, ...}`), shared by every agent of
the sweep, on any machine that shares its database.

The study is built as W&B's own Optuna scheduler builds it (wandb/sdk/sweeps/scheduler/optuna.py, whose functions
are called here): the sweep's parameters mapped to Optuna's distributions by W&B's mapping, or `search_space`
(define-by-run); the study and terminator that the `optimizer` function in `source` returns, else hpsearch's
default study (hpsearch/studies.py). Its sampler suggests, its pruner stops trials (told each epoch's value at
step = epoch; a pruned trial is recorded stopped), its terminator, or a sampler that runs out (a grid), ends the
sweep. `source` is the text create-sweep read and kept with the sweep, so every agent builds the same study.

Many agents, one study: the study's trials are the sweep's trials in the store, every agent's, mirrored into an
in-memory Optuna storage: finished ones with their values, stopped ones as pruned, running ones as running (so
TPE's constant liar does not suggest them twice), each with its intermediate values and the attrs its sampler and
pruner set (a grid point's id, a rung's value). The mirror is brought up to date before each decision, trial by
trial as their versions change; a change Optuna cannot apply in place (a finished trial running again, a claim
another agent won) rebuilds it. A suggestion is claimed exactly once by the store, as any engine's.

First trials: the trials the built study holds enqueued (Optuna's `enqueue_trial`, in the `optimizer` function)
run first, in order. The mirror is a study of its own, so before each ask the first one no trial of the sweep came
from yet is enqueued there, and Optuna's ask fixes its parameters; the trial's attrs say which one it came from,
so every agent sees it done, and the store's claim makes each run once.
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.params import DEFAULTS
from hpsearch.sweep.engine import Decision, Engine, EngineError, Suggestion, source_file
from hpsearch.sweep.spec import leaves
from hpsearch.sweep.status import objectives, planned_epochs
from hpsearch.sweep.store import State, Sweep, Trial, version

if TYPE_CHECKING:
    from hpsearch.sweep.promotion import Rungs


def _not_the_greenlet_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("The 'greenlet' package is unavailable")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise EngineError("scheduler.engine: optuna needs the optuna package; allowed: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # (it announces every study it creates)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The GP sampler's first suggestion says it optimizes sequentially without greenlet: the way its suggestions
    # were measured (docs/search.md), and nothing a user need act on.
    logging.getLogger("optuna._gp.batched_lbfgsb").addFilter(_not_the_greenlet_notice)
    return optuna


def sweep_info(sweep: Sweep, source: Path | None = None) -> Any:
    """W&B's SweepInfo of the sweep (what an `optimizer` function is given), its `scheduler.source` at `source`."""
    from wandb.sdk.sweeps.sweep_info import SweepInfo

    config = dict(sweep.config)
    if source is not None:
        config["scheduler"] = {**config["scheduler"], "source": str(source)}
    entity, project = sweep.remote.split("/")[:2] if sweep.remote else ("", config.get("project", ""))
    return SweepInfo(sweep.id, sweep.name or sweep.id, entity, project, config, "")


def build(sweep: Sweep) -> tuple[Any, dict[str, Any] | None, Any, Any]:
    """(study, distributions or None, search_space function or None, terminator or None), as W&B's scheduler
    builds them from the sweep config, with `source` from the text kept with the sweep. Raises EngineError."""
    optuna = _optuna()
    from wandb.sdk.sweeps.scheduler import optuna as wandb_optuna
    from wandb.sdk.sweeps.scheduler.client import load_optimizer_config

    from hpsearch import studies

    scheduler = sweep.config.get("scheduler") or {}
    with source_file(sweep) as source:
        info = sweep_info(sweep, source)
        try:
            if scheduler.get("search_space"):
                space, distributions = wandb_optuna.load_trial_constructor(str(source), scheduler["search_space"]), None
            else:
                space, distributions = None, wandb_optuna.search_space_from_sweep_config(sweep.config["parameters"])
            if scheduler.get("optimizer"):
                study, terminator = load_optimizer_config(str(source), scheduler["optimizer"], optuna.Study, info)
            else:
                study, terminator = studies.default(info), None
            # W&B's own checks of the study against the sweep (directions, metric names)
            wandb_optuna.make_optimizer(info, wandb_optuna.OptunaOptions(study, distributions, space, terminator))
        except (ValueError, TypeError) as e:
            raise EngineError(f"scheduler: {' '.join(str(e).split())}") from None
        except Exception as e:  # the user's own code failed: say where
            raise EngineError(f"scheduler.source: {type(e).__name__}: {e}") from None
    return study, distributions, space, terminator


def _first_trials(study: Any, distributions: dict[str, Any] | None, name: str | None) -> list[tuple[dict, dict]]:
    """(params, user_attrs) of each trial the study holds enqueued, in order. Raises EngineError for one that names
    a parameter the sweep lacks or a value outside its space (a define-by-run space names its own: not checked)."""
    optuna = _optuna()
    from hpsearch import studies

    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    first = [(t.system_attrs.get("fixed_params", {}), t.user_attrs) for t in waiting]
    for i, (params, _) in enumerate(first if distributions is not None else []):
        where = f"scheduler.optimizer: {name!r}'s enqueued trial {i + 1}"
        for key, value in params.items():
            if key not in distributions:
                raise EngineError(f"{where} names {key!r}, not a parameter of the sweep; allowed: "
                                  f"{', '.join(distributions)}")  # fmt: skip
            if not studies.lies_in(distributions[key], value):
                raise EngineError(f"{where} sets {key} = {value!r}, outside the sweep's space; allowed: "
                                  f"{_allowed(distributions[key])}")  # fmt: skip
    return first


def _allowed(distribution: Any) -> str:
    """The values an Optuna distribution draws, in words."""
    if hasattr(distribution, "choices"):
        return ", ".join(map(str, distribution.choices))
    step = f" in steps of {distribution.step:g}" if distribution.step not in (None, 1) else ""
    return f"{distribution.low:g} to {distribution.high:g}{step}{' (log)' if distribution.log else ''}"


def _system_attrs(trial: Trial) -> dict[str, Any]:
    """A trial's Optuna system attrs: its sampler's, set when it was suggested, and its pruner's (a rung's value),
    kept apart with the epochs the trial had then: a trial restarted from epoch 0 has not passed those rungs yet,
    so its pruner's state counts only once it has run as far again (by then the pruner has set it anew)."""
    record = trial.attrs.get("optuna", {})
    pruner = record.get("pruner", {})
    current = pruner.get("system_attrs", {}) if len(trial.series.epochs) >= pruner.get("epochs", 0) else {}
    return {**record.get("system_attrs", {}), **current}


def _check_rungs(sweep: Sweep, rungs: Rungs) -> None:
    """A sweep whose trials cannot serve the rungs is refused (EngineError): rungs at or above the trials' epochs
    (none would ever be reached), compressed rungs where the trials' length is no parameter, cooldown rungs
    anywhere but on hpsearch's trainer's wsd schedule."""
    where = f"scheduler: PromotingHalving(min_resource={rungs.min_epochs}, mode={rungs.mode!r})"
    program = sweep.config.get("program")
    epochs = (sweep.config.get("parameters") or {}).get("epochs")
    fixed = epochs.get("value") if isinstance(epochs, dict) else None
    top = fixed if isinstance(fixed, int) else None if epochs or program else DEFAULTS["epochs"]
    if top is not None and not rungs.below(top):
        raise EngineError(f"{where}: its lowest rung is not below the trials' {top} epochs, so no trial would reach "
                          f"a rung; allowed: min_resource below epochs")  # fmt: skip
    if rungs.mode == "compressed" and program and epochs is None:
        raise EngineError(
            f"{where} runs each configuration again at each rung's length, passed as --epochs, but the sweep of "
            f"program {program!r} has no epochs parameter; allowed: an epochs parameter, or mode truncated"
        )
    if rungs.mode == "cooldown":
        _check_cooldown(sweep, where)


def _check_cooldown(sweep: Sweep, where: str) -> None:
    """Cooldown rungs are branches of hpsearch's trainer on a wsd schedule."""
    if sweep.config.get("program"):
        raise EngineError(
            f"{where} reads rungs from hpsearch's trainer's cooldown branches, which program "
            f"{sweep.config['program']!r} does not run; allowed: no program, or mode truncated"
        )
    params = sweep.config.get("parameters") or {}
    for key, allowed in (("sched", "wsd"), ("cooldown_at", None)):
        spec = params.get(key)
        if spec is not None and (allowed is None or spec != {"value": allowed}):
            raise EngineError(f"{where} sets {key} of every trial itself; allowed: "
                              + (f"{key}: {{value: {allowed}}} or none" if allowed else f"no {key}"))  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (as a trial's values and intermediate values hold it)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


class _Kept(dict):
    """A dict of a mirrored trial that Optuna's storage keeps as it is. The storage deep-copies every trial it is
    given (seconds, for a fresh agent's first decision over thousands of trials with hundreds of epochs each), but
    it never changes a trial's dicts in place (it copies one before it changes it), and neither does the mirror."""

    def __deepcopy__(self, memo: dict) -> _Kept:
        return self


class OptunaEngine(Engine):
    def __init__(self, sweep: Sweep, reseed: bool = True):
        """Raises EngineError (one line) if the study cannot be built. With `reseed`, the sampler draws from a
        random state of its own (Optuna's `reseed_rng`, as Optuna reseeds the sampler of each parallel worker), so
        agents that build the same seeded study do not draw the same points; a replay (one agent) keeps the seed."""
        self.optuna = optuna = _optuna()
        from wandb.sdk.sweeps.scheduler.optuna import sweep_directions

        self.sweep = sweep
        built, self.distributions, self.space, self.terminator = build(sweep)
        self.directions = sweep_directions(sweep.config)
        self.metrics = [m.name for m in objectives(sweep)]
        self.sampler, self.pruner = built.sampler, built.pruner
        self.first = _first_trials(built, self.distributions, (sweep.config.get("scheduler") or {}).get("optimizer"))
        if reseed:
            self.sampler.reseed_rng()
        single = len(self.directions) == 1  # Optuna's pruners judge one objective
        self.stops = single and not isinstance(self.pruner, optuna.pruners.NopPruner)
        self.stopper = f"Optuna's {type(self.pruner).__name__}"
        from hpsearch.sweep.promotion import PromotingHalving

        # Promotion: the pruner's rungs pause and resume trials here (see sweep/promotion.py)
        self.rungs = self.pruner.rungs if single and isinstance(self.pruner, PromotingHalving) else None
        if self.rungs:
            _check_rungs(sweep, self.rungs)
            self.pauses, self.objective = True, objectives(sweep)[0]
            brackets = f", {self.rungs.brackets} brackets" if self.rungs.brackets > 1 else ""
            self.stopper = f"promotion ({self.rungs.mode} rungs {self.rungs.min_epochs} x {self.rungs.eta}^k{brackets})"
            # (a compressed rung is a whole run: a promotion starts the configuration again, nothing is decided)
            self.stops = self.rungs.mode != "compressed"
        self._asked: tuple[int, str] | None = None  # (number, token) of the suggestion not yet seen claimed
        self._rebuild()

    # ---- the mirror of the sweep's trials ----
    def _rebuild(self) -> None:
        self.storage = self.optuna.storages.InMemoryStorage()
        # the sweep's id as the study's name: HyperbandPruner assigns brackets by study name and trial number
        self.study = self.optuna.create_study(
            storage=self.storage, sampler=self.sampler, pruner=self.pruner, study_name=self.sweep.id,
            directions=self.directions,
        )  # fmt: skip
        self.study_id = self.storage.get_study_id_from_name(self.sweep.id)
        self._versions: list[Any] = []  # the version of each mirrored trial, by number
        self._asked = None

    def _sync(self, trials: list[Trial]) -> None:
        """Bring the mirror up to date with the store's trials (number = the trial's place in the sweep)."""
        for number, trial in enumerate(trials):
            v = version(trial)
            if number < len(self._versions) and self._versions[number] == v:
                continue
            if not self._apply(number, trial):
                self._rebuild()
                return self._sync(trials)
            if number == len(self._versions):
                self._versions.append(v)
            else:
                self._versions[number] = v
        if self._asked and len(trials) <= self._asked[0]:  # a suggestion that was never claimed
            self._rebuild()
            self._sync(trials)

    def _apply(self, number: int, trial: Trial) -> bool:
        """Mirror one trial: a new one, or the changes to one Optuna can still change; False if it cannot."""
        state, values = self._state(trial)
        single = len(self.directions) == 1  # (intermediate values are for pruners, which judge one objective)
        # NaN as Optuna stores a reported NaN: its pruners prune a diverged trial
        steps = dict(trial.series.pairs()) if single else {}
        system = trial.attrs.get("optuna", {})
        if number == len(self._versions):
            if self._asked and self._asked[0] == number:  # our own suggestion: claimed by us, or by another?
                if system.get("token") != self._asked[1]:
                    return False
                self._asked = None
            else:
                self.storage.create_new_trial(self.study_id, template_trial=self._frozen(trial, state, values, steps))
                return True
        tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        now = self.storage.get_trial(tid)
        if now.state.is_finished() or any(step not in steps for step in now.intermediate_values):
            return now.state == state and now.values == values and _same(now.intermediate_values, steps)
        for step, value in steps.items():
            if not _same(now.intermediate_values.get(step), value):
                self.storage.set_trial_intermediate_value(tid, step, value)
        for key, value in _system_attrs(trial).items():
            if now.system_attrs.get(key) != value:
                self.storage.set_trial_system_attr(tid, key, value)
        if state.is_finished():
            self.storage.set_trial_state_values(tid, state, values)
        return True

    def _state(self, trial: Trial) -> tuple[Any, list[float] | None]:
        """The trial's Optuna state and values: finished with every objective (else failed, as W&B's scheduler
        tells it), stopped as pruned, running or waiting to resume as running, failed or crashed as failed."""
        ts = self.optuna.trial.TrialState
        if trial.state in (State.RUNNING, State.PREEMPTED):
            return ts.RUNNING, None
        # (the sampler sees a paused trial, or a compressed rung's whole run, at the rung it reached)
        if trial.state in (State.STOPPED, State.PAUSED) or trial.state == State.FINISHED and self._below_top(trial):
            return ts.PRUNED, None
        values = [trial.summary.get(m) for m in self.metrics]
        if trial.state == State.FINISHED and all(isinstance(v, (int, float)) and v == v for v in values):
            return ts.COMPLETE, [float(v) for v in values]
        return ts.FAIL, None

    def _frozen(self, trial: Trial, state: Any, values: list[float] | None, steps: dict[int, float]) -> Any:
        record = trial.attrs.get("optuna") or self._told(trial)
        distributions = _Kept({k: self._distribution(d) for k, d in record.get("distributions", {}).items()})
        params = _Kept({k: v for k, v in record.get("params", {}).items() if k in distributions})
        now = datetime.now()
        return self.optuna.trial.FrozenTrial(
            number=-1, state=state, value=None, values=values, datetime_start=now,
            datetime_complete=now if state.is_finished() else None, params=params, distributions=distributions,
            user_attrs=_Kept(record.get("user_attrs", {})), system_attrs=_Kept(_system_attrs(trial)),
            intermediate_values=_Kept(steps), trial_id=-1,
        )  # fmt: skip

    def _told(self, trial: Trial) -> dict[str, Any]:
        """The record of a trial no study asked for (a prior result, sweep/prior.py): its parameters in the space."""
        flat, to_json = leaves(trial.params), self.optuna.distributions.distribution_to_json
        space = {k: d for k, d in (self.distributions or {}).items() if k in flat}
        return {"params": {k: flat[k] for k in space}, "distributions": {k: to_json(d) for k, d in space.items()}}

    @functools.cache  # noqa: B019 (one per engine, for its life: every trial of a sweep shares its few distributions)
    def _distribution(self, text: str) -> Any:
        return self.optuna.distributions.json_to_distribution(text)

    def _record(self, number: int, token: str, first: int | None) -> dict[str, Any]:
        """The attrs that carry a trial's Optuna record to every agent: with the token of the agent's claim, and
        which first trial it is, if one."""
        frozen = self.storage.get_trial(self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number))
        dist = self.optuna.distributions
        record = {
            "params": frozen.params,
            "distributions": {k: dist.distribution_to_json(d) for k, d in frozen.distributions.items()},
            "system_attrs": frozen.system_attrs,
            "user_attrs": frozen.user_attrs,
        }
        return {"optuna": {**record, "token": token, **({"first": first} if first is not None else {})}}

    # ---- decisions ----
    def suggest(self, trials: list[Trial]) -> Suggestion | None:
        self._sync(trials)
        if self.terminator is not None and self.terminator(self.study):
            self.done = True
        is_exhausted = getattr(self.sampler, "is_exhausted", None)  # (GridSampler's: every point once)
        if self.done or (is_exhausted is not None and is_exhausted(self.study)):
            self.done = True
            return None
        ran = {t.attrs.get("optuna", {}).get("first") for t in trials}
        first = next((i for i in range(len(self.first)) if i not in ran), None)
        if first is not None:
            self.study.enqueue_trial(*self.first[first])
        asked = self.study.ask(self.distributions) if self.distributions is not None else self.study.ask()
        params = asked.params if self.space is None else dict(self.space(asked))
        token = secrets.token_hex(8)  # tells this agent's claim from another's at the same place
        self._asked = (asked.number, token)
        if is_exhausted is not None and self._repeats(asked):
            # Once every point of a finite space has started, Optuna's grid hands out unfinished ones again; here
            # a point runs once: nothing now, and the sweep is done when the last one ends.
            return None
        attrs = self._record(asked.number, token, first)
        if self.rungs:
            params, attrs = self._placed(params, attrs, asked.number)
        return Suggestion(params, attrs)

    def _placed(self, params: dict[str, Any], attrs: dict[str, Any], number: int) -> tuple[dict, dict]:
        """A new configuration's first run under the rungs: in its bracket (drawn, where there are several); on a
        wsd schedule with cooldown branches at its rungs (cooldown mode: the trainer measures each rung cooled); or
        as a whole run of its lowest rung's length (compressed)."""
        full = self._full(params)
        top = full["epochs"] or 0
        if self.rungs.brackets > 1:
            attrs = {**attrs, "bracket": self.rungs.bracket(top, f"{self.sweep.id}/{number}")}
        rungs = self.rungs.below(top, attrs.get("bracket", 0))
        if self.rungs.mode == "cooldown":
            params = {**params, "sched": "wsd", **({"cooldown_at": ",".join(map(str, rungs))} if rungs else {})}
        if self.rungs.mode == "compressed":
            params, attrs = self._run(params, full, min(rungs, default=top)), {**attrs, "full": full}
        return params, attrs

    def _full(self, params: dict[str, Any]) -> dict[str, int]:
        """A configuration's own values of what a compressed rung shortens: its epochs, and its warmup's (of
        hpsearch's trainer, or of a program whose sweep has the parameter)."""
        warmup = params.get("warmup_epochs", None if self.sweep.config.get("program") else DEFAULTS["warmup_epochs"])
        full = {"epochs": planned_epochs(self.sweep.config, leaves(params))}
        return full | ({"warmup_epochs": warmup} if isinstance(warmup, int) else {})

    @staticmethod
    def _run(params: dict[str, Any], full: dict[str, int], epochs: int) -> dict[str, Any]:
        """The parameters of the configuration's run of `epochs` epochs: its whole schedule, warmup included,
        compressed into them."""
        run = {**params, "epochs": epochs}
        if "warmup_epochs" in full:
            run["warmup_epochs"] = round(full["warmup_epochs"] * epochs / full["epochs"])
        return run

    def _repeats(self, asked: Any) -> bool:
        """Whether another trial of the study (not a failed one) has the parameters just asked."""
        failed = self.optuna.trial.TrialState.FAIL
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
        return any(t.params == asked.params for t in trials if t.number != asked.number and t.state != failed)

    def resume(self, trials: list[Trial], sees: Callable[[Trial], bool]) -> Trial | Suggestion | None:
        promoted = self.rungs.promotable(trials, self.objective, self._top, sees, self._length) if self.rungs else None
        if promoted is None or self.rungs.mode != "compressed":
            return promoted
        # the configuration again at the next rung's length, from scratch, as the same point of the study
        full = promoted.attrs["full"]
        record = {k: v for k, v in promoted.attrs.get("optuna", {}).items() if k in ("params", "distributions")}
        epochs = self.rungs.after(self._length(promoted), full["epochs"])
        kept = {k: promoted.attrs[k] for k in ("full", "bracket") if k in promoted.attrs}
        attrs = {"optuna": record, **kept, "promoted_from": promoted.id}
        return Suggestion(self._run(promoted.params, full, epochs), attrs)

    def decide(self, trial: Trial, trials: list[Trial], since: int = 0) -> tuple[Decision, dict[str, Any] | None]:
        if not self.rungs:
            return super().decide(trial, trials, since)
        fresh = next(t for t in trials if t.id == trial.id)
        return self.rungs.decide(fresh, trials, self.objective, self._top(fresh), since), None

    def _length(self, trial: Trial) -> int | None:
        """The epochs the trial runs (a compressed rung's run: its rung's)."""
        return planned_epochs(self.sweep.config, leaves(trial.params))

    def _top(self, trial: Trial) -> int | None:
        """Its configuration's full length, where its rungs lie below."""
        return trial.attrs.get("full", {}).get("epochs") or self._length(trial)

    def _below_top(self, trial: Trial) -> bool:
        """A compressed rung's run, shorter than its configuration's full length."""
        return "full" in trial.attrs and (self._length(trial) or 0) < trial.attrs["full"]["epochs"]

    def should_stop(self, trial: Trial, trials: list[Trial]) -> tuple[bool, dict[str, Any] | None]:
        """The pruner's verdict (Optuna's `Trial.should_prune`); the trial's new attrs if the pruner set any."""
        self._sync(trials)
        number = next(i for i, t in enumerate(trials) if t.id == trial.id)
        tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        before = self.storage.get_trial(tid).system_attrs
        stop = self.pruner.prune(self.study, self.storage.get_trial(tid))
        after = self.storage.get_trial(tid).system_attrs
        if after == before:
            return stop, None
        fresh = trials[number]  # (the agent's trial object is the one it claimed: its attrs may be older)
        record = fresh.attrs.get("optuna", {})
        claimed = record.get("system_attrs", {})
        pruner = {
            "epochs": len(fresh.series.epochs),
            "system_attrs": {k: v for k, v in after.items() if claimed.get(k) != v},
        }
        return stop, {"optuna": {**record, "pruner": pruner}}
