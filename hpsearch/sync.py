"""`hpsearch sync`: upload a local sweep's W&B runs that W&B does not have yet, with `wandb sync`.

Each trial of a local sweep logs a run into STORE/SWEEP_ID/wandb with group = the sweep id and name = id = the trial
id: offline without a W&B login (or when the server did not answer as it started), else online, live. An online run
whose end the server did not take in time leaves UNCONFIRMED in its trial's folder, naming the run's folder. Once
uploaded, the W&B UI shows the sweep's trials as one group.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from hpsearch.defaults import UNCONFIRMED
from hpsearch.sweep.store import ACTIVE, Store, Sweep
from hpsearch.wandb_env import api_key_configured


class SyncError(Exception):
    """Nothing was uploaded; the message says what to do instead."""


def unsynced_runs(store: Store, sweep: Sweep) -> tuple[list[Path], int]:
    """The run folders of the sweep's ended trials that W&B does not have: offline runs and unconfirmed online ones,
    less those `wandb sync` has marked synced; and how many were left out because their trial is still running or
    will resume (its run is still being written)."""
    trials = store.trials(sweep.id)
    active = {t.id for t in trials if t.state in ACTIVE}
    runs = sorted((store.root / sweep.id / "wandb").glob("offline-run-*"))
    marks = (store.trial_dir(t) / UNCONFIRMED for t in trials)
    runs += [Path(m.read_text().strip()) for m in marks if m.is_file()]
    runs = [r for r in runs if not any(r.glob("*.wandb.synced"))]
    # [offline-]run-DATE_TIME-TRIALID
    ended = [r for r in runs if r.name.removeprefix("offline-").split("-", 2)[-1] not in active]
    return ended, len(runs) - len(ended)


def sync(
    store: Store,
    sweep: Sweep,
    project: str | None = None,
    entity: str | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Upload the ended trials' runs that W&B lacks (to `project`/`entity`, else where each run says); return
    `wandb sync`'s exit code. Raises SyncError, having touched nothing, when there is nothing to upload or
    no W&B login."""
    if sweep.backend == "wandb":
        raise SyncError(f"sweep {sweep.id} ran on the W&B server ({sweep.remote}); its runs are there already")
    runs, left_out = unsynced_runs(store, sweep)
    if not runs:
        raise SyncError(f"no W&B runs of ended trials left to upload in {store.root / sweep.id / 'wandb'}")
    options = [*(["--project", project] if project else []), *(["--entity", entity] if entity else [])]
    if not api_key_configured():
        again = shlex.join(["hpsearch", "sync", sweep.id, *options, "--dir", str(store.root)])
        raise SyncError(f"no W&B login on this machine; run `wandb login` (or set WANDB_API_KEY), then `{again}`")
    if left_out:
        echo(f"leaving out {left_out} run(s) of trials still running; run `hpsearch sync` again once they end")
    command = [sys.executable, "-m", "wandb", "sync", "--include-online", *options, *map(str, runs)]
    code = subprocess.run(command).returncode
    if code == 0:
        echo(f"uploaded {len(runs)} run(s); in the W&B UI they are the runs of group {sweep.id}")
    return code
