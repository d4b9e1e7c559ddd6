"""The W&B server path, short of the network: wandb's sweep/agent/init calls are replaced by fakes that
behave as the server would (suggest runs, send a stop command); everything of ours runs for real."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import wandb
import yaml
from click.testing import CliRunner
from conftest import fast_params, live_in_group
from wandb.agents.pyagent import _terminate_thread

from hpsearch.cli import main
from hpsearch.sweep.store import Store


class FakeRun:
    def __init__(self, run_id: str, config: dict[str, Any]):
        self.id, self.config = run_id, config
        self.logged: list[tuple[int, dict]] = []
        self.summary: dict[str, Any] = {}

    def log(self, record: dict, step: int) -> None:
        self.logged.append((step, record))


class FakeServer:
    """wandb.sweep / wandb.agent / wandb.init as the W&B server drives them."""

    def __init__(self, suggestions: list[dict[str, Any]], stop_run: int):
        self.suggestions, self.stop_run = suggestions, stop_run
        self.runs: list[FakeRun] = []
        self.created: dict[str, Any] = {}
        self.errors: list[BaseException] = []

    def sweep(self, sweep: dict, project: str | None = None, entity: str | None = None) -> str:
        self.created = {"config": sweep, "project": project, "entity": entity}
        return "abc123"

    def init(self) -> FakeRun:
        return self.runs[-1]

    def agent(self, sweep_id: str, function, count: int | None = None) -> None:
        assert sweep_id == "team/proj/abc123"
        for i, config in enumerate(self.suggestions[:count]):
            self.runs.append(FakeRun(f"run{i}", {k: v["value"] for k, v in config.items()}))
            thread = threading.Thread(target=self._guard, args=(function,))
            thread.start()
            if i == self.stop_run:  # a stop command: wandb's agent raises inside the trial's thread
                while thread.is_alive() and not self.runs[-1].logged:
                    time.sleep(0.05)
                _terminate_thread(thread)
            thread.join()

    def _guard(self, function) -> None:
        try:
            function()
        except BaseException as e:  # wandb's agent records the run as failed or stopped
            self.errors.append(e)


def test_wandb_sweep_runs_server_suggestions_logs_epochs_and_honours_stop(
    cifar_root: Path, tmp_path: Path, monkeypatch
):
    config = {
        "method": "random",
        "metric": {"name": "val_acc", "goal": "maximize"},
        "parameters": {**fast_params(cifar_root, epochs=3), "lr": {"min": 0.01, "max": 0.1}},
    }
    server = FakeServer(
        [
            {"lr": {"value": 0.05}, **fast_params(cifar_root, epochs=3)},
            {"lr": {"value": 0.02}, **fast_params(cifar_root, epochs=40)},
        ],
        stop_run=1,
    )
    for name in ("sweep", "agent", "init"):
        monkeypatch.setattr(wandb, name, getattr(server, name))
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(config))
    store_dir = tmp_path / "store"
    runner = CliRunner()

    created = runner.invoke(
        main,
        [
            "create-sweep",
            str(f),
            "--backend",
            "wandb",
            "--project",
            "proj",
            "--entity",
            "team",
            "--dir",
            str(store_dir),
        ],
    )
    assert created.exit_code == 0, created.output
    assert created.output.strip().splitlines()[-1] == "abc123"
    assert server.created["config"]["parameters"]["lr"] == {"min": 0.01, "max": 0.1}

    result = runner.invoke(main, ["agent", "abc123", "--count", "2", "--grace", "5", "--dir", str(store_dir)])
    assert result.exit_code == 0, result.output
    store = Store(store_dir)
    done, stopped = store.trials("abc123")
    assert (done.id, done.state, done.epochs) == ("run0", "finished", 3)
    assert [step for step, _ in server.runs[0].logged] == [1, 2, 3]  # every epoch reached the run
    assert server.runs[0].summary["best_acc"] == done.summary["best_acc"] > 0
    assert stopped.id == "run1" and stopped.state == "stopped" and 1 <= stopped.epochs < 40
    assert not live_in_group(stopped.pgid)
    assert len(server.errors) == 1  # the stop propagated back to wandb's agent
    assert not (store_dir / "abc123" / "wandb").exists()  # the trainer itself did not talk to W&B


def test_an_agent_joins_a_sweep_made_with_wandb_sweep(cifar_root: Path, tmp_path: Path, monkeypatch):
    server = FakeServer([{"lr": {"value": 0.05}, **fast_params(cifar_root, epochs=1)}], stop_run=-1)
    monkeypatch.setattr(wandb, "agent", server.agent)
    monkeypatch.setattr(wandb, "init", server.init)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a login, so an unknown id is taken for a W&B sweep
    result = CliRunner().invoke(main, ["agent", "team/proj/abc123", "--count", "1", "--dir", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    (trial,) = Store(tmp_path / "s").trials("abc123")
    assert (trial.id, trial.state, trial.epochs) == ("run0", "finished", 1)
