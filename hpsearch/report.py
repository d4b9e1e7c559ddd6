"""`hpsearch report`: a sweep as one self-contained HTML page, or as Markdown.

The data is `hpsearch status --json`'s object (trials best first) plus each trial's per-epoch history.
The plots are plotly figures drawn as SVG: no WebGL, so any browser shows them, GPU or not; and the page
carries plotly.js inline, so it opens from a file with no network.
"""

from __future__ import annotations

import dataclasses
import html
import math
import shlex
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import plotly
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative, sample_colorscale
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from hpsearch.formats import fmt_duration, fmt_value
from hpsearch.objective import Objective, finite
from hpsearch.params import DEFAULTS, format_value
from hpsearch.sweep.status import best_epoch, objectives, planned_epochs, status_of
from hpsearch.sweep.store import Store, Sweep

DEFAULT_METRIC = {"name": "best_acc", "goal": "maximize"}  # grid and random sweeps may set no metric
TRIAL_COLORS = qualitative.Dark24
HISTORY_PANELS = (("train_loss", "train_loss"), ("val_loss", "val_loss"), ("val_acc", "val_acc (%)"))
# plotly.js's "Share chart" button would upload the sweep to Plotly Cloud; the select tools have no use here.
PLOT_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["sendChartToCloud", "select2d", "lasso2d"],
}
MIN_SCORED = 3  # trials with a metric value before parameter importance means anything
# The seed report's ResNet-50 (../shared/seed): CIFAR-100 test top-1 after 250 epochs, by six hand-run experiments.
# Compared with test_acc, which no sweep tunes on (val_acc comes from images held out of the training set).
REFERENCE_TEST_ACC = 82.13
TEMPLATE = "plotly_white"


def report(store: Store, sweep: Sweep, fmt: str = "html") -> str:
    """The sweep's report: an HTML page (fmt "html") or Markdown (fmt "md")."""
    data = gather(store, sweep)
    return render_html(data) if fmt == "html" else render_markdown(data)


def gather(store: Store, sweep: Sweep) -> dict[str, Any]:
    """`status`'s object with, for each trial, its history, metric value (None if it has none), best epoch,
    planned epochs, wall time and plot colour; plus the best trial and the parameter importance."""
    metric_set = bool(objectives(sweep))
    if not metric_set:
        sweep = dataclasses.replace(sweep, config={**sweep.config, "metric": DEFAULT_METRIC})
    now = store.clock()  # trials' times are the database's
    stored = store.trials(sweep.id)  # creation order, so a trial keeps its colour as the sweep grows
    data = status_of(sweep, stored, now)
    data["sweep"]["metric_set"] = metric_set
    metric = data["sweep"]["metric"]["name"]  # (a multi-objective search's first)
    color = {t.id: TRIAL_COLORS[i % len(TRIAL_COLORS)] for i, t in enumerate(stored)}
    running_for = {t.id: now - t.started for t in stored if t.state == "running" and t.started}
    histories = store.histories(sweep.id)  # one query for the whole sweep
    for t in data["trials"]:
        history = histories.get(t["id"], [])
        value = t["summary"].get(metric)
        t.update(
            history=history,
            value=value if finite(value) else None,
            best_epoch=best_epoch(history, Objective.of(data["sweep"]["metric"])),
            # (a program that takes no epochs: the epochs it ran)
            planned_epochs=planned_epochs(sweep.config, t["params"]) or t["epochs"],
            wall_s=t["runtime"] + running_for.get(t["id"], 0.0),
            color=color[t["id"]],
        )
    scored = [t for t in data["trials"] if t["value"] is not None]
    data["best"] = scored[0] if scored else None  # status sorts the trials with a value first, best first
    data["importance"] = importance(scored, data["sweep"]["varying"])
    data["reference"] = REFERENCE_TEST_ACC if _on_cifar100(sweep.config) else None
    return data


def _on_cifar100(config: dict[str, Any]) -> bool:
    """Whether the sweep runs hpsearch's trainer on CIFAR-100 (its default dataset) in every trial."""
    dataset = config.get("parameters", {}).get("dataset", {"value": DEFAULTS["dataset"]})
    return "program" not in config and dataset.get("value") == "cifar100"


