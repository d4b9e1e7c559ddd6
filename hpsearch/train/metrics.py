"""Where rank 0's metrics go: one console line per epoch, the metrics_file (JSON lines), a W&B run,
and the final JSON line on stdout that the agent and scripts read.

A rung's record (a cooldown branch's value, see loop.py) is told apart from an epoch's: in the metrics file a
line of its own keyed `rung` with no `epoch` (`{"rung": 10, "rung_epochs": 2, "rung_val_acc": ...}`), which no
reader of epochs takes for one; in W&B the keys `rung/val_acc`, ... plotted against `rung`, in the row of the
rung's epoch."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from hpsearch.defaults import FALLBACK_PROJECT, UNCONFIRMED, WANDB_FINISH_TIMEOUT
from hpsearch.params import TrainConfig
from hpsearch.wandb_env import default_mode

# What every epoch's record holds (the metric names a sweep can optimise and hyperband can watch).
RECORD_KEYS = ("val_acc", "best_acc", "val_acc5", "val_loss", "train_loss", "lr", "epoch_time", "img_per_sec", "epoch")
# What a rung's record holds beside `rung` (its epoch).
RUNG_KEYS = ("rung_val_acc", "rung_val_acc5", "rung_val_loss", "rung_train_loss", "rung_epochs", "rung_time")


class WriteError(Exception):
    """A checkpoint or metrics write failed (disk full, file size limit); the message names file and OS error."""


class TrialLog:
    def __init__(
        self, cfg: TrainConfig, start_epoch: int, wandb_id: str | None, last: list[dict[str, Any]] | None = None
    ):
        """`last`: the lines of `start_epoch` as its checkpoint holds them, for a file that lacks them."""
        self.metrics_path = Path(cfg.metrics_file) if cfg.metrics_file else None
        if self.metrics_path:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            _truncate_after(self.metrics_path, start_epoch, last or [])
        self.unconfirmed = Path(cfg.output_dir) / UNCONFIRMED
        mode = default_mode() if cfg.wandb == "auto" else cfg.wandb
        self.run = _start_run(cfg, mode, wandb_id) if mode != "disabled" else None
        if self.run:
            epoch_axis(self.run)

    @property
    def wandb_id(self) -> str | None:
        return self.run.id if self.run else None

    def epoch(self, rec: dict[str, Any], epochs: int, rung: dict[str, Any] | None = None) -> None:
        """An epoch's record, and the record of the rung at its end if it is one."""
        print(
            f"epoch {rec['epoch']}/{epochs}  train_loss {rec['train_loss']:.4f}  val_loss {rec['val_loss']:.4f}  "
            f"val_acc {rec['val_acc']:.2f}  best {rec['best_acc']:.2f}  lr {rec['lr']:.4g}  "
            f"{rec['img_per_sec']:,.0f} img/s  {rec['epoch_time']:.1f}s",
            flush=True,
        )
        if rung:
            print(
                f"rung {rung['rung']}  cooled over {rung['rung_epochs']} epochs  val_loss {rung['rung_val_loss']:.4f}  "
                f"val_acc {rung['rung_val_acc']:.2f}  {rung['rung_time']:.1f}s",
                flush=True,
            )
        if self.metrics_path:
            try:
                with open(self.metrics_path, "a") as fh:
                    fh.write("".join(json.dumps(r) + "\n" for r in (rec, rung) if r))
            except OSError as e:
                raise WriteError(f"cannot write metrics file {self.metrics_path}: {e.strerror or e}") from None
        if self.run:
            log_epoch(self.run, {**rec, **wandb_rung(rung)} if rung else rec)

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        if self.run:
            self.run.summary.update(summary)
            try:
                self.run.finish(exit_code=exit_code)
            except TimeoutError:  # the data is on disk; the trial does not fail for the server
                self.unconfirmed.write_text(self.run.settings.sync_dir)
                warning(f"W&B did not take all of run {self.run.id} within {WANDB_FINISH_TIMEOUT:g} s; its data is "
                        "on disk: `hpsearch sync SWEEP_ID` uploads it once the server answers")  # fmt: skip
        if exit_code == 0:
            print(json.dumps(summary), flush=True)


def _start_run(cfg: TrainConfig, mode: str, wandb_id: str | None) -> Any:
    """The trial's W&B run; offline when an online one cannot start (the server does not answer), so that the trial
    never fails for W&B and `hpsearch sync` uploads the run later."""
    import wandb  # only when logging: it is slow to import, and absent on some GPU images

    def start(mode: str) -> Any:
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT", FALLBACK_PROJECT),
            config=cfg.to_dict(),
            mode=mode,
            dir=os.environ.get("WANDB_DIR") or cfg.output_dir,  # a sweep agent gathers its trials' runs
            id=wandb_id,
            resume="allow" if wandb_id or os.environ.get("WANDB_RUN_ID") else None,  # (a resumed trial's run)
            settings=wandb.Settings(finish_timeout=WANDB_FINISH_TIMEOUT, finish_timeout_raises=True),
        )

    if mode != "online":
        return start(mode)
    try:
        return start("online")
    except Exception as e:  # wandb raises CommError, UsageError or a timeout for a server that does not answer
        warning(f"W&B run not started online ({' '.join(str(e).split())[:200]}); it is kept offline: "
                "`hpsearch sync SWEEP_ID` uploads it")  # fmt: skip
        return start("offline")


def epoch_axis(run: Any) -> None:
    """Plot every metric of the W&B run against `epoch` (the x axis in the UI and sweep panels), the rungs' against
    `rung` (named one by one: a name outranks the glob)."""
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")
    run.define_metric("rung")
    for key in RUNG_KEYS:
        run.define_metric(wandb_key(key), step_metric="rung")


def wandb_key(key: str) -> str:
    """A rung record's key in W&B: rung_val_acc -> rung/val_acc (W&B's UI groups a section per prefix)."""
    return "rung/" + key.removeprefix("rung_")


def wandb_rung(rung: dict[str, Any]) -> dict[str, Any]:
    return {"rung": rung["rung"], **{wandb_key(k): rung[k] for k in RUNG_KEYS}}


def log_epoch(run: Any, rec: dict[str, Any]) -> None:
    """One history row per epoch, sent now: without commit=True wandb holds a row until the next step arrives,
    so the server (its hyperband, the UI) would see every epoch one epoch late."""
    run.log(rec, step=rec["epoch"], commit=True)


def _truncate_after(path: Path, epoch: int, last: list[dict[str, Any]]) -> None:
    """Drop lines of epochs (and rungs) a resumed trial will run again (written after its last checkpoint), and add
    the checkpoint's own epoch's lines (`last`) if the process ended between its checkpoint and its record, so that
    no epoch goes unrecorded. The file is replaced, not rewritten in place, so a reader tailing it sees a new file
    and starts over."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    kept = [line for line in lines if _epoch_of(line) <= epoch]
    if last and not any(_epoch_of(line) == epoch for line in kept):
        kept += [json.dumps(r) + "\n" for r in last]
    if not path.exists() and not kept:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _epoch_of(line: str) -> float:
    try:
        record = json.loads(line)
        return record["epoch"] if "epoch" in record else record["rung"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a torn last line: drop it


def error(message: str) -> None:
    print(f"hpsearch train: error: {message}", file=sys.stderr, flush=True)


def warning(message: str) -> None:
    print(f"hpsearch train: warning: {message}", file=sys.stderr, flush=True)
