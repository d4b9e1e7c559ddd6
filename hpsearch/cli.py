"""The `hpsearch` command: each subcommand parses its options, calls one function, prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hpsearch import defaults, params

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


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> None:
        """A bad environment knob is one line and exit 2; a database failure in any command (it retried what it
        could) one line and exit 1."""
        try:
            defaults.check()
        except defaults.SettingError as e:
            click.echo(f"hpsearch: error: {e}", err=True)
            sys.exit(2)
        try:
            return super().invoke(ctx)
        except Exception as e:
            from hpsearch.sweep.store import StoreError

            if not isinstance(e, StoreError):
                raise
            click.echo(f"hpsearch {ctx.invoked_subcommand}: error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option(
    "--prior",
    "priors",
    multiple=True,
    metavar="SOURCE",
    help="Tell the sweep earlier results, never run again (repeatable): SWEEP_ID (a sweep in this store), FILE.jsonl "
    "(a curve table, the --export-curves format) or ENTITY/PROJECT/SWEEP_ID (a W&B sweep). Local sweeps.",
)
@store_options
def create_sweep(
    file: Path,
    backend: str | None,
    project: str | None,
    entity: str | None,
    name: str | None,
    priors: tuple[str, ...],
    store_dir: Path,
    db: str | None,
) -> None:
    """Register the W&B sweep config FILE; print the agent command and, last, the sweep id."""
    from hpsearch.sweep.spec import SpecError, load_spec, read_code
    from hpsearch.wandb_env import default_mode

    chosen = backend is None
    try:
        config = load_spec(file)
        if chosen:
            backend = _default_backend(config, default_mode())
        # a local sweep keeps its scheduler's source (relative to here, as `wandb sweep-scheduler` reads it, else
        # hpsearch's own studies: spec.read_code); on a W&B server the scheduler reads it on its own machine
        code = read_code(config) if backend == "local" else None
    except SpecError as e:
        for problem in e.problems:
            click.echo(f"hpsearch create-sweep: error: {problem}", err=True)
        sys.exit(2)
    if chosen:
        click.echo(f"backend: {backend} ({_why_backend(backend, default_mode())})")
    project = project or defaults.project(config)
    if backend == "local":  # what each agent will build, built once here: a bad scheduler fails now, storing nothing
        from hpsearch.sweep.engine import EngineError, engine_for
        from hpsearch.sweep.store import Sweep, new_id

        named = {"project": project, **({"entity": entity} if entity else {})}  # where its trials' runs go
        sweep = Sweep(new_id(), name or config.get("name") or "", "local", {**config, **named}, 0.0, False, None,
                      code)  # fmt: skip
        try:
            engine_for(sweep)
        except EngineError as e:
            click.echo(f"hpsearch create-sweep: error: {file}: {e}", err=True)
            sys.exit(2)
        told = _read_priors(list(priors), config, store_dir, db)
    elif priors:
        click.echo("hpsearch create-sweep: error: --prior: a W&B server's sweep keeps its own runs; allowed: "
                   "--backend local", err=True)  # fmt: skip
        sys.exit(2)
    elif _pauses(config):
        click.echo(f"hpsearch create-sweep: error: {file}: its scheduler pauses and promotes trials, which a W&B "
                   "server's sweep cannot (a run does not resume inside a W&B sweep); allowed: --backend local, whose "
                   "trials still log live W&B runs", err=True)  # fmt: skip
        sys.exit(2)
    store = _store("create-sweep", store_dir, db)  # before the W&B server: a bad --db registers nothing
    if backend == "wandb":
        from hpsearch.sweep.wandb_server import ServerError
        from hpsearch.sweep.wandb_server import create_sweep as create_remote

        try:
            remote = create_remote(config, project, entity)
        except ServerError as e:
            click.echo(f"hpsearch create-sweep: error: {e}", err=True)
            sys.exit(1)
        store.add_sweep(config, "wandb", name, remote=remote, sweep_id=remote.split("/")[-1])
        click.echo(f"created W&B sweep {remote}")
        if config.get("method") == "custom":  # W&B's rule: one scheduler process per sweep
            click.echo(f"the search runs in: wandb sweep-scheduler {remote}  (one per sweep; the trials in the agents)")
        sweep_id = remote  # the form the W&B UI and `wandb agent` use; the store knows it by its last part too
    else:
        from hpsearch.sweep.prior import add_sweep

        sweep_id = add_sweep(store, sweep.config, name, sweep.id, code, told).id
        told_line = f", told {len(told)} prior results" * bool(told)
        click.echo(f"created local sweep {sweep_id} in {store.where}{told_line}")
    options = ("" if str(store_dir) == "hpsearch-runs" else f" --dir {store_dir}") + (" --db URL" if db else "")
    click.echo(f"run it with: hpsearch agent {sweep_id}{options}")
    click.echo(sweep_id)


def _pauses(config: dict[str, Any]) -> bool:
    """Whether the sweep's search pauses trials (a promotion scheduler), where its scheduler's source can be read
    here; a W&B server reads it on the scheduler's own machine, so one that cannot be is not judged."""
    from hpsearch.sweep.engine import EngineError, engine_for
    from hpsearch.sweep.spec import SpecError, read_code
    from hpsearch.sweep.store import Sweep

    if config.get("method") != "custom":
        return False
    try:
        sweep = Sweep("check", "", "local", config, 0.0, False, None, read_code(config))
        return engine_for(sweep).pauses
    except (SpecError, EngineError):
        return False


