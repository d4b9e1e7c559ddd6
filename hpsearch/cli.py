"""The `hpsearch` command: each subcommand parses its options, calls one function, prints."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hpsearch import params

if TYPE_CHECKING:
    from hpsearch.sweep.store import Store, Sweep


def store_options(command: Callable) -> Callable:
    """--dir (trial folders, and the SQLite database unless --db names a server) and --db."""
    command = click.option(
        "--db",
        envvar="HPSEARCH_DB",
        metavar="URL",
        help="Sweep database on a server, for agents on many machines (env HPSEARCH_DB): "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME. Default: SQLite in --dir (one machine).",
    )(command)
    return click.option(
        "--dir",
        "store_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="HPSEARCH_DIR",
        default="hpsearch-runs",
        show_default=True,
        help="Trial folders (logs, metrics, checkpoints) and, without --db, the SQLite database (env HPSEARCH_DIR).",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpsearch")
def main() -> None:
    """Hyperparameter sweeps over timm image classifiers, run as torchrun DDP trials."""


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]},
    epilog="\b\nHyperparameters (--key=value, --key value, dashes or underscores):\n" + params.help_text(),
)
@click.pass_context
def train(ctx: click.Context) -> None:
    """Run one trial in this process: hpsearch train [--config FILE.yaml] [--key=value ...].

    For N DDP workers: torchrun --standalone --nproc_per_node=N -m hpsearch.train [--key=value ...]
    """
    from hpsearch.train.loop import main as train_main

    sys.exit(train_main(ctx.args))


@main.command("create-sweep")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["local", "wandb"]), help="Default: wandb with a W&B login, else local.")
@click.option("--project", help="W&B project (default: WANDB_PROJECT, else hpsearch).")
@click.option("--entity", help="W&B entity (default: your W&B default).")
@click.option("--name", help="Sweep name (default: the file's `name`).")
@store_options
def create_sweep(
    file: Path,
    backend: str | None,
    project: str | None,
    entity: str | None,
    name: str | None,
    store_dir: Path,
    db: str | None,
) -> None:
    """Register the W&B sweep config FILE; print the agent command and, last, the sweep id."""
    import os

    from hpsearch.sweep.spec import SpecError, load_spec
    from hpsearch.wandb_env import default_mode

    try:
        config = load_spec(file)
    except SpecError as e:
        for problem in e.problems:
            click.echo(f"hpsearch create-sweep: error: {problem}", err=True)
        sys.exit(2)
    if backend is None:
        backend = "wandb" if default_mode() == "online" else "local"
        why = "a W&B login is configured" if backend == "wandb" else "no W&B login (run `wandb login` for a server)"
        click.echo(f"backend: {backend} ({why})")
    project = project or os.environ.get("WANDB_PROJECT") or config.get("project") or "hpsearch"
    store = _store("create-sweep", store_dir, db)  # before the W&B server: a bad --db registers nothing
    if backend == "wandb":
        from hpsearch.sweep.wandb_cloud import ServerError
        from hpsearch.sweep.wandb_cloud import create_sweep as create_remote

        try:
            remote = create_remote(config, project, entity)
        except ServerError as e:
            click.echo(f"hpsearch create-sweep: error: {e}", err=True)
            sys.exit(1)
        store.add_sweep(config, "wandb", name, remote=remote, sweep_id=remote.split("/")[-1])
        click.echo(f"created W&B sweep {remote}")
        sweep_id = remote  # the form the W&B UI and `wandb agent` use; the store knows it by its last part too
    else:
        sweep_id = store.add_sweep({**config, "project": project}, "local", name).id
        click.echo(f"created local sweep {sweep_id} in {store.where}")
    options = ("" if str(store_dir) == "hpsearch-runs" else f" --dir {store_dir}") + (" --db URL" if db else "")
    click.echo(f"run it with: hpsearch agent {sweep_id}{options}")
    click.echo(sweep_id)


@main.command()
@click.argument("sweep_id")
@click.option("--gpus", type=int, help="Use the first N visible GPUs (default: all visible).")
@click.option("--gpu-ids", help="Use these GPUs, e.g. 0,1,2,3.")
@click.option("--gpus-per-trial", type=int, help="GPUs per trial (default: all of them, one trial at a time).")
@click.option("--cpu-procs", type=int, default=1, show_default=True, help="gloo workers per trial with no GPU.")
@click.option("--count", type=int, help="Run at most N trials, then stop.")
@click.option("--grace", type=float, default=10.0, show_default=True, help="Seconds between SIGTERM and SIGKILL.")
@click.option(
    "--hang-timeout",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="End a trial that records no new epoch for this many seconds, or 5x its slowest epoch if longer "
    "(3x that before its first epoch, which compiles); it is recorded failed.",
)
@click.option(
    "--max-resumes",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Resume a trial whose agent died (from its checkpoint) at most this many times.",
)
@store_options
def agent(
    sweep_id: str,
    gpus: int | None,
    gpu_ids: str | None,
    gpus_per_trial: int | None,
    cpu_procs: int,
    count: int | None,
    grace: float,
    hang_timeout: float,
    max_resumes: int,
    store_dir: Path,
    db: str | None,
) -> None:
    """Run the sweep's trials, one torchrun process group each, until it is done (or --count)."""
    from hpsearch.sweep.agent import Agent, AgentError, choose_gpus, plan_slots
    from hpsearch.sweep.local import LocalController
    from hpsearch.sweep.status import format_status, status

    store, sweep = _open_sweep("agent", store_dir, db, sweep_id, remote_ok=True)
    try:
        slots = plan_slots(choose_gpus(gpus, gpu_ids), gpus_per_trial, cpu_procs)
        if sweep.backend == "wandb" and len(slots) > 1:
            raise AgentError("--gpus-per-trial: a W&B agent runs one trial at a time; start one agent per GPU set")
    except AgentError as e:
        raise click.UsageError(str(e)) from None
    if sweep.backend == "wandb":
        from hpsearch.sweep.wandb_cloud import ServerError, WandbAgent

        try:
            code = WandbAgent(store, sweep, slots[0], count, grace).run()
        except ServerError as e:
            click.echo(f"hpsearch agent: error: {e}", err=True)
            sys.exit(1)
    else:
        controller = LocalController(store, sweep, max_resumes)
        code = Agent(store, sweep, controller, slots, count, grace, hang_timeout=hang_timeout).run()
    click.echo(format_status(status(store, store.sweep(sweep.id))))
    sys.exit(code)


