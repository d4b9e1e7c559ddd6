"""The benchmarks in benchmarks/, each run once as a user runs it (from the checkout's root, tiny settings, one seed),
so that a change cannot break one silently; and that their data is the checkout's, not the installed package's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import env, hpsearch

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^(\(.+?\)) (.+?)\s+([\d,]+)\s+([\d.]+)%$")  # bench.py's table: label, img/s, vs (a)


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert p.returncode == 0, (p.stdout, p.stderr)
    return p


def test_bench_measures_the_step_and_each_data_path_pinned_or_not():
    p = run("benchmarks/bench.py", "--device", "cpu", "--model", "test_resnet", "--batch-size", "16", "--steps", "2",
            "--warmup", "1", "--epochs", "2", "--train-images", "32", "--val-images", "16", "--workers", "0",
            "--aa", "none", "--no-compile", "--paths", "batched", "pil@1")  # fmt: skip
    rows = [m.groups() for line in p.stdout.splitlines() if (m := ROW.match(line))]
    assert [(what, label.split(",")[0]) for what, label, _, _ in rows] == [
        ("(a)", "training step alone"),
        ("(a-ref)", "baseline.py's step"),
        ("(b)", "trainer"),
        ("(b')", "the same"),
        ("(b)", "trainer"),
        ("(b')", "the same"),
    ], p.stdout
    assert "batched path, 0 workers, train phase" in rows[2][1]
    assert "pil path" in rows[4][1] and "pinned to 1 cores" in rows[4][1]  # the pinned child ran and reported
    assert all(int(ips.replace(",", "")) > 0 for _, _, ips, _ in rows)
    assert rows[0][3] == "100.0"


def test_bench_controller_times_every_engine_and_report():
    p = run("-m", "benchmarks.bench_controller", "--trials", "8", "--epochs", "50", "--repeat", "1", "--report")
    times = {}
    for line in p.stdout.splitlines()[2:]:
        n, what, cold, warm = re.fullmatch(r"\s*(\d+)  (.+?)\s+(\d+)\s+([\d.]+|nan)", line).groups()
        assert n == "8"
        times[what] = float(cold), float(warm)
    engines = ["random", "grid", "bayes", "optuna", "optuna tpe", "optuna hyperband", "optuna asha", "optuna promote"]
    stopping = ["random", "grid", "bayes", "optuna hyperband", "optuna asha", "optuna promote"]  # those that decide
    assert set(times) == {f"next_trial ({e})" for e in engines} | {f"decide ({e})" for e in stopping} | {
        "report (html)"
    }, p.stdout
    assert all(warm >= 0 for what, (_, warm) in times.items() if what != "report (html)")


def test_bench_search_replays_lcbench_and_prints_the_tables(tmp_path: Path):
    out = tmp_path / "replays.jsonl"
    args = ["--tasks", "189906", "--methods", "random", "optuna tpe", "--workers", "1", "--out", str(out)]
    p = run("-m", "benchmarks.bench_search", *args, "--seeds", "1", "--slow-seeds", "1", "--jobs", "1")
    assert "2 replays to run, 0 already in" in p.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["task"], r["method"], r["seed"], r["budget"]) for r in lines) == [
        ("189906", "optuna tpe", 0, 6544),
        ("189906", "random", 0, 6544),
    ]
    for r in lines:  # the incumbent: epochs spent, best val_accuracy so far; better as the budget is spent
        assert 0 < r["incumbent"][0][0] <= r["incumbent"][-1][0] <= 6544
        assert 0 < r["incumbent"][0][1] <= r["incumbent"][-1][1] <= 100
    again = run("-m", "benchmarks.bench_search", *args, "--seeds", "1", "--slow-seeds", "1")
    assert "0 replays to run, 2 already in" in again.stdout  # taken up again, nothing run twice
    table = run("-m", "benchmarks.bench_search", *args, "--table").stdout
    random = next(r for r in lines if r["method"] == "random")
    assert re.search(r"^\| random \| [\d.]+ / [\d.]+ / " + f"{random['incumbent'][-1][1]:.2f}" + r" \(1\) \| \d+ \|$",
                     table, re.M), table  # fmt: skip
    assert re.search(r"^\| optuna tpe \| [\d.]+ / [\d.]+ / [\d.]+ \(1\) \| \d+ \|$", table, re.M), table
    assert re.search(r"^\| 189906 \| " + f"{random['incumbent'][-1][1]:.2f}" + r" \| 0\.\d{3} \|$", table, re.M)


def test_bench_search_runs_as_a_script_on_a_curve_table(tmp_path: Path):
    out = tmp_path / "replays.jsonl"
    curves, space = REPO / "sweeps" / "simulate" / "digits-grid.jsonl", REPO / "sweeps" / "simulate" / "digits.yaml"
    args = ["--tasks", str(curves), "--space", str(space), "--methods", "grid", "--workers", "1", "--out", str(out)]
    run("benchmarks/bench_search.py", *args, "--seeds", "1", "--jobs", "1")
    (line,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (line["task"], line["method"], line["trials"]) == (str(curves), "grid", 40)  # every point of the grid once
    table = run("benchmarks/bench_search.py", *args, "--table").stdout
    assert re.search(r"^\| grid \| [\d.]+ / [\d.]+ / [\d.]+ \(1\) \| 40 \|$", table, re.M), table
    assert "regret" not in table  # a curve table of our own has no YAHPO statistics


def test_bench_search_table_ranks_a_seed_that_found_nothing_yet_last_for_either_goal(tmp_path: Path):
    """At 25% of a budget of 100, seed 1 had no finished trial: it counts as the worst value, not as 0.0."""
    out = tmp_path / "replays.jsonl"
    seeds = [[[10, 0.5], [60, 0.25]], [[40, 0.75]]]
    out.write_text("".join(json.dumps({"task": "mine.jsonl", "method": "random", "workers": 1, "seed": seed,
                                       "budget": 100, "trials": 3, "incumbent": incumbent}) + "\n"
                           for seed, incumbent in enumerate(seeds)))  # fmt: skip
    for goal, at_25 in (("minimize", "inf"), ("maximize", "-inf")):
        space = tmp_path / f"{goal}.yaml"
        space.write_text(yaml.safe_dump({"method": "random", "metric": {"name": "loss", "goal": goal}}))
        args = ["--table", "--tasks", "mine.jsonl", "--space", str(space), "--methods", "random", "--workers", "1"]
        table = run("-m", "benchmarks.bench_search", *args, "--out", str(out)).stdout
        assert f"| random | {at_25} / 0.62 / 0.50 (2) | 3 |" in table, table


def test_simulate_outside_a_checkout_asks_for_yahpo_s_data(tmp_path: Path):
    """An installed hpsearch (here the package copied outside the checkout) has no benchmarks/yahpo_data beside it:
    lcbench:TASK without --data fails with one line naming what to pass, and runs with --data."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "hpsearch", site / "hpsearch", ignore=shutil.ignore_patterns("__pycache__"))
    e = env(PYTHONPATH=str(site))
    e.pop("HPSEARCH_YAHPO_DATA", None)
    lcbench = REPO / "sweeps" / "simulate" / "lcbench.yaml"
    args = ["simulate", str(lcbench), "--curves", "lcbench:189906", "--seeds", "1", "--budget", "200"]
    p = hpsearch(*args, cwd=tmp_path, env=e)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.strip() == (
        "hpsearch simulate: error: --curves lcbench:189906: needs YAHPO Gym's data folder; allowed: --data DIR or "
        "HPSEARCH_YAHPO_DATA=DIR, a folder holding lcbench/ (github.com/slds-lmu/yahpo_data)"
    )
    p = hpsearch(*args, "--data", str(REPO / "benchmarks" / "yahpo_data"), "--json", cwd=tmp_path, env=e)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["budget"] == 200