def importance(trials: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """W&B's parameter-importance panel: for each parameter (each value of a categorical one), a random
    forest's importance for predicting the trials' metric `value` and the Pearson correlation with it
    (None where the parameter does not vary), most important first. Empty below MIN_SCORED trials or when
    every trial has the same value."""
    y = np.array([t["value"] for t in trials], dtype=float)
    if len(y) < MIN_SCORED or np.ptp(y) == 0:
        return []
    names, columns = [], []
    for key in keys:
        values = [t["params"].get(key) for t in trials]
        if all(_is_number(v) for v in values):
            names.append(key)
            columns.append(values)
        else:  # one indicator per value, as W&B encodes categorical parameters
            labels = [format_value(v) for v in values]
            for label in dict.fromkeys(labels):
                names.append(f"{key}={label}")
                columns.append([x == label for x in labels])
    if not names:
        return []
    x = np.array(columns, dtype=float).T
    from sklearn.ensemble import RandomForestRegressor  # a slow import, needed only here

    forest = RandomForestRegressor(n_estimators=100, random_state=0).fit(x, y)
    rows = [
        {
            "param": name,
            "importance": float(weight),
            "correlation": float(np.corrcoef(column, y)[0, 1]) if np.ptp(column) else None,
        }
        for name, column, weight in zip(names, x.T, forest.feature_importances_, strict=True)
    ]
    return sorted(rows, key=lambda r: -r["importance"])


def train_command(params: dict[str, Any]) -> str:
    """The shell command that runs one trial with these parameters."""
    return " ".join(["hpsearch train", *(shlex.quote(f"--{k}={format_value(v)}") for k, v in params.items())])


def table_rows(data: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The reference report's table, one (label, cells) per row and one cell per trial, best first: the
    parameters that vary across the sweep, then the metric and how each trial ran."""
    metric = data["sweep"]["metric"]["name"]

    def row(label: str, cell: Callable[[dict[str, Any]], Any]) -> tuple[str, list[str]]:
        return label, [fmt_value(cell(t)) for t in data["trials"]]

    rows = [row(key, lambda t, key=key: t["params"].get(key)) for key in data["sweep"]["varying"]]
    rows.append(row(metric, lambda t: t["value"]))
    if metric != "best_acc":
        rows.append(row("best_acc", lambda t: t["summary"].get("best_acc")))
    if any("test_acc" in t["summary"] for t in data["trials"]):  # measured once, as each trial ends
        rows.append(row("test_acc", lambda t: t["summary"].get("test_acc")))
    rung = f"rung_{metric}"  # a cooldown branch's value at a rung epoch (the rungs a promotion judged)
    if any(rung in r for t in data["trials"] for r in t["history"]):
        rows.append(("rungs (cooled)", [", ".join(f"{r['epoch']}: {fmt_value(r[rung])}" for r in t["history"]
                                                  if rung in r) for t in data["trials"]]))  # fmt: skip
    rows += [
        row("best epoch", lambda t: t["best_epoch"]),
        row("epochs run", lambda t: f"{t['epochs']} of {t['planned_epochs']}"),
        row("wall time", lambda t: fmt_duration(t["wall_s"])),
        row("state", lambda t: t["state"] + " (prior)" * bool(t["prior"])),  # (a result told, never run here)
    ]
    return rows


# ---- Markdown ----


def render_markdown(data: dict[str, Any]) -> str:
    """The summary and the table, for a terminal or a pull request."""
    s, best = data["sweep"], data["best"]
    metric = s["metric"]["name"]
    title = f"## Sweep `{s['id']}`" + (f" ({s['name']})" if s["name"] else "")
    lines = [title, "", _headline(data), ""]
    if best:
        lines += [f"Best: trial `{best['id']}`, {_best_result(data)}. To run it again:", ""]
        lines += ["```sh", train_command(best["params"]), "```", ""]
    else:
        lines += [f"No trial has a {metric} value yet.", ""]
    if data["trials"]:
        header = ["", *(f"{t['id']} (best)" if t is best else t["id"] for t in data["trials"])]
        lines += [_md_row(header), "|" + "---|" * len(header)]
        for label, cells in table_rows(data):
            if label == metric:
                label, cells = f"**{label}**", [f"**{c}**" for c in cells]
            lines.append(_md_row([label, *cells]))
    for t in _with_errors(data):
        lines += ["", f"`{t['id']}` {t['state']}:", "```", t["error"], "```"]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


# ---- HTML ----


def render_html(data: dict[str, Any]) -> str:
    """One page that needs no network: summary, table, loss history, parameters against the metric."""
    s = data["sweep"]
    body = "\n".join(
        [
            _summary_html(data),
            section("Trials", _table_html(data)),
            section("Loss history", figure_html(history_figure(data), "loss-history", "No epoch recorded yet.")),
            section("Parameters and " + s["metric"]["name"], _parameters_html(data)),
            section("Pareto front", figure_html(pareto_figure(data), "pareto", "No finished trial yet."))
            if "metrics" in s
            else "",
            _errors_html(data),
            f"<footer>hpsearch report, {time.strftime('%Y-%m-%d %H:%M')}; plots by plotly.js "
            f"{plotly.__version__} (plotly.py), inline.</footer>",
        ]
    )
    return page(f"sweep {s['id']}{' ' + s['name'] if s['name'] else ''}: hpsearch report", body)


def page(title: str, body: str) -> str:
    """A self-contained HTML page in the report's style, with plotly.js inline (no network needed)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'  # else the browser asks the file system for /favicon.ico
        f"<title>{esc(title)}</title>\n"
        f"<style>{CSS}</style>\n<script>{get_plotlyjs()}</script>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
        "</body>\n</html>\n"
    )


def history_figure(data: dict[str, Any]) -> dict[str, Any] | None:
    """train_loss, val_loss and val_acc per epoch, every trial overlaid in its colour (best thickest, on top);
    a trial that ended before its planned epochs ends in a cross. None before any epoch is recorded."""
    trials = [t for t in data["trials"] if t["history"]]
    if not trials:
        return None
    fig = make_subplots(rows=1, cols=len(HISTORY_PANELS), subplot_titles=[p[1] for p in HISTORY_PANELS])
    traces = []
    for t in reversed(trials):  # the best last, so it is drawn over the others
        best = t is data["best"]
        epochs = [r["epoch"] for r in t["history"]]
        early = t["state"] != "running" and t["epochs"] < t["planned_epochs"]
        end = ("x", 13) if early else ("circle", 6)
        marker = {
            "symbol": ["circle"] * (len(epochs) - 1) + [end[0]],
            "size": [6] * (len(epochs) - 1) + [end[1]],
        }
        label = f"{t['id']} ({t['state']}{', best' if best else ''})"
        for col, (key, _) in enumerate(HISTORY_PANELS, 1):
            axis = "" if col == 1 else str(col)
            traces.append(
                {
                    "type": "scatter",
                    "xaxis": f"x{axis}",
                    "yaxis": f"y{axis}",
                    "x": epochs,
                    "y": [r.get(key) for r in t["history"]],
                    "name": label,
                    "legendgroup": t["id"],
                    "showlegend": col == 1,
                    "mode": "lines+markers",
                    "line": {"color": t["color"], "width": 4 if best else 2},
                    "marker": marker,
                    "hovertemplate": f"{esc(t['id'])}<br>epoch %{{x}}<br>{key} %{{y:.4g}}<extra></extra>",
                }
            )
    for col in (1, 2):  # losses: a diverging trial's spike would flatten everyone else's curve on a linear axis
        fig.update_yaxes(type="log", row=1, col=col)
    last = max(t["planned_epochs"] for t in trials)
    # The axes run to the planned last epoch, so a trial that ended early visibly stops short.
    fig.update_xaxes(title_text="epoch", range=[0.5, last + 0.5], tick0=1, dtick=math.ceil(last / 10))
    fig.update_layout(
        template=TEMPLATE,
        height=440,
        margin={"t": 40, "b": 40, "l": 50, "r": 20},
        legend={"traceorder": "reversed", "title": {"text": "trial (state)"}},
    )
    return with_traces(fig, traces)


def pareto_figure(data: dict[str, Any]) -> dict[str, Any] | None:
    """A multi-objective search's first two metrics, one point per finished trial with both; the Pareto front (on
    every metric, not only these two) drawn bold and joined. None if no trial has both."""
    x, y = (m["name"] for m in data["sweep"]["metrics"][:2])
    points = [
        t for t in data["trials"] if t["state"] == "finished" and all(finite(t["summary"].get(k)) for k in (x, y))
    ]
    if not points:
        return None
    front = sorted((t for t in points if t["pareto"]), key=lambda t: t["summary"][x])
    others = [t for t in points if not t["pareto"]]

    def trace(trials: list[dict[str, Any]], name: str, mode: str, marker: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "scatter", "mode": mode, "name": name, "marker": marker, "line": {"color": "#d62728", "width": 2},
            "x": [t["summary"][x] for t in trials], "y": [t["summary"][y] for t in trials],
            "text": [t["id"] for t in trials],
            "hovertemplate": f"%{{text}}<br>{esc(x)} %{{x:.4g}}<br>{esc(y)} %{{y:.4g}}<extra></extra>",
        }  # fmt: skip

    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, height=440, margin={"t": 20, "b": 50, "l": 60, "r": 20},
                      xaxis={"title": {"text": x}}, yaxis={"title": {"text": y}})  # fmt: skip
    return with_traces(fig, [
        trace(others, "dominated", "markers", {"color": "#999", "size": 8}),
        trace(front, "Pareto front", "lines+markers", {"color": "#d62728", "size": 11}),
    ])  # fmt: skip