@main.command()
@click.argument("sweep_id")
@click.option("--gpus", type=int, help="Use the first N visible GPUs (default: all visible).")
@click.option("--gpu-ids", help="Use these GPUs, e.g. 0,1,2,3.")
@click.option("--gpus-per-trial", type=int, help="GPUs per trial (default: all of them, one trial at a time).")
@click.option(
    "--nodes-per-trial",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Nodes per trial, inside a SLURM allocation of that many: one torchrun per node, started by srun.",
)
@click.option("--cpu-procs", type=int, default=1, show_default=True, help="gloo workers per trial with no GPU.")
@click.option("--count", type=int, help="Run at most N trials, then stop.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=defaults.GRACE,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL.",
)
@click.option(
    "--hang-timeout",
    type=click.FloatRange(min=1),
    default=defaults.HANG_TIMEOUT,
    show_default=True,
    help=f"End a trial that records no new epoch for this many seconds, or {defaults.HANG_EPOCHS}x its slowest "
    f"epoch if longer ({defaults.FIRST_EPOCH_FACTOR}x that before its first epoch, which compiles); it is "
    "recorded failed.",
)
@click.option(
    "--max-resumes",
    type=click.IntRange(min=0),
    default=defaults.MAX_RESUMES,
    show_default=True,
    help="Resume a trial whose agent died (from its checkpoint) at most this many times (local sweeps: on a W&B "
    "server, the server decides what runs again).",
)
@store_options
@click.pass_context
def agent(ctx: click.Context, sweep_id: str, store_dir: Path, db: str | None, **options: object) -> None:
    """Run the sweep's trials, one torchrun process group each, until it is done (or --count)."""
    from hpsearch.sweep.controller import Lost
    from hpsearch.sweep.engine import EngineError
    from hpsearch.sweep.runner import AgentError, AgentOptions, run_agent
    from hpsearch.sweep.slots import SlotError
    from hpsearch.sweep.wandb_server import ServerError
    from hpsearch.train.fetch import DataError

    store, sweep = _open_sweep("agent", store_dir, db, sweep_id, remote_ok=True)
    given = frozenset(k for k in options if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT)
    gave_up: list[str] = []

    def fail(why: str) -> None:
        gave_up.append(why)
        click.echo(f"hpsearch agent: error: {why}", err=True)

    try:
        code = run_agent(store, sweep, AgentOptions(**options, given=given), click.echo, fail)
    except (AgentError, SlotError) as e:
        raise click.UsageError(str(e)) from None
    except (EngineError, DataError) as e:  # (on each agent's machine: a package it lacks, a source that fails there)
        click.echo(f"hpsearch agent: error: {e}", err=True)
        sys.exit(2)
    except ServerError as e:
        click.echo(f"hpsearch agent: error: {e}", err=True)
        sys.exit(1)
    except Lost:  # (its line is out) skip wandb's exit handlers: they would retry uploading the runs for days
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    if not gave_up:  # the sweep's table as it now stands (after giving up, its one line says it all)
        _print_table(store, sweep.id)
    sys.exit(code)