def test_rung_agreement_ranks_each_reading_against_the_full_length(tmp_path: Path):
    """Six configurations at E = 8, made so that truncated readings reverse the full-length order, compressed and
    cooled ones keep it, a second seed keeps it, and each wsd run ends 1 point above cosine."""

    def history(i: int, epochs: int, end: float) -> list[dict]:  # the epochs before the last: in reverse order
        return [{"epoch": e, "val_acc": 80 - 5 * i - e} for e in range(1, epochs)] + [{"epoch": epochs, "val_acc": end}]

    lines = []
    for seed, configs in ((0, range(6)), (1, range(4))):
        for i in configs:
            top, params = 50 + 5 * i + seed, {"lr": 0.01 * (i + 1), "seed": seed}
            for epochs in (1, 2, 4, 8):
                config = {**params, "sched": "cosine", "epochs": epochs}
                lines.append({"config": config, "history": history(i, epochs, top - 8 + epochs)})
            for frac in (0.1, 0.2):
                rungs = [{"rung": b, "rung_epochs": 1, "rung_val_acc": top - 10 + b} for b in (1, 2, 4)]
                config = {**params, "sched": "wsd", "epochs": 8, "cooldown_frac": frac, "cooldown_at": "1,2,4"}
                lines.append({"config": config, "history": history(i, 8, top + 1), "rungs": rungs})
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = run("-m", "benchmarks.rung_agreement", "--table", str(table), "--boot", "20").stdout
    assert "E = 8 epochs), 6 configurations (their first seed) of 6 recorded" in out, out
    rows = re.findall(r"^\| (.+?) \| (\d+) \| ([\d.]+) \| (-?[\d.]+)(?: \(.+?\))? \| (\d) of 3 \|$", out, re.M)
    assert [(what, int(rung), float(cost)) for what, rung, cost, _, _ in rows] == [
        *[("truncated", b, b) for b in (1, 2, 4)],
        *[("compressed", b, b) for b in (1, 2, 4)],
        *[(f"cooldown {f}%", b, b + 1) for f in (10, 20) for b in (1, 2, 4)],  # the branch's epoch included
        ("full length, second seed (4 configurations)", 8, 8),
    ], out
    assert [(float(rho), int(kept)) for *_, rho, kept in rows] == [(-1.0, 0)] * 3 + [(1.0, 3)] * 10, out
    assert "| cooldown 10% | +1.00 | +1.00..+1.00 | no |" in out, out
    assert "seed noise of a run's val_acc: sd 0.00, from 12 seed pairs" in out  # (each second seed: +1 throughout)
    p = subprocess.run([sys.executable, "-m", "benchmarks.rung_agreement", "--table", str(tmp_path / "none.jsonl")],
                       cwd=REPO, env=env(), capture_output=True, text=True, check=False)  # fmt: skip
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "cannot read" in p.stderr


