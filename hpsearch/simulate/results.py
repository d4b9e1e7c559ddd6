"""What `hpsearch simulate` prints: per sweep file, the best value found at 25%, 50% and 100% of the budget (mean
and spread over seeds), the trials run, and the budget it needed to reach what random search reaches with all of
it; the same as JSON; and a page of the incumbent curves, drawn as `hpsearch report` draws its plots."""

from __future__ import annotations

import math
import statistics
import time
import warnings
from typing import Any

import numpy as np
import plotly.graph_objects as go

from hpsearch.objective import Objective
from hpsearch.report import TEMPLATE, esc, figure_html, page, section, with_traces
from hpsearch.simulate.replay import Replay, Result

FRACTIONS = (0.25, 0.5, 1.0)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def best_at(incumbent: list[list[float]], spent: float) -> float | None:
    """The best value a replay had found, by its incumbent history, once `spent` epochs were spent."""
    best = None
    for x, value in incumbent:
        if x > spent:
            break
        best = value
    return best


def reached(run: Replay, target: float, objective: Objective) -> float:
    """The epochs the replay spent until its best value was at least as good as `target` (inf: never)."""
    sign = objective.sign
    return next((x for x, value in run.incumbent if sign * value >= sign * target - 1e-12), math.inf)


def _mean_sd(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    sd = statistics.stdev(got) if len(got) > 1 else 0.0
    return f"{statistics.fmean(got):.2f} ± {sd:.2f}" + (
        f" ({len(got)}/{len(values)})" if len(got) < len(values) else ""
    )


def target_of(reference: Result, budget: int) -> float | None:
    """What random search reaches with the whole budget, mean over seeds."""
    values = [v for v in (best_at(r.incumbent, budget) for r in reference.runs) if v is not None]
    return statistics.fmean(values) if values else None


def to_reach(result: Result, target: float | None, objective: Objective) -> str:
    """The median over seeds of the budget needed to reach `target`, and how many seeds reached it."""
    if target is None:
        return "-"
    spent = [reached(r, target, objective) for r in result.runs]
    hits = sum(math.isfinite(s) for s in spent)
    median = statistics.median(spent)
    return f"{median:,.0f} ({hits}/{len(spent)})" if math.isfinite(median) else f"not reached ({hits}/{len(spent)})"


def table(results: list[Result], reference: Result, budget: int, objective: Objective) -> str:
    """The comparison as a terminal table."""
    target = target_of(reference, budget)
    head = [
        "sweep", *(f"best @{f:.0%}" for f in FRACTIONS), "trials", "distinct",
        "to reach random @100%" + (f" ({target:.4g})" if target is not None else ""),
    ]  # fmt: skip
    rows = [
        [
            r.name,
            *(_mean_sd([best_at(run.incumbent, f * budget) for run in r.runs]) for f in FRACTIONS),
            f"{statistics.fmean(run.trial_count for run in r.runs):.0f}",
            f"{statistics.fmean(run.distinct for run in r.runs):.0f}",
            to_reach(r, target, objective),
        ]
        for r in results
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(head)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows])


def to_json(result: Result, source: str, budget: int, workers: int) -> dict[str, Any]:
    """One sweep file's replays as `simulate --json` prints them."""
    return {
        "sweep": result.name,
        "source": source,
        "budget": budget,
        "workers": workers,
        "runs": [
            {
                "seed": r.seed,
                "trials": r.trial_count,
                "paused": r.paused,
                "promoted": r.promoted,
                "stopped": r.stopped,
                "epochs": r.epochs,
                "distinct": r.distinct,
                "incumbent": r.incumbent,
            }
            for r in result.runs
        ],
    }


def incumbent_figure(results: list[Result], budget: int, metric: str) -> dict[str, Any]:
    """Best value so far against epochs spent: the median over seeds as a line, the quartiles as a band, one
    colour per sweep file."""
    xs = np.unique(np.concatenate([[0, budget], *([x for x, _ in r.incumbent] for res in results for r in res.runs)]))
    traces: list[dict[str, Any]] = []
    for i, res in enumerate(results):
        color = COLORS[i % len(COLORS)]
        ys = np.array([[_or_nan(best_at(run.incumbent, x)) for x in xs] for run in res.runs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: before any trial of a seed ended
            q1, median, q3 = (np.nanpercentile(ys, q, axis=0) for q in (25, 50, 75))
        keep = ~np.isnan(median)
        x = xs[keep].tolist()
        line = {"type": "scatter", "x": x, "mode": "lines", "legendgroup": res.name}
        band = {**line, "line": {"shape": "hv", "width": 0}, "showlegend": False, "hoverinfo": "skip"}
        traces += [
            {**band, "y": q1[keep].tolist()},
            {**band, "y": q3[keep].tolist(), "fill": "tonexty", "fillcolor": _faint(color)},
            {
                **line,
                "y": median[keep].tolist(),
                "name": res.name,
                "line": {"shape": "hv", "color": color, "width": 2.5},
                "hovertemplate": f"{esc(res.name)}<br>%{{x:,}} epochs<br>{esc(metric)} %{{y:.4g}}<extra></extra>",
            },
        ]
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE,
        height=480,
        margin={"t": 20, "b": 50, "l": 60, "r": 20},
        xaxis={"title": {"text": "epochs spent (all trials)"}, "range": [0, budget]},
        yaxis={"title": {"text": f"best {metric} so far (median, quartiles over seeds)"}},
        legend={"title": {"text": "sweep"}},
    )
    return with_traces(fig, traces)


def _or_nan(v: float | None) -> float:
    return math.nan if v is None else v


def _faint(hex_color: str) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, 0.15)"


def render_page(
    results: list[Result], reference: Result, source: str, budget: int, workers: int, objective: Objective
) -> str:
    """The comparison as one self-contained HTML page: the table and the incumbent curves."""
    seeds = len(results[0].runs) if results else 0
    head = (
        f"<header><h1>Search replayed on {esc(source)}</h1><p class=headline>{len(results)} sweep file(s), "
        f"{seeds} seeds each, {workers} worker(s), budget {budget:,} epochs; {objective.goal} "
        f"{esc(objective.name)}</p></header>"
    )
    body = "\n".join(
        [
            head,
            section("Best value found", f"<pre>{esc(table(results, reference, budget, objective))}</pre>"),
            section(
                "Best so far", figure_html(incumbent_figure(results, budget, objective.name), "incumbent", "No trials.")
            ),
            f"<footer>hpsearch simulate, {time.strftime('%Y-%m-%d %H:%M')}</footer>",
        ]
    )
    return page(f"hpsearch simulate: {source}", body)
