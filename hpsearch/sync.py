"""`hpsearch sync`: upload a local sweep's offline W&B runs with `wandb sync`.

Each trial of a local sweep writes an offline run into STORE/SWEEP_ID/wandb with group = the sweep id and
name = id = the trial id, so once uploaded the W&B UI shows the sweep's trials as one group.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from hpsearch.sweep.store import ACTIVE, Store, Sweep
from hpsearch.wandb_env import api_key_configured


class SyncError(Exception):
    """Nothing was uploaded; the message says what to do instead."""


def offline_runs(store: Store, sweep: Sweep) -> tuple[list[Path], int]:
    """The offline run folders of the sweep's ended trials, and how many runs were left out because their
    trial is still running or will resume (its run is still being written)."""
    active = {t.id for t in store.trials(sweep.id) if t.state in ACTIVE}
    runs = sorted((store.root / sweep.id / "wandb").glob("offline-run-*"))
    ended = [r for r in runs if r.name.split("-", 3)[-1] not in active]  # offline-run-DATE_TIME-TRIALID
    return ended, len(runs) - len(ended)


def sync(
    store: Store,
    sweep: Sweep,
    project: str | None = None,
    entity: str | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Upload the ended trials' offline runs (to `project`/`entity`, else where each run says); return
    `wandb sync`'s exit code. Raises SyncError, having touched nothing, when there is nothing to upload or
    no W&B login."""
    if sweep.backend == "wandb":
        raise SyncError(f"sweep {sweep.id} ran on the W&B server ({sweep.remote}); its runs are there already")
    runs, left_out = offline_runs(store, sweep)
    if not runs:
        raise SyncError(f"no offline W&B runs of ended trials in {store.root / sweep.id / 'wandb'}")
    options = [*(["--project", project] if project else []), *(["--entity", entity] if entity else [])]
    if not api_key_configured():
        again = shlex.join(["hpsearch", "sync", sweep.id, *options, "--dir", str(store.root)])
        raise SyncError(f"no W&B login on this machine; run `wandb login` (or set WANDB_API_KEY), then `{again}`")
    if left_out:
        echo(f"leaving out {left_out} run(s) of trials still running; run `hpsearch sync` again once they end")
    code = subprocess.run([sys.executable, "-m", "wandb", "sync", *options, *map(str, runs)]).returncode
    if code == 0:
        echo(f"uploaded {len(runs)} run(s); in the W&B UI they are the runs of group {sweep.id}")
    return code