def with_traces(fig: go.Figure, traces: list[dict[str, Any]]) -> dict[str, Any]:
    """The figure (its layout, built with plotly's checks) as JSON with `traces` added as they are: plotly would
    check each of thousands of traces field by field, most of a big sweep's report time."""
    out = fig.to_plotly_json()
    out["data"] = [*out["data"], *traces]
    return out


def parallel_figure(data: dict[str, Any]) -> dict[str, Any] | None:
    """Parallel coordinates: one axis per varying parameter, then the metric; one line per trial with a
    metric value, coloured by it. Drawn with SVG lines, not plotly's WebGL parcoords. None if no trial has
    a value."""
    trials = [t for t in data["trials"] if t["value"] is not None]
    if not trials:
        return None
    metric = data["sweep"]["metric"]
    names = [*data["sweep"]["varying"], metric["name"]]
    columns = [[t["params"].get(k) for t in trials] for k in data["sweep"]["varying"]]
    columns.append([t["value"] for t in trials])
    fig = go.Figure()
    heights = []
    for i, (name, values) in enumerate(zip(names, columns, strict=True)):
        ys, ticks = _axis(values)
        heights.append(ys)
        fig.add_shape(type="line", x0=i, x1=i, y0=0, y1=1, line={"color": "#888", "width": 1})
        fig.add_annotation(x=i, y=1.06, text=f"<b>{esc(name)}</b>", showarrow=False, yanchor="bottom")
        for y, text in ticks:
            fig.add_annotation(
                x=i, y=y, text=esc(text), showarrow=False, xanchor="right", xshift=-4, bgcolor="rgba(255,255,255,0.8)"
            )
    lo, hi = min(columns[-1]), max(columns[-1])
    scale = "Viridis" if Objective.of(metric).sign > 0 else "Viridis_r"  # the better, the brighter
    shares = [(t["value"] - lo) / (hi - lo) if hi > lo else 1.0 for t in trials]
    colors = sample_colorscale(scale, shares) if trials else []
    traces = []
    for j, t in enumerate(trials):
        best = t is data["best"]
        values = "<br>".join(f"{esc(n)} {esc(fmt_value(c[j]))}" for n, c in zip(names, columns, strict=True))
        traces.append(
            {
                "type": "scatter",
                "x": list(range(len(names))),
                "y": [ys[j] for ys in heights],
                "mode": "lines+markers",
                "line": {"color": colors[j], "width": 5 if best else 2.5},
                "name": t["id"],
                "hovertemplate": f"<b>{esc(t['id'])}</b><br>{values}<extra></extra>",
                "showlegend": False,
            }
        )
    fig.add_trace(  # no points: it only carries the colour bar
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            marker={"colorscale": scale, "cmin": lo, "cmax": hi, "color": [lo], "showscale": True},
            marker_colorbar={"title": {"text": metric["name"]}},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    fig.update_xaxes(visible=False, range=[-0.4, len(names) - 0.8])
    fig.update_yaxes(visible=False, range=[-0.06, 1.14])
    fig.update_layout(template=TEMPLATE, height=420, margin={"t": 20, "b": 20, "l": 60, "r": 20})
    return with_traces(fig, traces)


def _axis(values: list[Any]) -> tuple[list[float], list[tuple[float, str]]]:
    """Heights in [0, 1] for one parallel-coordinates axis, and its (height, label) ticks. Numbers get a
    linear axis, or a log one when positive and spanning two decades or more; anything else one tick per value."""
    if all(_is_number(v) for v in values):
        log = min(values) > 0 and max(values) / min(values) >= 100
        pos = [math.log10(v) for v in values] if log else [float(v) for v in values]
        lo, hi = min(pos), max(pos)

        def height(p: float) -> float:
            return (p - lo) / (hi - lo) if hi > lo else 0.5

        distinct = sorted(set(pos))
        marks = distinct if len(distinct) <= 6 else list(np.linspace(lo, hi, 5))
        return [height(p) for p in pos], [(height(p), fmt_value(10**p if log else p)) for p in marks]
    labels = [format_value(v) for v in values]
    order = sorted(set(labels))
    spread = max(len(order) - 1, 1)
    heights = {label: i / spread if len(order) > 1 else 0.5 for i, label in enumerate(order)}
    return [heights[label] for label in labels], [(heights[label], label) for label in order]


def _summary_html(data: dict[str, Any]) -> str:
    s, best = data["sweep"], data["best"]
    name = f" {esc(s['name'])}" if s["name"] else ""
    lines = [f"<h1>Sweep{name} <code>{esc(s['id'])}</code></h1>", f'<p class="headline">{esc(_headline(data))}</p>']
    if best:
        lines += [
            f"<p>Best: trial <b>{esc(best['id'])}</b>, {esc(_best_result(data))}. To run it again:</p>",
            f'<pre class="command">{esc(train_command(best["params"]))}</pre>',
        ]
    else:
        lines.append(f"<p>No trial has a {esc(s['metric']['name'])} value yet.</p>")
    return "<header>\n" + "\n".join(lines) + "\n</header>"


def _table_html(data: dict[str, Any]) -> str:
    if not data["trials"]:
        return "<p>No trials yet.</p>"
    metric = data["sweep"]["metric"]["name"]
    best = data["best"]
    head = ['<th class="corner"></th>']
    for t in data["trials"]:
        mark = '<div class="star">&#9733; best</div>' if t is best else ""
        cls = ' class="best"' if t is best else ""
        head.append(f'<th{cls} style="border-top-color: {t["color"]}">{mark}{esc(t["id"])}</th>')
    body = []
    for label, cells in table_rows(data):
        tds = []
        for t, cell in zip(data["trials"], cells, strict=True):
            classes = ["best"] if t is best else []
            title = ""
            if label == "state":
                classes.append(f"state-{t['state']}")
                title = f' title="{esc(t["error"])}"' if t["error"] else ""
            cls = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{cls}{title}>{esc(cell)}</td>")
        row_cls = ' class="metric"' if label == metric else ""
        body.append(f"<tr{row_cls}><th>{esc(label)}</th>{''.join(tds)}</tr>")
    return (
        f'<div class="scroll"><table class="trials">\n<thead><tr>{"".join(head)}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody></table></div>"
    )


def _parameters_html(data: dict[str, Any]) -> str:
    metric = data["sweep"]["metric"]["name"]
    unscored = sum(t["value"] is None for t in data["trials"])
    note = f"<p class=note>{unscored} trial(s) without a {esc(metric)} value left out.</p>" if unscored else ""
    figure = figure_html(parallel_figure(data), "parallel", f"No trial has a {metric} value yet.")
    return f"{note}{figure}\n<h3>Parameter importance for {esc(metric)}</h3>\n{_importance_html(data)}"


def _importance_html(data: dict[str, Any]) -> str:
    rows = data["importance"]
    if not rows:
        return (
            f"<p class=note>Shown once at least {MIN_SCORED} trials have a "
            f"{esc(data['sweep']['metric']['name'])} value, and the values differ.</p>"
        )
    out = []
    for r in rows:
        corr = r["correlation"]
        if corr is None:
            corr_cell = "<td>-</td>"
        else:
            side = "pos" if corr >= 0 else "neg"
            bar = f'<span class="bar {side}" style="width: {abs(corr) * 50:.1f}%"></span>'
            corr_cell = f'<td class="corr">{bar}<span class="num">{corr:+.2f}</span></td>'
        imp = f'<span class="bar imp" style="width: {r["importance"] * 100:.1f}%"></span>'
        out.append(
            f"<tr><th>{esc(r['param'])}</th><td>{imp}<span class=num>{r['importance']:.2f}</span></td>{corr_cell}</tr>"
        )
    return (
        '<table class="importance"><thead><tr><th>parameter</th>'
        '<th title="a random forest\'s feature importance for predicting the metric">importance</th>'
        '<th title="Pearson correlation with the metric">correlation</th></tr></thead>\n<tbody>'
        + "\n".join(out)
        + "</tbody></table>"
        + f"<p class=note>Over {sum(t['value'] is not None for t in data['trials'])} trials, as W&amp;B's parameter "
        "importance panel: a random forest predicting the metric from the parameters (categorical ones one "
        "column per value), and each parameter's linear correlation with the metric.</p>"
    )


def _errors_html(data: dict[str, Any]) -> str:
    items = [
        f"<dt>{esc(t['id'])} ({esc(t['state'])})</dt><dd><pre>{esc(t['error'])}</pre></dd>" for t in _with_errors(data)
    ]
    return section("Errors", "<dl>" + "\n".join(items) + "</dl>") if items else ""


def figure_html(fig: dict[str, Any] | None, div_id: str, empty: str) -> str:
    """A figure as a <div> drawn by the page's plotly.js (SVG traces), or `empty` as a note."""
    if fig is None:
        return f"<p class=note>{esc(empty)}</p>"
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG, validate=False)