def test_bench_warmstart_replays_cold_warm_and_first_from_an_earlier_sweep_and_prints_the_table(tmp_path: Path):
    out, curves = tmp_path / "warm.jsonl", REPO / "sweeps" / "simulate" / "digits-grid.jsonl"
    args = ["--tasks", "189908", str(curves), "--seeds", "2", "--budget-fraction", "0.05", "--out", str(out)]
    p = run("-m", "benchmarks.bench_warmstart", *args, "--jobs", "1")
    assert "4 cold replays to run" in p.stdout and "8 warm/first replays to run" in p.stdout
    lines = {(Path(r["task"]).stem, r["arm"], r["seed"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(lines) == sorted((t, a, s) for t in ("189908", "digits-grid") for a in ("cold", "warm", "first")
                                   for s in (0, 1))  # fmt: skip
    for task in ("189908", "digits-grid"):
        for seed in (0, 1):
            earlier = lines[task, "cold", 1 - seed]  # the earlier sweep of seed s: the cold replay of seed s+1
            assert lines[task, "warm", seed]["priors"] == len(earlier["finished"]) > 0
    # LCBench's first trial is the earlier sweep's best: its value is the first the replay finds (the surrogate is
    # deterministic); on the digits table, gp_digits's configuration, 96.4% after its 15 epochs
    assert lines["189908", "first", 0]["incumbent"][0][1] == lines["189908", "cold", 1]["incumbent"][-1][1]
    assert lines["digits-grid", "first", 0]["incumbent"][0][0] == 15
    assert lines["digits-grid", "first", 0]["incumbent"][0][1] > 96
    table = run("-m", "benchmarks.bench_warmstart", *args, "--table").stdout
    for row in ("lcbench 189908 | cold", "lcbench 189908 | warm (", "digits-grid | first"):
        assert re.search(r"^\| " + re.escape(row) + r".* \| [\d.]+ ± [\d.]+ \| .* \| 2 \|$", table, re.M), table


def test_bench_resume_times_a_pause_and_its_promotion_on_the_trainer_in_parts_that_add_up():
    p = run(
        "-m", "benchmarks.bench_resume", "--repeats", "1", "--epochs", "3", "--rung", "1", "--set", "train_subset=400"
    )
    lines = p.stdout.splitlines()
    assert lines[0].startswith("digits on test_resnet (train_subset=400), 3 epochs, paused at 1, then promoted"), (
        p.stdout
    )
    columns = re.split(r"\s{2,}", lines[1].strip())
    assert columns == ["repeat", "epoch", "overhead", "end", "claim", "start", "first", "new start", "new first",
                       "train", "train first", "imports"]  # fmt: skip
    rows = {
        m[1]: [float(v) for v in m[2].split()]
        for line in lines[2:]
        if (m := re.fullmatch(r"\s*(\S+)((?:\s+-?[\d.]+){11})", line))
    }
    (attempt,) = set(rows) - {"median", "min", "max"}  # one repeat (once more if its promotion came too late)
    assert attempt in ("1", "2") and rows["median"] == rows["min"] == rows["max"] == rows[attempt], p.stdout
    t = dict(zip(columns[1:], rows[attempt], strict=True))
    # the overhead is the promotion's record-to-record time less an ordinary epoch, and its parts add up to it
    assert abs(t["end"] + t["claim"] + t["start"] + t["first"] - t["epoch"] - t["overhead"]) < 0.05
    # (no bound on the record-to-record times: epochs this short may be read two to an agent's round)
    assert all(t[c] > 0 for c in ("start", "new start", "train", "train first", "imports")), t
    assert re.fullmatch(
        r"repeats: 1; cores: \d+; load average \(1 min\): [\d.]+ at the start, [\d.]+ at the end", lines[-1]
    )
    bad = subprocess.run([sys.executable, "-m", "benchmarks.bench_resume", "--epochs", "3", "--rung", "2"], cwd=REPO,
                         env=env(), capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and "--rung 2 with --epochs 3: allowed: 1 <= rung <= epochs - 2" in bad.stderr
