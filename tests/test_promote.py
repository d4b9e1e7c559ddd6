"""Pause and promote: a promotion scheduler's rungs pause the trials a rung does not rank in its top 1/eta, and a
paused trial resumes, from its checkpoint and under its own id, once a larger cohort ranks it there; each promotion
runs once, whichever agent claims it. In-process controllers on a real store for the rules; real agent processes on
SQLite and PostgreSQL for the resume; replays for the decisions on recorded curves. And the fixes that came with
the decision interface: a finished trial is never asked to stop, a NaN reaches Optuna's pruners, and a run another
agent took first is handed back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import env, hpsearch, lapse, make_sweep, open_store, run_agent, stub_sweep, sweep_status, wait_for

from hpsearch.simulate.curves import CurveTable
from hpsearch.simulate.replay import replay
from hpsearch.sweep.controller import Start, SweepController, controller_for
from hpsearch.sweep.promotion import bracket_of, value_at
from hpsearch.sweep.spec import read_code
from hpsearch.sweep.store import State, Store, new_id
from hpsearch.sweep.wandb_server import ServerController

PROMOTING = """import optuna
from hpsearch.sweep.promotion import PromotingHalving

def study(sweep):
    s = optuna.create_study(direction='maximize', sampler=optuna.samplers.RandomSampler(seed=0),
                            pruner=PromotingHalving({min_epochs}, {eta}, {mode!r}, {brackets}))
{enqueued}    return s
"""


def promoting(
    tmp_path: Path,
    config: dict,
    *first: dict,
    min_epochs: int = 1,
    eta: int = 3,
    mode: str = "truncated",
    brackets: int = 1,
) -> dict:
    """`config` searched by a study with PromotingHalving rungs read in `mode`, `first` enqueued in order."""
    enqueued = "".join(f"    s.enqueue_trial({params!r})\n" for params in first)
    study = PROMOTING.format(min_epochs=min_epochs, eta=eta, mode=mode, brackets=brackets, enqueued=enqueued)
    (tmp_path / "study.py").write_text(study)
    scheduler = {"engine": "optuna", "source": str(tmp_path / "study.py"), "optimizer": "study"}
    return {**config, "method": "custom", "metric": {"name": "val_acc", "goal": "maximize"}, "scheduler": scheduler}


def run_to(controller: SweepController, claim, values: list[float]) -> str:
    """Record `values` as the claimed trial's epochs, asking after each as the agent does; the decision that ended
    it (pause, stop) or `finish` once its values are spent."""
    trial, checkpoint = claim.trial, controller.store.checkpoint(claim.trial)
    done = trial.epochs if claim.how == Start.PROMOTED else 0
    for epoch, value in enumerate(values, done + 1):
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(str(epoch))  # as a trainer keeps it
        controller.record_epochs(trial, [{"epoch": epoch, "val_acc": value}])
        decision = controller.decide(trial)
        if decision != "continue":
            controller.finish(trial, State.PAUSED if decision == "pause" else State.STOPPED)
            return decision
    controller.finish(trial, State.FINISHED, 0, summary={"val_acc": values[-1]})
    return "finish"


def test_a_rung_pauses_what_it_does_not_rank_in_its_top_third_and_promotes_it_once_a_larger_cohort_does(tmp_path):
    config = promoting(tmp_path, {"parameters": {"lr": {"min": 0.0, "max": 1.0}, "epochs": {"value": 3}}})
    with Store(tmp_path / "store") as store:
        sweep = store.add_sweep(config, "local", code=read_code(config, tmp_path))
        c = controller_for(store, sweep, "agent-a")
        decisions = [run_to(c, c.next_trial(0), [v, v, v]) for v in (10.0, 20.0, 30.0, 5.0, 25.0)]
        # 1 and 2 in a cohort under eta; 3 the best of 3 goes on at once; 4 and 5 below 30 (1 place of 4, 5)
        assert decisions == ["pause", "pause", "finish", "pause", "pause"]
        assert run_to(c, c.next_trial(0), [1.0]) == "pause"  # 6 values at the rung: 2 places, 30 and 25
        paused = [t for t in store.trials(sweep.id) if t.state == State.PAUSED]
        claim = c.next_trial(0)
        assert claim.how == Start.PROMOTED and claim.trial.id == paused[3].id and claim.trial.params == paused[3].params
        assert run_to(c, claim, [26.0, 27.0]) == "finish"
        assert [r["epoch"] for r in store.history(claim.trial.id)] == [1, 2, 3]
        # nothing more is promotable now: a new configuration comes next
        assert c.next_trial(0).how == Start.STARTED


def test_a_paused_trial_resumes_on_another_agent_from_its_checkpoint_under_its_own_id(tmp_path: Path, store_db):
    hold = tmp_path / "hold"  # each trial waits after epoch 1 until the agent has decided at its rung
    hold.write_text("1")
    config = stub_sweep("custom", epochs=2, epoch_s=0.05, lr={"min": 0.01, "max": 0.99}, hold={"value": str(hold)})
    config = promoting(tmp_path, {**config, "run_cap": 2}, {"lr": 0.5}, {"lr": 0.1}, eta=2)
    sweep_id = make_sweep(tmp_path, config)
    first = run_agent(tmp_path, sweep_id, "--count", "2")  # its two trials pause at the rung: it runs no more
    assert first.returncode == 0, first.stdout + first.stderr
    store = open_store(tmp_path / "store")
    good, poor = store.trials(sweep_id)
    assert (good.state, good.epochs, poor.state, poor.epochs) == ("paused", 1, "paused", 1)
    assert sweep_status(tmp_path, sweep_id)["sweep"]["counts"]["paused"] == 2
    hold.unlink()
    second = run_agent(tmp_path, sweep_id)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"trial {good.id} promoted" in second.stdout
    good_now, poor_now = store.trials(sweep_id)
    assert (good_now.id, good_now.state) == (good.id, "finished") and good_now.agent != good.agent
    assert [r["epoch"] for r in store.history(good.id)] == [1, 2]  # epoch 2 next, never an epoch twice
    log = (tmp_path / "store" / sweep_id / good.id / "stdout.log").read_text()
    assert "resumed from" in log and "after epoch 1" in log
    assert poor_now.state == "paused"  # the budget spent, it stays paused (resumable if the budget is raised)


def curve_table(tmp_path: Path, epochs: int, lrs: list[float]) -> Path:
    rows = [{"config": {"lr": lr}, "history": [{"epoch": e, "val_acc": 100 * lr * e / epochs, "epoch_time": 1.0}
             for e in range(1, epochs + 1)]} for lr in lrs]  # fmt: skip
    path = tmp_path / "curves.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_replay_pauses_and_promotes_continuing_each_curve_where_it_paused(tmp_path: Path):
    lrs = [0.05 * i for i in range(1, 20)]
    source = CurveTable.from_jsonl(curve_table(tmp_path, 9, lrs))
    config = promoting(tmp_path, {"parameters": {"lr": {"values": lrs}, "epochs": {"value": 9}}})
    with Store(tmp_path / "store") as store:
        r = replay(store, config, source, 2, 120, 0, read_code(config, tmp_path))
        trials, histories = store.trials(r.sweep), store.histories(r.sweep)
    assert r.paused and r.promoted and not r.stopped
    for t in trials:  # every curve continued where it paused: epochs 1..k once each, values as recorded
        epochs = [h["epoch"] for h in histories[t.id]]
        assert epochs == list(range(1, len(epochs) + 1))
        assert [h["val_acc"] for h in histories[t.id]] == [100 * t.params["lr"] * e / 9 for e in epochs]
        assert t.state != "paused" or epochs[-1] in (1, 3)  # rungs at 1 and 3 below the top, 9
    assert sum(len(h) for h in histories.values()) == r.epochs == 120


def test_a_trial_that_reaches_its_epochs_finishes_even_with_a_hyperband_band_there(tmp_path: Path):
    """Hyperband's bands at 2 and 6 epochs (min_iter 2, eta 3): a trial's 6th epoch is its last, and it finishes."""
    lrs = [0.1 * i for i in range(1, 10)]
    source = CurveTable.from_jsonl(curve_table(tmp_path, 6, lrs))
    config = {"method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
              "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3},
              "parameters": {"lr": {"values": lrs}, "epochs": {"value": 6}}}  # fmt: skip
    with Store(tmp_path / "store") as store:
        r = replay(store, config, source, 1, 180, 0)
        trials = store.trials(r.sweep)
    assert r.stopped and all(t.state == "finished" for t in trials if t.epochs == 6)
    assert not any(t.state == "stopped" and t.epochs == 6 for t in trials)


def test_a_nan_reaches_optunas_pruner_and_the_diverged_trial_is_pruned(tmp_path: Path):
    (tmp_path / "study.py").write_text(
        "import optuna\n\ndef study(sweep):\n    return optuna.create_study(direction='maximize', "
        "pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))\n"
    )
    scheduler = {"engine": "optuna", "source": str(tmp_path / "study.py"), "optimizer": "study"}
    config = {"method": "custom", "metric": {"name": "val_acc", "goal": "maximize"}, "scheduler": scheduler,
              "parameters": {"lr": {"min": 0.0, "max": 1.0}, "epochs": {"value": 3}}}  # fmt: skip
    with Store(tmp_path / "store") as store:
        sweep = store.add_sweep(config, "local", code=read_code(config, tmp_path))
        c = controller_for(store, sweep, "agent-a")
        assert run_to(c, c.next_trial(0), [50.0, 60.0, 70.0]) == "finish"
        assert run_to(c, c.next_trial(0), [math.nan, 80.0, 90.0]) == "stop"


class _Handing:
    """A W&B server that hands every slot the same known run, as it hands a run to resume."""

    done = False

    def __init__(self, run_id: str):
        self.run_id, self.handed_back = run_id, []

    def handed(self, slot: int) -> dict:
        return {"type": "resume", "run_id": self.run_id, "args": {"lr": {"value": 0.1}}}

    def hand_back(self, slot: int, command: dict) -> None:
        self.handed_back.append(command["run_id"])


def test_a_handed_run_another_agent_took_first_is_handed_back_not_an_error(tmp_path: Path):
    with Store(tmp_path / "store") as store:
        sweep = store.add_sweep({"method": "random", "parameters": {"lr": {"value": 0.1}}}, "local")
        trial = store.add_trial(sweep.id, {"lr": 0.1}, "agent-a", trial_id="run1")
        store.end(trial.id, State.PREEMPTED, "agent-a")
        server = _Handing("run1")
        late = ServerController(store, sweep, "agent-c", server)
        seen = store.trial("run1")
        assert store.take(seen, "agent-b")  # agent b claims it between c's read and c's claim
        store.trials = lambda sweep_id, real=store.trials: [seen]  # what c read: still preempted
        assert late.next_trial(0) is None and server.handed_back == ["run1"]
        assert store.trial("run1").agent == "agent-b"


def test_the_shipped_promotion_study_places_its_rungs_at_a_ninth_and_a_third_of_the_epochs(tmp_path: Path):
    config = stub_sweep("custom", epochs=27, lr={"min": 0.01, "max": 0.99})
    config.update(metric={"name": "val_acc", "goal": "maximize"},
                  scheduler={"engine": "optuna", "source": "hpsearch/studies.py", "optimizer": "promote"})  # fmt: skip
    sweep_id = make_sweep(tmp_path, config)  # create-sweep takes it
    with open_store(tmp_path / "store") as store:
        c = controller_for(store, store.sweep(sweep_id), "agent-a")
        assert c.engine.pauses and c.engine.rungs.below(27) == [3, 9]
        assert run_to(c, c.next_trial(0), [50.0] * 27) == "pause"  # the first at its first rung: a cohort of 1
        assert store.trials(sweep_id)[0].epochs == 3


def test_cooldown_rungs_run_the_trainer_on_wsd_with_branches_there_and_judge_the_cooled_value(tmp_path: Path):
    config = promoting(tmp_path, {"parameters": {"lr": {"min": 0.0, "max": 1.0}, "epochs": {"value": 9}}},
                       min_epochs=3, eta=2, mode="cooldown")  # fmt: skip
    with Store(tmp_path / "store") as store:
        sweep = store.add_sweep(config, "local", code=read_code(config, tmp_path))
        c = controller_for(store, sweep, "agent-a")
        first = c.next_trial(0)
        assert first.trial.params["sched"] == "wsd" and first.trial.params["cooldown_at"] == "3,6"
        cooled = [{"epoch": e, "val_acc": 90.0, **({"rung_val_acc": 10.0 * e} if e in (3, 6) else {})}
                  for e in range(1, 10)]  # fmt: skip
        c.record_epochs(first.trial, cooled[:3])
        assert c.decide(first.trial) == "pause"  # a cohort of one
        c.finish(first.trial, State.PAUSED)
        assert value_at(store.trial(first.trial.id), 3) == 30.0  # the series holds the rung's (cooled) value
        second = c.next_trial(0)  # at its rung 40 cooled, 50 raw: judged by 40, above the first's 30
        c.record_epochs(second.trial, [{"epoch": e, "val_acc": 50.0} for e in (1, 2)])
        c.record_epochs(second.trial, [{"epoch": 3, "val_acc": 50.0, "rung_val_acc": 40.0}])
        assert c.decide(second.trial) == "continue"


def test_a_rung_read_late_among_several_new_epochs_is_still_judged(tmp_path: Path):
    config = promoting(tmp_path, {"parameters": {"lr": {"min": 0.0, "max": 1.0}, "epochs": {"value": 9}}})
    with Store(tmp_path / "store") as store:
        sweep = store.add_sweep(config, "local", code=read_code(config, tmp_path))
        c = controller_for(store, sweep, "agent-a")
        claim = c.next_trial(0)
        c.record_epochs(claim.trial, [{"epoch": e, "val_acc": 10.0} for e in (1, 2)])  # rung 1 passed, unread
        assert c.decide(claim.trial) == "pause"
        c.finish(claim.trial, State.PAUSED)
        assert c.next_trial(0).how == Start.STARTED  # a cohort of one promotes nothing


def test_cooldown_rungs_need_hpsearchs_trainer(tmp_path: Path):
    config = stub_sweep("custom", epochs=9, lr={"min": 0.01, "max": 0.99})
    config = promoting(tmp_path, config, min_epochs=3, mode="cooldown")
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(config))
    p = hpsearch("create-sweep", str(f), "--dir", str(tmp_path / "store"), cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "mode='cooldown'" in p.stderr and "allowed: no program, or mode truncated" in p.stderr
    assert not (tmp_path / "store").exists()  # nothing stored


def test_a_digits_sweep_with_cooldown_rungs_runs_end_to_end_on_two_agents_and_reports_each_trials_rungs(
    tmp_path: Path,
):
    params = {"dataset": "digits", "model": "test_resnet", "cifar_stem": False, "epochs": 3, "batch_size": 64,
              "workers": 0, "aa": "none", "warmup_epochs": 0, "val_split": 100}  # fmt: skip
    config = {"parameters": {**{k: {"value": v} for k, v in params.items()}, "lr": {"values": [0.03, 0.1, 0.3]}},
              "run_cap": 3}  # fmt: skip
    sweep_id = make_sweep(tmp_path, promoting(tmp_path, config, min_epochs=1, eta=3, mode="cooldown"))
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store")]
    agents = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]  # fmt: skip
    outs = [a.communicate(timeout=600)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outs
    assert any("paused by promotion" in out for out in outs)  # the first at the rung: a cohort of one
    store = open_store(tmp_path / "store")
    trials, histories = store.trials(sweep_id), store.histories(sweep_id)
    assert len(trials) == 3 and {t.state for t in trials} <= {"finished", "paused"}
    for t in trials:  # each on wsd with a branch at its rung, recorded once per epoch
        assert (t.params["sched"], t.params["cooldown_at"]) == ("wsd", "1")
        assert [r["epoch"] for r in histories[t.id]] == list(range(1, t.epochs + 1))
        assert "rung_val_acc" in histories[t.id][0] and value_at(t, 1) == histories[t.id][0]["rung_val_acc"]
    md = hpsearch("report", sweep_id, "--format", "md", "--dir", str(tmp_path / "store"), cwd=tmp_path).stdout
    row = next(line for line in md.splitlines() if line.startswith("| rungs (cooled)"))
    assert row.count("1: ") == 3


def test_a_w_and_b_servers_sweep_cannot_pause_so_create_sweep_refuses_one_that_would(tmp_path: Path):
    config = stub_sweep("custom", epochs=9, lr={"min": 0.01, "max": 0.99})
    config.update(metric={"name": "val_acc", "goal": "maximize"},
                  scheduler={"engine": "optuna", "source": "hpsearch/studies.py", "optimizer": "promote"})  # fmt: skip
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(config))
    p = hpsearch("create-sweep", str(f), "--backend", "wandb", "--dir", str(tmp_path / "store"), cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "pauses and promotes trials" in p.stderr and "allowed: --backend local" in p.stderr
    assert not (tmp_path / "store").exists()  # nothing stored, nothing registered


def test_an_agent_killed_mid_promotion_with_another_trial_paused_loses_nothing(tmp_path: Path, store_db):
    hold = tmp_path / "hold"  # every epoch waits while it exists: the promoted trial's last one until the kill
    hold.write_text("1")
    config = stub_sweep("custom", epochs=2, epoch_s=0.05, lr={"min": 0.01, "max": 0.99}, hold={"value": str(hold)})
    config = promoting(tmp_path, {**config, "run_cap": 2}, {"lr": 0.5}, {"lr": 0.1}, eta=2)
    sweep_id = make_sweep(tmp_path, config)
    store = open_store(tmp_path / "store")
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store")]
    agent = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def promoted_and_held() -> bool:
        trials = store.trials(sweep_id)
        return len(trials) == 2 and trials[0].state == "running" and trials[0].epochs == 2

    wait_for(promoted_and_held)  # the good one promoted at its rung, its second epoch recorded; the poor one paused
    agent.kill()
    agent.communicate(timeout=60)
    good, poor = store.trials(sweep_id)
    assert (good.resumes, poor.state, poor.epochs) == (1, "paused", 1)
    lapse(store, good.id)  # its agent died an hour ago, as far as the lease goes
    hold.unlink()
    p = run_agent(tmp_path, sweep_id)
    assert p.returncode == 0, p.stdout + p.stderr
    good, poor = store.trials(sweep_id)
    assert (good.state, good.crashes, good.resumes) == ("finished", 1, 2)  # resumed after the crash, from epoch 2
    assert [r["epoch"] for r in store.history(good.id)] == [1, 2]
    assert (poor.state, [r["epoch"] for r in store.history(poor.id)]) == ("paused", [1])


def test_three_agents_on_postgresql_run_every_promotion_once_and_no_epoch_twice(tmp_path: Path, postgres, monkeypatch):
    monkeypatch.setenv("HPSEARCH_DB", postgres.create_database(f"t_{new_id()}"))
    lrs = [round(0.9 - 0.1 * i, 1) for i in range(9)]  # worse and worse: the early ones are promoted as more arrive
    # (an epoch longer than the agent's poll: each trial is read at its rung before it could run to its end)
    config = stub_sweep("custom", epochs=9, epoch_s=1.0, lr={"min": 0.01, "max": 0.99})
    config = promoting(tmp_path, {**config, "run_cap": 9}, *({"lr": lr} for lr in lrs), eta=3)
    sweep_id = make_sweep(tmp_path, config)
    cmd = [sys.executable, "-m", "hpsearch.cli", "agent", sweep_id, "--dir", str(tmp_path / "store")]
    agents = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(3)]  # fmt: skip
    outs = [a.communicate(timeout=600)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0, 0], outs
    store = open_store(tmp_path / "store")
    trials, histories = store.trials(sweep_id), store.histories(sweep_id)
    promotions = {t.id: sum(out.count(f"trial {t.id} promoted") for out in outs) for t in trials}
    assert sum(promotions.values()) > 0
    for t in trials:
        assert promotions[t.id] == t.resumes and t.crashes == 0  # each promotion claimed once, by one agent
        assert [r["epoch"] for r in histories[t.id]] == list(range(1, t.epochs + 1))
        log = (tmp_path / "store" / sweep_id / t.id / "stdout.log").read_text()
        assert log.count("resumed from") == t.resumes  # each run from the checkpoint where it paused


def test_a_cooldown_replay_judges_each_rung_on_its_recorded_branch_and_charges_the_branch(tmp_path: Path):
    lrs = [0.05 * i for i in range(1, 20)]
    rows = [{"config": {"lr": lr, "sched": "wsd", "cooldown_frac": 0.2, "epochs": 9, "cooldown_at": "1,3"},
             "history": [{"epoch": e, "val_acc": 100 * lr * e / 9, "epoch_time": 1.0} for e in range(1, 10)],
             "rungs": [{"rung": r, "rung_val_acc": 100 - 100 * lr, "rung_epochs": 1, "rung_time": 1.0}
                       for r in (1, 3)]}  # the cooled value ranks the configurations the other way round
            for lr in lrs]  # fmt: skip
    (tmp_path / "curves.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = CurveTable.from_jsonl(tmp_path / "curves.jsonl")
    config = promoting(tmp_path, {"parameters": {"lr": {"values": lrs}, "epochs": {"value": 9},
                                                 "cooldown_frac": {"value": 0.2}}}, mode="cooldown")  # fmt: skip
    with Store(tmp_path / "store") as store:
        r = replay(store, config, source, 1, 150, 0, read_code(config, tmp_path))
        trials, histories = store.trials(r.sweep), store.histories(r.sweep)
    branches = sum(1 for h in histories.values() for record in h if "rung_val_acc" in record)
    assert r.epochs == sum(len(h) for h in histories.values()) + branches  # each branch's epoch charged
    assert r.paused and all(value_at(t, 1) == 100 - 100 * t.params["lr"] for t in trials)
    finished = [t.params["lr"] for t in trials if t.state == "finished"]
    assert finished and max(finished) < 0.5  # promoted by the cooled value: the low learning rates


def test_compressed_rungs_run_a_configuration_whole_at_each_rungs_length_and_promote_it_as_a_new_run(
    tmp_path: Path,
):
    parameters = {"lr": {"min": 0.0, "max": 1.0}, "epochs": {"value": 9}, "warmup_epochs": {"value": 3}}
    config = promoting(tmp_path, {"parameters": parameters, "run_cap": 3}, *({"lr": lr} for lr in (0.9, 0.5, 0.1)),
                       min_epochs=3, mode="compressed")  # fmt: skip
    with Store(tmp_path / "store") as store:
        sweep = store.add_sweep(config, "local", code=read_code(config, tmp_path))
        a, b = controller_for(store, sweep, "agent-a"), controller_for(store, sweep, "agent-b")
        firsts = []
        for _ in range(3):  # each configuration a whole run of the lowest rung's length, its warmup scaled with it
            claim = a.next_trial(0)
            assert claim.how == Start.STARTED and (
                claim.trial.params["epochs"],
                claim.trial.params["warmup_epochs"],
            ) == (3, 1)
            assert run_to(a, claim, [100 * claim.trial.params["lr"]] * 3) == "finish"  # never asked to pause
            firsts.append(claim.trial)
        promoted = a.next_trial(0)  # run_cap counts configurations: the best one's promotion still comes
        assert promoted.how == Start.PROMOTED and promoted.trial.id not in {t.id for t in firsts}
        assert promoted.trial.attrs["promoted_from"] == firsts[0].id
        assert (
            promoted.trial.params["lr"],
            promoted.trial.params["epochs"],
            promoted.trial.params["warmup_epochs"],
        ) == (0.9, 9, 3)
        assert b.next_trial(0) is None  # promoted once: another agent finds nothing to run now
        run_to(a, promoted, [95.0] * 9)
        assert a.next_trial(0) is None and a.done  # the others are not in their rung's top third: the sweep ends
        a.engine._sync(store.trials(sweep.id))  # the mirror as the engine's next decision sees the sweep
        states = [t.state.name for t in a.engine.study.get_trials()]
        assert states == ["PRUNED", "PRUNED", "PRUNED", "COMPLETE"]  # the sampler sees a rung's run at its rung


def test_a_compressed_replay_reads_each_rung_from_the_run_of_that_length(tmp_path: Path):
    lrs = [0.05 * i for i in range(1, 20)]
    rows = [{"config": {"lr": lr, "epochs": n},
             "history": [{"epoch": e, "val_acc": (100 * lr if n == 9 else 100 - 100 * lr) * e / n, "epoch_time": 1.0}
                         for e in range(1, n + 1)]}  # the 3-epoch runs rank the configurations the other way round
            for lr in lrs for n in (3, 9)]  # fmt: skip
    (tmp_path / "curves.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = CurveTable.from_jsonl(tmp_path / "curves.jsonl")
    config = promoting(tmp_path, {"parameters": {"lr": {"values": lrs}, "epochs": {"value": 9}}}, min_epochs=3,
                       mode="compressed")  # fmt: skip
    with Store(tmp_path / "store") as store:
        r = replay(store, config, source, 1, 150, 0, read_code(config, tmp_path))
        trials, histories = store.trials(r.sweep), store.histories(r.sweep)
    assert r.promoted and not r.paused and r.epochs == sum(len(h) for h in histories.values())
    assert {t.params["epochs"] for t in trials} == {3, 9}
    full = [t for t in trials if t.params["epochs"] == 9]
    assert full and all(t.attrs["promoted_from"] for t in full) and max(t.params["lr"] for t in full) < 0.5
    assert all(value_at(t, 3) == 100 - 100 * t.params["lr"] for t in trials if t.params["epochs"] == 3)


def test_rungs_a_sweep_cannot_serve_are_refused_at_create_sweep(tmp_path: Path):
    no_epochs = stub_sweep("custom", lr={"min": 0.01, "max": 0.99})
    del no_epochs["parameters"]["epochs"]
    cases = [
        ((no_epochs, 3, "compressed"), "allowed: an epochs parameter, or mode truncated"),
        ((stub_sweep("custom", epochs=9), 9, "truncated"), "allowed: min_resource below epochs"),
    ]
    for (config, min_epochs, mode), allowed in cases:
        f = tmp_path / "s.yaml"
        f.write_text(yaml.safe_dump(promoting(tmp_path, config, min_epochs=min_epochs, mode=mode)))
        p = hpsearch("create-sweep", str(f), "--dir", str(tmp_path / "store"), cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and allowed in p.stderr, p.stderr
        assert not (tmp_path / "store").exists()  # nothing stored


def test_an_agent_runs_compressed_rungs_of_a_program_and_its_promotions(tmp_path: Path):
    config = stub_sweep("custom", epochs=6, epoch_s=0.05, lr={"min": 0.01, "max": 0.99})
    lrs = [0.9, 0.2, 0.1, 0.8]  # the first ranks first at its rung once the third has run
    sweep_id = make_sweep(tmp_path, promoting(tmp_path, {**config, "run_cap": 4}, *({"lr": lr} for lr in lrs),
                                              min_epochs=2, mode="compressed"))  # fmt: skip
    p = run_agent(tmp_path, sweep_id)
    assert p.returncode == 0, p.stdout + p.stderr
    with open_store(tmp_path / "store") as store:
        trials, histories = store.trials(sweep_id), store.histories(sweep_id)
    promoted = [t for t in trials if t.attrs.get("promoted_from")]
    assert promoted and all(f"trial {t.id} promoted" in p.stdout for t in promoted)
    assert all(t.state == "finished" and len(histories[t.id]) == t.params["epochs"] for t in trials)
    assert sorted(t.params["epochs"] for t in trials if not t.attrs.get("promoted_from")) == [2, 2, 2, 2]
    assert {t.params["epochs"] for t in promoted} == {6}


def test_hyperband_brackets_draw_each_configuration_into_a_bracket_that_starts_at_its_own_rung(tmp_path: Path):
    config = promoting(tmp_path, {"parameters": {"lr": {"min": 0.0, "max": 1.0}, "epochs": {"value": 9}}}, brackets=3)
    with Store(tmp_path / "store") as store:
        sweep = store.add_sweep(config, "local", code=read_code(config, tmp_path))
        c = controller_for(store, sweep, "agent-a")
        rungs = c.engine.rungs
        drawn = [rungs.bracket(9, f"{sweep.id}/{n}") for n in range(600)]
        assert drawn == [rungs.bracket(9, f"{sweep.id}/{n}") for n in range(600)]  # every agent draws the same
        assert [rungs.below(9, b) for b in range(3)] == [[1, 3], [3], []]
        assert drawn.count(0) > drawn.count(1) > drawn.count(2) > 0  # Hyperband's proportions, 9 : 5 : 3
        first_stop, promotions = {}, 0
        for i in range(200):  # each new configuration worse than the last: it pauses at its bracket's first rung
            if len(first_stop) == 3 and promotions:
                break
            claim = c.next_trial(0)
            promotions += claim.how == Start.PROMOTED
            ended = run_to(c, claim, [50.0 - i] * 9)
            if claim.how == Start.STARTED:
                first_stop.setdefault(bracket_of(claim.trial), set()).add((ended, store.trial(claim.trial.id).epochs))
        assert first_stop == {0: {("pause", 1)}, 1: {("pause", 3)}, 2: {("finish", 9)}}
        assert promotions  # the early ones of a bracket, once its own cohort ranks them
