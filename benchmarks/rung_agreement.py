"""How well a rung ranks configurations as their full-length runs do, in each way of reading it (issue 32):
`python -m benchmarks.rung_agreement [--table FILE.jsonl] [--metric val_acc] [--boot 1000]`, on a curve table of
configurations recorded at several schedules (benchmarks/record_schedules.py).

Readings (hpsearch.simulate.curves.MODES): `truncated`, the full-length (E epochs) cosine run at epoch b;
`compressed`, a cosine run of b epochs at its end; `cooldown`, the wsd run's branch cooled at b, for each cooldown
fraction the table holds. At rungs E/8, E/4 and E/2, over the configurations (their first seed) that hold every
reading: the Spearman rank correlation with the full-length cosine value, with a bootstrap interval over the
configurations, and how many of the full-length top 3 are the rung's top 3. The same for the full length at a
second seed, on the configurations recorded twice: the agreement that seed noise alone leaves. Then each wsd run's
own full-length value against cosine's: the mean difference and the seed noise. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.simulate.curves import SCHEDULE, CurveTable, Reading, SourceError

TABLE = Path(__file__).resolve().parents[1] / "sweeps" / "simulate" / "fashion-schedules.jsonl"


def ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks, ties given their mean rank (as Spearman's coefficient takes them)."""
    r = np.empty(len(x))
    r[x.argsort(kind="stable")] = np.arange(len(x))
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def top_kept(full: np.ndarray, rung: np.ndarray, k: int = 3) -> int:
    """How many of the full length's top k are the rung's top k (the earlier configuration first on a tie)."""
    return len(set(np.argsort(-full, kind="stable")[:k]) & set(np.argsort(-rung, kind="stable")[:k]))


def read(
    table: CurveTable, params: dict[str, Any], mode: str, rung: int | None, cooldown: float | None
) -> Reading | None:
    """The configuration's own reading, or None where the table did not record it (the nearest line being another
    configuration's, or none)."""
    try:
        got = table.reading(params, {}, mode, rung, cooldown)
    except SourceError:
        return None
    line = {k: v for k, v in table.rows[int(got.config)][0].items() if k not in SCHEDULE}
    return got if line == params else None


def agreement(table: CurveTable, metric: str = "val_acc", boot: int = 1000, seed: int = 0) -> str:
    """The Markdown tables (see the module's doc)."""
    full_e = table.full_epochs
    fractions = sorted({c["cooldown_frac"] for c, _ in table.rows if c.get("sched") == "wsd"})
    readings = [("truncated", None), ("compressed", None)] + [("cooldown", f) for f in fractions]
    rungs = [full_e // d for d in (8, 4, 2)]
    seeds: dict[str, list[dict[str, Any]]] = {}  # a configuration's params (without seed) -> each seed's
    for config, _ in table.rows:
        params = {k: v for k, v in config.items() if k not in SCHEDULE}
        group = seeds.setdefault(json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True), [])
        if params not in group:
            group.append(params)

    def value(params: dict[str, Any], mode: str, rung: int | None = None, cooldown: float | None = None) -> float:
        got = read(table, params, mode, rung, cooldown)
        return math.nan if got is None or got.record.get(metric) is None else float(got.record[metric])

    wanted = [(mode, rung, f) for mode, f in readings for rung in rungs] + [("cooldown", full_e, f) for f in fractions]
    complete = [ps[0] for ps in seeds.values() if all(not math.isnan(value(ps[0], *w)) for w in wanted)]
    complete = [p for p in complete if not math.isnan(value(p, "truncated"))]
    n = len(complete)
    if n < 4:
        raise ValueError(f"{table.name}: {n} configurations hold every reading; allowed: a table with at least 4")
    full = np.array([value(p, "truncated") for p in complete])
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, n, n) for _ in range(boot)]

    def row(label: str, rung: int, cost: float, ref: np.ndarray, x: np.ndarray, spread: bool = True) -> str:
        rho = spearman(ref, x)
        interval = ""
        if spread:
            lo, hi = np.nanpercentile([spearman(ref[i], x[i]) for i in resamples], [5, 95])
            interval = f" ({lo:.2f}..{hi:.2f})"
        return f"| {label} | {rung} | {cost:g} | {rho:.2f}{interval} | {top_kept(ref, x)} of 3 |"

    out = [
        f"Rank agreement with the full-length cosine value ({metric}, E = {full_e} epochs), {n} configurations "
        f"(their first seed) of {len(seeds)} recorded; Spearman with a 90% bootstrap interval over the "
        f"configurations ({boot} resamples).",
        "",
        "| reading | rung (epochs) | epochs to read it | Spearman (90% interval) | full-length top 3 kept |",
        "|---|---:|---:|---|---:|",
    ]
    for mode, f in readings:
        label = f"cooldown {f:.0%}" if mode == "cooldown" else mode
        for rung in rungs:
            got = [read(table, p, mode, rung, f) for p in complete]
            x = np.array([float(g.record[metric]) for g in got])
            out.append(row(label, rung, float(np.mean([g.epochs for g in got])), full, x))
    twice = [ps[:2] for ps in seeds.values() if len(ps) > 1 and ps[0] in complete]
    pairs = [  # each full-length run's value at both seeds: cosine's, then each wsd run's
        np.array([[value(p, mode, None, f) for p in pair] for pair in twice]).reshape(-1, 2)
        for mode, f in [("truncated", None)] + [("cooldown", f) for f in fractions]
    ]
    cosine = pairs[0][~np.isnan(pairs[0]).any(axis=1)]
    if len(cosine) >= 4:
        label = f"full length, second seed ({len(cosine)} configurations)"
        out.append(row(label, full_e, full_e, cosine[:, 0], cosine[:, 1], spread=False))
    noise = np.concatenate([d[:, 1] - d[:, 0] for d in pairs])
    noise = noise[~np.isnan(noise)]
    sd = f"sd {noise.std(ddof=1) / math.sqrt(2):.2f}" if len(noise) > 1 else "unmeasured"
    out += [
        "",
        f"The wsd runs' own full-length value against cosine's ({metric}, {n} configurations; seed noise of a run's "
        f"{metric}: {sd}, from {len(noise)} seed pairs of full-length runs).",
        "",
        "| wsd run of E epochs | mean wsd - cosine | 95% interval | parity (the interval holds 0) |",
        "|---|---:|---:|---|",
    ]
    for f in fractions:
        d = np.array([value(p, "cooldown", full_e, f) for p in complete]) - full
        mean, half = float(d.mean()), 1.96 * float(d.std(ddof=1)) / math.sqrt(n)
        parity = "yes" if abs(mean) <= half else "no"
        out.append(f"| cooldown {f:.0%} | {mean:+.2f} | {mean - half:+.2f}..{mean + half:+.2f} | {parity} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--metric", default="val_acc")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the configurations")
    ap.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    args = ap.parse_args(argv)
    try:
        print(agreement(CurveTable.from_jsonl(args.table), args.metric, args.boot, args.seed))
    except (SourceError, ValueError) as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