@main.command()
@click.argument("sweep_id")
@click.option("--nodes", type=click.IntRange(min=1), required=True, help="Nodes in all, for all the agents.")
@click.option("--gpus-per-node", type=click.IntRange(min=1), help="GPUs to ask SLURM for on each node.")
@click.option("--gpus-per-trial", type=click.IntRange(min=1), help="GPUs per trial (default: a node's).")
@click.option("--nodes-per-trial", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes per trial.")
@click.option("--cpu-procs", type=int, default=1, show_default=True, help="gloo workers per node with no GPU.")
@click.option("--cpus-per-node", type=click.IntRange(min=1), help="Cores to ask SLURM for on each node.")
@click.option("--time", "time_limit", help="Each job's time limit, as sbatch takes it (e.g. 4:00:00).")
@click.option("--partition", help="SLURM partition.")
@click.option("--account", help="SLURM account.")
@click.option(
    "--warning",
    type=click.IntRange(min=10),
    default=defaults.SLURM_WARNING,
    show_default=True,
    help="Seconds before the time limit at which the agents preempt their trials and requeue their job.",
)
@click.option("--sbatch-arg", "sbatch_args", multiple=True, metavar="ARG", help="More sbatch options, e.g. --qos=high.")
@click.option("--grace", type=click.FloatRange(min=0), help="The agents' --grace.")
@click.option("--hang-timeout", type=click.FloatRange(min=1), help="The agents' --hang-timeout.")
@click.option("--max-resumes", type=click.IntRange(min=0), help="The agents' --max-resumes.")
@click.option("--dry-run", is_flag=True, help="Print the batch script; submit nothing.")
@store_options
def slurm(
    sweep_id: str,
    store_dir: Path,
    db: str | None,
    grace: float | None,
    hang_timeout: float | None,
    max_resumes: int | None,
    dry_run: bool,
    **options: object,
) -> None:
    """Run the sweep on a SLURM cluster: a job array of agents, one per --nodes-per-trial nodes, requeued on
    preemption or at the time limit."""
    from hpsearch.sweep import slurm as slurm_jobs
    from hpsearch.sweep.agent import grace_error
    from hpsearch.sweep.slots import SlotError, check_spanning

    store, sweep = _open_sweep("slurm", store_dir, db, sweep_id, remote_ok=True)
    nodes, per_trial = options["nodes"], options["nodes_per_trial"]
    try:
        check_spanning(per_trial, options["gpus_per_trial"])
    except SlotError as e:
        raise click.UsageError(str(e)) from None
    if nodes % per_trial:
        raise click.UsageError(f"--nodes: {nodes} is not a multiple of --nodes-per-trial {per_trial}")
    if why := grace_error(defaults.GRACE if grace is None else grace):  # (the job's agents see this environment)
        raise click.UsageError(why)
    if not store.postgres and nodes > per_trial:
        click.echo(f"hpsearch slurm: error: --nodes {nodes}: agents on several nodes cannot share the SQLite store "
                   f"{store.where}; keep the sweep in PostgreSQL (--db postgresql://USER@HOST/DBNAME; see "
                   "docs/many-machines.md)", err=True)  # fmt: skip
        sys.exit(2)
    if not store.postgres:
        click.echo(f"hpsearch slurm: warning: its agent writes the SQLite store {store.where} from a compute node; "
                   "read it there (status, report) or keep the sweep in PostgreSQL: SQLite is not safe across "
                   "machines", err=True)  # fmt: skip
    passed = {"grace": grace, "hang-timeout": hang_timeout, "max-resumes": max_resumes}
    agent_args = [f"--{k}={v}" for k, v in passed.items() if v is not None]
    job = slurm_jobs.Job(sweep.id, store_dir, agent_args=tuple(agent_args), **options)
    if dry_run:
        click.echo(job.script(), nl=False)
        return
    job.log_dir.mkdir(parents=True, exist_ok=True)
    path = job.log_dir / "agents.sbatch"
    path.write_text(job.script())
    env = dict(os.environ, **({"HPSEARCH_DB": db} if db else {}))  # sbatch exports it to the job; never in a file
    try:
        job_id = slurm_jobs.submit(path, env)
    except slurm_jobs.SlurmError as e:
        click.echo(f"hpsearch slurm: error: {e}", err=True)
        sys.exit(1)
    click.echo(f"wrote {path}")
    click.echo(f"submitted SLURM job {job_id}: {job.tasks} agent(s), {per_trial} node(s) each")
    click.echo(f"watch it:  squeue -j {job_id};  hpsearch status {sweep_id};  tail -f {job.log_dir}/{job_id}_*.out")
    click.echo(f"cancel it: scancel {job_id}  (its trials are recorded preempted; `sbatch {path}` resumes them)")
    click.echo(job_id)


def _default_backend(config: dict, wandb_mode: str) -> str:
    """The W&B server with a login, but the local controller for a `method: custom` sweep: on a server its search
    runs only in a `wandb sweep-scheduler` process that someone must start (one per sweep), where the local
    controller runs it inside the agents, exactly once per sweep through the store; its trials' runs still go to
    the W&B server, live."""
    return "wandb" if wandb_mode == "online" and config.get("method") != "custom" else "local"


def _why_backend(backend: str, wandb_mode: str) -> str:
    if backend == "wandb":
        return "a W&B login is configured"
    if wandb_mode == "online":
        return ("method: custom runs its search in the agents; each trial logs a live W&B run; `--backend wandb` "
                "registers it on the W&B server, where it needs `wandb sweep-scheduler`")  # fmt: skip
    return "no W&B login: runs are kept offline for `hpsearch sync`; run `wandb login` for a server"


def _print_table(store: Store, sweep_id: str) -> None:
    """The sweep's table as the agent ends, or one line if the database cannot give it now."""
    from hpsearch.sweep.status import format_status, status
    from hpsearch.sweep.store import StoreError

    try:
        click.echo(format_status(status(store, store.sweep(sweep_id))))
    except StoreError as e:
        click.echo(f"hpsearch agent: warning: no table of the sweep: {e}", err=True)


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
    from hpsearch.report import report

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
    from hpsearch.sync import SyncError, sync

    store, sweep = _open_sweep("sync", store_dir, db, sweep_id)
    try:
        code = sync(store, sweep, project, entity, echo=click.echo)
    except SyncError as e:
        click.echo(f"hpsearch sync: error: {e}", err=True)
        sys.exit(1)
    sys.exit(code)


@main.command()
@click.argument("sweep_files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--curves",
    "source",
    metavar="SOURCE",
    help="The recorded curves: lcbench:TASK (YAHPO Gym's LCBench surrogate; needs hpsearch[simulate] and --data), "
    "FILE.jsonl (a curve table), or sweep:SWEEP_ID (the trials of a sweep in --dir/--db).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HPSEARCH_YAHPO_DATA",
    help="YAHPO Gym's data folder, for lcbench:TASK (env HPSEARCH_YAHPO_DATA; default, in a checkout: the copy of "
    "its LCBench files in benchmarks/yahpo_data).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Trials run at once.")
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    help="Epochs summed over all trials (default: what running every curve of a table once costs; for LCBench "
    "6,544, YAHPO Gym's protocol).",
)
@click.option("--seeds", type=click.IntRange(min=1), default=10, show_default=True, help="Replays, seeds 0..K-1.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per sweep file.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write a page of the incumbent curves."
)
@click.option("--export-curves", "export", metavar="SWEEP_ID", help="Print a sweep's trials as a curve table (JSONL).")
@store_options
def simulate(
    sweep_files: tuple[Path, ...],
    source: str | None,
    data: Path | None,
    workers: int,
    budget: int | None,
    seeds: int,
    as_json: bool,
    output: Path | None,
    export: str | None,
    store_dir: Path,
    db: str | None,
) -> None:
    """Replay the searches of SWEEP_FILE... on recorded learning curves with a simulated clock, with the decisions
    `hpsearch agent` would make, and compare what each finds within the budget."""
    if export:
        from hpsearch.simulate.curves import export_lines

        click.echo("\n".join(export_lines(*_open_sweep("simulate", store_dir, db, export))))
        return
    if not sweep_files or not source:
        raise click.UsageError("give SWEEP_FILE... and --curves SOURCE (or --export-curves SWEEP_ID)")
    import tempfile

    from hpsearch.objective import Objective
    from hpsearch.simulate import replay, results
    from hpsearch.simulate.curves import SourceError, open_source
    from hpsearch.sweep.engine import EngineError
    from hpsearch.sweep.spec import SpecError, load_spec, read_code

    def fail(line: str) -> None:
        click.echo(f"hpsearch simulate: error: {line}", err=True)
        sys.exit(2)

    try:
        curves = open_source(source, data, lambda sweep_id: _open_sweep("simulate", store_dir, db, sweep_id))
        configs = {str(f): load_spec(f, curves.target()) for f in sweep_files}
        codes = {name: read_code(config) for name, config in configs.items()}
    except SourceError as e:
        fail(str(e))
    except SpecError as e:
        for problem in e.problems[:-1]:
            click.echo(f"hpsearch simulate: error: {problem}", err=True)
        fail(e.problems[-1])
    first, objective = None, None
    for name, config in configs.items():
        if not isinstance(config.get("metric"), dict):
            fail(f"{name}: metric: a replay needs the metric {{name, goal}} it compares searches by")
        given = Objective.of(config["metric"])
        if objective and given != objective:
            fail(f"{name}: metric: {given.as_dict()} is not {first}'s {objective.as_dict()}; allowed: searches "
                 "compared by one metric")  # fmt: skip
        first, objective = first or name, objective or given
    budget = budget or curves.budget()
    with tempfile.TemporaryDirectory() as tmp:  # the replays' own store: nothing of the user's is written
        try:
            found, reference = replay.compare(Path(tmp), configs, curves, workers, budget, seeds, codes)
        except EngineError as e:
            fail(str(e))
    if as_json:
        for result in found:
            click.echo(json.dumps(results.to_json(result, source, budget, workers)))
    else:
        click.echo(results.table(found, reference, budget, objective))
    if output:
        page = results.render_page(found, reference, source, budget, workers, objective)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page, encoding="utf-8")
        click.echo(f"wrote {output}", err=as_json)