def section(title: str, content: str) -> str:
    return f"<section>\n<h2>{esc(title)}</h2>\n{content}\n</section>"


# ---- shared wording ----


def _headline(data: dict[str, Any]) -> str:
    s = data["sweep"]
    counts = ", ".join(f"{n} {state}" for state, n in s["counts"].items())
    counts += f"; {s['priors']} prior results, not run" * bool(s["priors"])
    n = len(data["trials"])
    trials = f"{n} trial{'s' * (n != 1)} ({counts})" if n else "no trials yet"
    goal = f"{s['metric']['goal']} {s['metric']['name']}"
    if not s["metric_set"]:
        goal += " (the sweep sets no metric)"
    return f"{s['method']} search, {goal}; {s['backend']} backend; {s['state']}: {trials}"


def _best_result(data: dict[str, Any]) -> str:
    best = data["best"]
    metric = data["sweep"]["metric"]["name"]
    epoch = fmt_value(best["best_epoch"])
    text = f"{metric} {fmt_value(best['value'])} (best epoch {epoch} of {best['planned_epochs']})"
    if "test_acc" in best["summary"]:
        text += f", test_acc {fmt_value(best['summary']['test_acc'])} at its end"
        if data["reference"] is not None:
            text += f" (the reference report: {data['reference']:g} on the test set)"
    return text


