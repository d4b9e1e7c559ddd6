"""`hpsearch report` and `hpsearch sync` on a real sweep run on the CPU; the report in a real headless browser."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import html
import io
import json
import os
import select
import shlex
import shutil
import sqlite3
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import env, fast_params, hpsearch, plotly_figures
from PIL import Image

from hpsearch.params import parse_args
from hpsearch.report import gather, render_html
from hpsearch.sweep.spec import leaves
from hpsearch.sweep.store import State, Store

# Three grid points, run in this order: batch 512 is more than the 231 training images, so the trainer
# refuses it (failed); lr 0.05 learns (finished); lr 1e-4 learns nothing, so hyperband stops it after
# epoch 1 (eta 3: it is not in the top third of that epoch's values); its batches of 2 make its epochs
# (115 steps) long enough for the agent to see epoch 1 before epoch 2 ends, on a loaded machine too. Best first,
# the report orders them finished, stopped, failed.
GRID = [
    {"lr": 0.05, "batch_size": 512},
    {"lr": 0.05, "batch_size": 32},
    {"lr": 0.0001, "batch_size": 2},
]


def cli(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    e = env(HPSEARCH_STALE_AFTER="600", **extra)
    e.pop("WANDB_MODE")  # the agent's trials write offline W&B runs, as they do for users
    return hpsearch(*args, cwd=cwd, env=e)


@pytest.fixture(scope="session")
def swept(cifar_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(store, sweep id) of a grid sweep run to the end: one trial failed, one finished, one stopped."""
    root = tmp_path_factory.mktemp("swept")
    fixed = {k: v for k, v in fast_params(cifar_root).items() if k != "batch_size"}  # GRID sets it
    # The small stem and no mixing or flips: lr 0.05 learns in one epoch, so the stop is clear-cut.
    fixed.update({k: {"value": v} for k, v in (("cifar_stem", False), ("cutmix", 0.0), ("hflip", 0.0))})
    config = {
        "name": "report-test",
        "method": "grid",
        "metric": {"name": "best_acc", "goal": "maximize"},
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3},
        "parameters": {**fixed, "point": {"values": GRID}},
    }
    (root / "sweep.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    p = cli("create-sweep", "sweep.yaml", "--dir", "store", cwd=root)
    assert p.returncode == 0, p.stderr
    sweep_id = p.stdout.strip().splitlines()[-1]
    p = cli("agent", sweep_id, "--dir", "store", cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    states = [t.state for t in Store(root / "store").trials(sweep_id)]
    assert states == ["failed", "finished", "stopped"], p.stdout
    return root / "store", sweep_id


@pytest.mark.xdist_group("swept")
def test_report_shows_each_trial_the_varying_parameters_metrics_and_plots(swept: tuple[Path, str], tmp_path: Path):
    store_dir, sweep_id = swept
    p = cli("report", sweep_id, "--dir", str(store_dir), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    store = Store(store_dir)
    trials = {t.id: t for t in store.trials(sweep_id)}
    ranked = sorted(trials.values(), key=lambda t: -t.summary.get("best_acc", -1))  # the failed one has none

    rows = Cells(page).rows
    head, body = rows[0], {r[0]: r[1:] for r in rows[1:]}
    assert [h.removeprefix("★ best") for h in head[1:]] == [t.id for t in ranked]
    assert head[1].startswith("★ best") and not any("best" in h for h in head[2:])
    assert list(body) == ["lr", "batch_size", "best_acc", "test_acc", "best epoch", "epochs run", "wall time", "state"]
    # the test set, measured once as a trial ends: only the finished trial got there
    assert body["test_acc"] == [f"{ranked[0].summary['test_acc']:.4g}", "-", "-"]
    assert body["lr"] == [f"{leaves(t.params)['lr']:g}" for t in ranked]
    assert body["batch_size"] == [str(leaves(t.params)["batch_size"]) for t in ranked]
    assert body["best_acc"] == [f"{t.summary['best_acc']:.4g}" for t in ranked[:2]] + ["-"]
    assert body["state"] == ["finished", "stopped", "failed"]
    assert body["epochs run"] == ["2 of 2", "1 of 2", "0 of 2"]  # the stopped trial ended early
    assert Cells(page).marked == {1}  # the best trial's column stands out, and only it

    # The summary: id, method, trials by state, and the best trial's configuration as a runnable command.
    assert f"<code>{sweep_id}</code>" in page and "grid search, maximize best_acc" in page
    assert "3 trials (1 finished, 1 failed, 1 stopped)" in page
    command = page.split('<pre class="command">')[1].split("</pre>")[0]
    argv = shlex.split(html.unescape(command))
    assert argv[:2] == ["hpsearch", "train"]
    best = parse_args(argv[2:])
    params = leaves(ranked[0].params)
    assert (best.lr, best.batch_size, best.epochs, best.data_dir) == (params["lr"], 32, 2, params["data_dir"])

    # The plots: every trial with epochs in the loss history, every trial with a value in the parallel view.
    figures = plotly_figures(page)
    assert set(figures) == {"loss-history", "parallel"}
    history = figures["loss-history"]
    for t in ranked[:2]:
        traces = [tr for tr in history if tr["legendgroup"] == t.id]
        assert [tr["yaxis"] for tr in traces] == ["y", "y2", "y3"]
        assert [tr["x"] for tr in traces] == [[r["epoch"] for r in store.history(t.id)]] * 3
        assert traces[2]["y"] == [r["val_acc"] for r in store.history(t.id)]
    stopped = next(tr for tr in history if tr["legendgroup"] == ranked[1].id)
    assert stopped["marker"]["symbol"][-1] == "x" and stopped["name"].endswith("(stopped)")
    assert not any(tr.get("legendgroup") == ranked[2].id for tr in history)  # the failed trial ran no epoch
    lines = [tr for tr in figures["parallel"] if tr.get("mode") == "lines+markers"]
    assert [tr["name"] for tr in lines] == [t.id for t in ranked[:2]]
    assert lines[0]["y"][-1] == 1.0 and lines[1]["y"][-1] == 0.0  # the metric axis: best on top
    assert "Parameter importance for best_acc" in page and "Shown once at least 3 trials" in page

    # The failed trial's error, word for word.
    assert f"{ranked[2].id} (failed)" in page and "each rank needs 512 training images" in page

    # Self-contained: every src and href is inline data.
    assert External(page).refs == []


@pytest.mark.xdist_group("swept")
def test_report_markdown_has_the_summary_and_table(swept: tuple[Path, str], tmp_path: Path):
    store_dir, sweep_id = swept
    p = cli("report", sweep_id, "--dir", str(store_dir), "--format", "md", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ranked = gather(Store(store_dir), Store(store_dir).sweep(sweep_id))["trials"]
    lines = p.stdout.splitlines()
    assert lines[0] == f"## Sweep `{sweep_id}` (report-test)"
    assert (
        "grid search, maximize best_acc; local backend; finished: 3 trials (1 finished, 1 failed, 1 stopped)" in lines
    )
    command = lines[lines.index("```sh") + 1]
    assert parse_args(shlex.split(command)[2:]).lr == ranked[0]["params"]["lr"]
    header = f"|  | {ranked[0]['id']} (best) | " + " | ".join(t["id"] for t in ranked[1:]) + " |"
    assert header in lines
    assert (
        "| **best_acc** | " + " | ".join(f"**{t['summary']['best_acc']:.4g}**" for t in ranked[:2]) + " | **-** |"
        in lines
    )
    assert "| state | finished | stopped | failed |" in lines
    assert "| lr | " + " | ".join(f"{t['params']['lr']:g}" for t in ranked) + " |" in lines
    assert any("each rank needs 512 training images" in line for line in lines)


@pytest.mark.xdist_group("swept")
def test_report_renders_in_headless_chromium(swept: tuple[Path, str], tmp_path: Path):
    store_dir, sweep_id = swept
    p = cli("report", sweep_id, "--dir", str(store_dir), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    page = store_dir / sweep_id / "report.html"  # the default place
    assert p.stdout.strip() == f"wrote {page}"
    loaded = browse(page, tmp_path)
    assert loaded.errors == []
    assert loaded.requests and all(u.startswith(("file:", "data:")) for u in loaded.requests), loaded.requests
    store = Store(store_dir)
    epochs = sum(len(store.history(t.id)) for t in store.trials(sweep_id))
    plots = loaded.plots
    assert set(plots) == {"loss-history", "parallel"}
    assert plots["loss-history"]["points"] == 3 * epochs == 9  # every epoch of every trial, in three panels
    assert plots["loss-history"]["lines"] >= 3  # the finished trial's two epochs: a line in each panel
    assert plots["parallel"]["lines"] == 2  # one line per trial with a best_acc
    for name, plot in plots.items():
        assert loaded.colours_in(plot["box"]) > 50, name  # drawn: not a blank area
        assert plot["share"] == 0, name  # no button that uploads the sweep to Plotly Cloud


@pytest.fixture(params=["one running trial", "one failed trial"])
def small_sweep(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str, bool]:
    """A sweep caught early: one trial still running after an epoch, or one that failed before any."""
    store = Store(tmp_path / "store")
    sweep = store.add_sweep(
        {
            "method": "random",
            "metric": {"name": "val_acc", "goal": "maximize"},
            "parameters": {"lr": {"min": 0.01, "max": 0.5}},
        },
        "local",
    )
    trial = store.add_trial(sweep.id, {"lr": 0.1, "epochs": 5}, "agent-1")
    if request.param == "one running trial":
        store.add_epochs(trial.id, [record(1, 30.0)], "agent-1", "val_acc")
    else:
        store.end(trial.id, State.FAILED, "agent-1", 1, "hpsearch train: error: training diverged")
    return tmp_path / "store", sweep.id, request.param == "one running trial"


def test_report_of_a_sweep_caught_early_renders(small_sweep: tuple[Path, str, bool], tmp_path: Path):
    store_dir, sweep_id, running = small_sweep
    p = cli("report", sweep_id, "--dir", str(store_dir), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    loaded = browse(tmp_path / "r.html", tmp_path)
    assert loaded.errors == []
    rows = {r[0]: r[1:] for r in Cells(page).rows[1:]}
    assert rows["state"] == (["running"] if running else ["failed"])
    assert f"1 trial (1 {rows['state'][0]})" in page
    assert rows["lr"] == ["0.1"]
    assert rows["val_acc"] == (["30"] if running else ["-"])
    assert rows["epochs run"] == (["1 of 5"] if running else ["0 of 5"])
    if running:  # its epoch so far is drawn; it is the best trial so far
        assert loaded.plots["loss-history"]["points"] == 3 and loaded.plots["parallel"]["lines"] == 1
    else:
        assert loaded.plots == {} and "No trial has a val_acc value yet." in page
    md = cli("report", sweep_id, "--dir", str(store_dir), "--format", "md", cwd=tmp_path)
    assert md.returncode == 0 and ("| state | running |" if running else "| state | failed |") in md.stdout


def test_importance_ranks_the_parameter_that_drives_the_metric(tmp_path: Path):
    """With no metric in the sweep, the report ranks by best_acc; lr drives it here, aa does not."""
    store = Store(tmp_path)
    sweep = store.add_sweep({"method": "grid", "parameters": {"lr": {"values": [1]}, "aa": {"values": ["a"]}}}, "local")
    for i, (lr, aa) in enumerate([(0.1, "none"), (0.2, "cifar10"), (0.3, "none"), (0.4, "cifar10"), (0.5, "none")]):
        trial = store.add_trial(sweep.id, {"lr": lr, "aa": aa}, "agent-1")
        store.add_epochs(trial.id, [record(1, 10.0 * (i + 1))], "agent-1", "val_acc")
        store.end(trial.id, State.FINISHED, "agent-1")
    data = gather(store, sweep)
    assert data["sweep"]["metric"] == {"name": "best_acc", "goal": "maximize"}
    assert [t["params"]["lr"] for t in data["trials"]] == [0.5, 0.4, 0.3, 0.2, 0.1]
    ranked = data["importance"]
    assert ranked[0]["param"] == "lr" and ranked[0]["correlation"] == pytest.approx(1.0)
    assert {r["param"] for r in ranked} == {"lr", "aa=none", "aa=cifar10"}
    assert ranked[0]["importance"] > 0.5
    panel = render_html(data).split('<table class="importance">')[1].split("</table>")[0]
    assert panel.index("<th>lr</th>") < panel.index("<th>aa=none</th>") and "+1.00" in panel


@pytest.mark.xdist_group("swept")
def test_sync_without_a_wandb_login_says_what_to_run_and_changes_nothing(swept: tuple[Path, str], tmp_path: Path):
    store_dir, sweep_id = swept
    runs = list((store_dir / sweep_id / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # the trials that started training; the failed one stopped before
    before = snapshot(store_dir)
    no_login = {"HOME": str(tmp_path), "NETRC": str(tmp_path / "no-netrc"), "WANDB_API_KEY": ""}
    p = cli("sync", sweep_id, "--project", "p1", "--dir", str(store_dir), cwd=tmp_path, **no_login)
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr == (
        "hpsearch sync: error: no W&B login on this machine; run `wandb login` (or set WANDB_API_KEY), "
        f"then `hpsearch sync {sweep_id} --project p1 --dir {store_dir}`\n"
    )
    assert snapshot(store_dir) == before
    assert not (tmp_path / "wandb").exists()


# ---- helpers ----


def record(epoch: int, acc: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 2.0,
        "val_loss": 1.5,
        "val_acc": acc,
        "val_acc5": 90.0,
        "best_acc": acc,
        "lr": 0.1,
        "epoch_time": 1.0,
        "img_per_sec": 100.0,
    }


def snapshot(root: Path) -> dict[str, object]:
    """Every file under root: (size, mtime, sha256); the SQLite database by its rows (a reader closing the last
    connection may checkpoint its write-ahead log into the file, which moves bytes but changes nothing)."""
    files = {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("hpsearch.db")
    }
    with sqlite3.connect(root / "hpsearch.db") as db:
        files["hpsearch.db"] = list(db.iterdump())
    return files


class Cells(HTMLParser):
    """The text of every cell of the page's trials table, row by row (the head row first)."""

    def __init__(self, page: str):
        super().__init__()
        self.rows: list[list[str]] = []
        self.marked: set[int] = set()  # the columns of cells whose class says "best"
        self._inside, self._cell = False, None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table" and ("class", "trials") in attrs:
            self._inside = True
        elif self._inside and tag == "tr":
            self.rows.append([])
        elif self._inside and tag in ("th", "td"):
            self._cell = []
            if "best" in (dict(attrs).get("class") or "").split():
                self.marked.add(len(self.rows[-1]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._inside = False
        elif self._inside and tag in ("th", "td"):
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


class External(HTMLParser):
    """Every src or href on the page that is not inline data or a link within it."""

    def __init__(self, page: str):
        super().__init__()
        self.refs: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith(("data:", "#"))]


# ---- a headless chromium over the DevTools protocol, on the pipe it offers (no port, no extra package) ----

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OFFLINE = [  # the test machine has no network: keep chromium from trying
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROBE = """(async () => {
  await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  const plots = {};
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const box = gd.getBoundingClientRect();
    plots[gd.id] = {
      points: gd.querySelectorAll('.scatterlayer .point').length,
      lines: [...gd.querySelectorAll('.scatterlayer path.js-line')]
        .filter(p => (p.getAttribute('d') || '').length > 2).length,
      box: [box.left + scrollX, box.top + scrollY, box.width, box.height],
      share: gd.querySelectorAll('[data-title="Share chart..."]').length,
    };
  }
  return plots;
})()"""


class Loaded:
    def __init__(self, errors: list[str], requests: list[str], plots: dict, screenshot: bytes):
        self.errors, self.requests, self.plots = errors, requests, plots
        self.image = Image.open(io.BytesIO(screenshot)).convert("RGB")

    def colours_in(self, box: list[float]) -> int:
        x, y, w, h = (round(v) for v in box)
        return len(self.image.crop((x, y, x + w, y + h)).getcolors(1 << 24) or [])


def browse(page: Path, tmp_path: Path) -> Loaded:
    """Open the page in headless chromium; its console errors and uncaught exceptions, every URL it
    requested, what each plotly plot drew, and a screenshot of the whole page."""
    with DevTools(tmp_path / "chromium-profile") as chrome:
        target = chrome.call("Target.createTarget", url="about:blank")["targetId"]
        session = chrome.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            chrome.call(f"{domain}.enable", session)
        chrome.call(
            "Emulation.setDeviceMetricsOverride", session, width=1400, height=2600, deviceScaleFactor=1, mobile=False
        )
        chrome.call("Page.navigate", session, url=page.resolve().as_uri())
        chrome.wait_for("Page.loadEventFired")
        plots = chrome.call("Runtime.evaluate", session, expression=PROBE, awaitPromise=True, returnByValue=True)
        shot = chrome.call("Page.captureScreenshot", session, format="png")
    errors, requests = [], []
    for e in chrome.events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            errors.append(
                p["exceptionDetails"].get("exception", {}).get("description") or p["exceptionDetails"]["text"]
            )
        elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert", "warning"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            errors.append(p["entry"]["text"])
        elif e["method"] == "Network.requestWillBeSent":
            requests.append(p["request"]["url"])
    (tmp_path / "screenshot.png").write_bytes(base64.b64decode(shot["data"]))  # kept for a look when it fails
    return Loaded(errors, requests, plots["result"]["value"], base64.b64decode(shot["data"]))


class DevTools:
    """chromium --remote-debugging-pipe: it reads NUL-terminated JSON commands on fd 3, answers on fd 4."""

    def __init__(self, profile: Path):
        commands_in, self._commands = os.pipe()
        self._replies, replies_out = os.pipe()

        def on_fds_3_and_4() -> None:  # in the child; via fds >= 10, in case a pipe already sits on 3 or 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_in, replies_out)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *OFFLINE]
        self.proc = subprocess.Popen(
            [*argv, "--remote-debugging-pipe"],
            preexec_fn=on_fds_3_and_4,
            close_fds=False,  # our other descriptors are close-on-exec already (PEP 446)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_in)
        os.close(replies_out)
        self.events: list[dict] = []
        self._buffer, self._id = b"", 0

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._commands)
        os.close(self._replies)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params: object) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._read(deadline, event))

    def _read(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise RuntimeError(f"chromium: no answer to {waiting_for}")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self.proc.poll()}) while waiting for {waiting_for}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)


@pytest.mark.parametrize("metric, goal, best", [("score", "maximize", 2), ("val_loss", "minimize", 3)])
def test_report_of_a_programs_sweep_follows_its_metric_and_goal(tmp_path: Path, metric: str, goal: str, best: int):
    """A sweep's own program records its own metric (and no epochs key): the best epoch is the metric's best by
    its goal, the planned epochs are the ones it ran."""
    store = Store(tmp_path / "store")
    config = {"method": "grid", "program": "train.py", "metric": {"name": metric, "goal": goal},
              "parameters": {"x": {"values": [1, 2]}}}  # fmt: skip
    sweep = store.add_sweep(config, "local")
    history = [{"epoch": 1, "score": 10.0, "val_loss": 3.0}, {"epoch": 2, "score": 30.0, "val_loss": 2.0},
               {"epoch": 3, "score": 20.0, "val_loss": 1.0}]  # fmt: skip
    for x in (1, 2):
        trial = store.add_trial(sweep.id, {"x": x}, "agent-1")
        store.add_epochs(trial.id, history, "agent-1", metric)
        store.end(trial.id, State.FINISHED, "agent-1", 0)
    data = gather(store, store.sweep(sweep.id))
    assert [t["best_epoch"] for t in data["trials"]] == [best, best]
    assert [t["planned_epochs"] for t in data["trials"]] == [3, 3]
    p = cli("report", sweep.id, "--dir", str(tmp_path / "store"), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    rows = {r[0]: r[1:] for r in Cells((tmp_path / "r.html").read_text()).rows[1:]}
    assert rows["best epoch"] == [str(best)] * 2 and rows["epochs run"] == ["3 of 3"] * 2