def _store(command: str, store_dir: Path, db: str | None) -> Store:
    """The store, or one line naming what is wrong with its database and exit 2."""
    from hpsearch.sweep.store import Store, StoreError

    try:
        return Store(store_dir, db)
    except StoreError as e:
        click.echo(f"hpsearch {command}: error: {e}", err=True)
        sys.exit(2)


def _read_priors(sources: list[str], config: dict, store_dir: Path, db: str | None) -> list:
    """The results the --prior sources tell the new sweep, or one line and exit 2 (a store is opened only if one
    exists: a bad source creates nothing)."""
    from hpsearch.sweep.prior import PriorError, read_priors
    from hpsearch.sweep.store import store_exists

    if not sources:
        return []
    store = _store("create-sweep", store_dir, db) if store_exists(store_dir, db) else None
    try:
        return read_priors(sources, config, store)
    except PriorError as e:
        click.echo(f"hpsearch create-sweep: error: {e}", err=True)
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
        from hpsearch.sweep.wandb_server import ServerError, mirror_sweep

        try:
            sweep = mirror_sweep(store, sweep_id)
        except ServerError as e:
            click.echo(f"hpsearch {command}: error: {e}", err=True)
            sys.exit(1)
    if sweep is None:
        hint = "; a W&B sweep made elsewhere needs its full path ENTITY/PROJECT/ID" if remote_ok else ""
        where = store.where if store else store_dir
        raise click.UsageError(f"no sweep {sweep_id!r} in {where}; create one with `hpsearch create-sweep FILE`{hint}")
    return store, sweep


if __name__ == "__main__":
    main()