def _with_errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in data["trials"] if t["error"]]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def esc(text: Any) -> str:
    return html.escape(str(text))


CSS = """
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1500px; margin: 0 auto; padding: 20px 28px 40px; }
h1 { font-size: 26px; margin: 0 0 4px; } h1 code { font-size: 22px; color: #555; }
h2 { font-size: 19px; margin: 0 0 10px; } h3 { font-size: 16px; margin: 18px 0 8px; }
header, section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 16px 20px;
  margin-bottom: 18px; }
.headline { color: #444; margin: 0 0 10px; }
pre { background: #f1f3f5; border-radius: 6px; padding: 10px 12px; white-space: pre-wrap; overflow-wrap: anywhere;
  font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; margin: 6px 0; }
pre.command { background: #1f2430; color: #e6edf3; user-select: all; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; }
table.trials th, table.trials td { padding: 5px 12px; border-bottom: 1px solid #eceef1; text-align: right;
  white-space: nowrap; font-variant-numeric: tabular-nums; }
table.trials thead th { border-top: 5px solid transparent; vertical-align: bottom; font-size: 13px; }
table.trials tbody th { text-align: left; font-weight: 600; color: #333; position: sticky; left: 0;
  background: #fff; }
table.trials .best { background: #fff4cc; }
table.trials thead th.best { box-shadow: inset 2px 0 #e0a800, inset -2px 0 #e0a800; }
table.trials td.best { box-shadow: inset 2px 0 #e0a800, inset -2px 0 #e0a800; font-weight: 600; }
.star { color: #b07d00; font-weight: 700; }
tr.metric th, tr.metric td { font-weight: 700; font-size: 16px; background-color: #f4f8ff; }
tr.metric td.best { background: #ffe899; }
.state-finished { color: #17803d; } .state-stopped { color: #b35c00; } .state-failed, .state-crashed { color: #c62828; }
.state-running, .state-preempted, .state-paused { color: #1f5fbf; }
table.importance th, table.importance td { padding: 4px 10px; text-align: left; border-bottom: 1px solid #eceef1; }
table.importance td { width: 260px; position: relative; }
.bar { display: inline-block; height: 12px; vertical-align: middle; border-radius: 2px; margin-right: 6px; }
.bar.imp { background: #6c8ebf; } .bar.pos { background: #3aa655; } .bar.neg { background: #d9534f; }
.num { font-variant-numeric: tabular-nums; font-size: 13px; }
.note { color: #666; font-size: 13px; }
dt { font-weight: 600; margin-top: 6px; }
dd { margin: 0 0 8px 16px; }
footer { color: #888; font-size: 12px; text-align: center; }
"""