@main.command("status")
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@store_options
def status_cmd(sweep_id: str, as_json: bool, store_dir: Path, db: str | None) -> None:
    """The sweep and its trials, best first by the sweep metric."""
    from hpsearch.sweep.status import format_status, status

    store, sweep = _open_sweep("status", store_dir, db, sweep_id)
    data = status(store, sweep)
    click.echo(json.dumps(data) if as_json else format_status(data))


@main.command("report")
@click.argument("sweep_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report here (default: html to DIR/SWEEP_ID/report.html, md to stdout).",
)
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), help="Default: md for an -o FILE.md, else html.")
@store_options
def report_cmd(sweep_id: str, output: Path | None, fmt: str | None, store_dir: Path, db: str | None) -> None:
    """The sweep as one self-contained HTML page (table, loss history, parameters against the metric) or Markdown."""
    from hpsearch.compare.report import report

    store, sweep = _open_sweep("report", store_dir, db, sweep_id)
    fmt = fmt or ("md" if output is not None and output.suffix == ".md" else "html")
    text = report(store, sweep, fmt)
    if output is None and fmt == "md":
        click.echo(text, nl=False)
        return
    output = output or store_dir / sweep.id / "report.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}")


@main.command("sync")
@click.argument("sweep_id")
@click.option("--project", help="W&B project to upload to (default: the one each trial's run names).")
@click.option("--entity", help="W&B entity (default: your W&B default).")
@store_options
def sync_cmd(sweep_id: str, project: str | None, entity: str | None, store_dir: Path, db: str | None) -> None:
    """Upload a local sweep's offline W&B runs (`wandb sync`); the W&B UI groups them by sweep."""
    from hpsearch.compare.sync import SyncError, sync

    store, sweep = _open_sweep("sync", store_dir, db, sweep_id)
    try:
        code = sync(store, sweep, project, entity, echo=click.echo)
    except SyncError as e:
        click.echo(f"hpsearch sync: error: {e}", err=True)
        sys.exit(1)
    sys.exit(code)


def _store(command: str, store_dir: Path, db: str | None) -> Store:
    """The store, or one line naming what is wrong with its database and exit 2."""
    from hpsearch.sweep.store import Store, StoreError

    try:
        return Store(store_dir, db)
    except StoreError as e:
        click.echo(f"hpsearch {command}: error: {e}", err=True)
        sys.exit(2)


def _open_sweep(
    command: str, store_dir: Path, db: str | None, sweep_id: str, remote_ok: bool = False
) -> tuple[Store, Sweep]:
    """The store and the sweep, or a usage error (exit 2) that leaves no store behind. A W&B sweep is found by
    its id or its path ENTITY/PROJECT/ID. With `remote_ok` and a W&B login, a path the store does not know is
    taken for a W&B sweep made elsewhere (`wandb sweep`, another machine)."""
    from hpsearch.sweep.store import store_exists
    from hpsearch.wandb_env import api_key_configured

    mirror = remote_ok and api_key_configured() and len(sweep_id.split("/")) == 3 and all(sweep_id.split("/"))
    store = _store(command, store_dir, db) if store_exists(store_dir, db) or mirror else None
    sweep = store.sweep(sweep_id) if store else None
    if sweep is None and store and "/" in sweep_id:
        by_id = store.sweep(sweep_id.rsplit("/", 1)[-1])
        sweep = by_id if by_id and by_id.backend == "wandb" else None
    if sweep is None and mirror:
        from hpsearch.sweep.wandb_cloud import mirror_sweep

        sweep = mirror_sweep(store, sweep_id)
    if sweep is None:
        hint = "; a W&B sweep made elsewhere needs its full path ENTITY/PROJECT/ID" if remote_ok else ""
        where = store.where if store else store_dir
        raise click.UsageError(f"no sweep {sweep_id!r} in {where}; create one with `hpsearch create-sweep FILE`{hint}")
    return store, sweep


if __name__ == "__main__":
    main()
