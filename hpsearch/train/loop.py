"""One trial, top to bottom: setup, DDP, the epoch loop, evaluation, checkpoints.

Runs the same as a single process (`hpsearch train`) and as torchrun workers
(`torchrun --nproc_per_node=N -m hpsearch.train`): rank, world size and local rank come from
torchrun's environment. Everything that can be wrong with the inputs (flags, batch split, data,
model) is checked before the process group starts, so a bad trial fails at once with exit code 2
and one line on stderr. Only rank 0 logs.

With `cooldown_at` (sched wsd), the end of each such rung epoch branches: a short cooldown from the stable
state is trained and evaluated (the rung's value), then the stable state is put back exactly and the run goes on
as if it had never branched.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, get_optimizer_info
from torch.nn.parallel import DistributedDataParallel as DDP

from hpsearch.params import ParamError, TrainConfig, cooldown_epochs, parse_args
from hpsearch.train import CHECKPOINT
from hpsearch.train.augment import train_batches
from hpsearch.train.data import DataError, Split, ToDevice, load_dataset
from hpsearch.train.metrics import TrialLog, WriteError, error
from hpsearch.train.model import ModelError, build_model
from hpsearch.train.schedule import make_scheduler

CHECK_EVERY = 25  # steps between finiteness checks of the loss; each check waits for the GPU


class SetupError(Exception):
    """An impossible combination of settings (batch split, device); the message names the key."""


class Diverged(Exception):
    """The loss became NaN or infinite."""


def main(argv: list[str]) -> int:
    """Entry point of `python -m hpsearch.train` and `hpsearch train`: returns the exit code."""
    try:
        run(parse_args(argv))
    except (ParamError, DataError, ModelError, SetupError) as e:
        error(str(e))  # on every rank: the first to exit gets the others killed before they can speak
        return 2
    except (Diverged, WriteError) as e:
        error(str(e))
        return 1
    return 0


@dataclass
class Training:
    """Everything `setup` builds for one trial, named once: who this process is (`primary`: rank 0, the only
    one that logs and saves; `distributed`: more than one rank) and what it trains with."""

    cfg: TrainConfig
    rank: int
    world: int
    primary: bool
    distributed: bool
    device: torch.device
    amp: bool
    local_bs: int
    model: nn.Module  # the bare model: its state_dict is what checkpoints hold
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batches: Any  # LoaderBatches | DeviceBatches
    steps: int  # per epoch
    prepare: ToDevice
    val_x: torch.Tensor  # this rank's shard of the validation set, on the device
    val_y: torch.Tensor
    test: Split  # the test set, measured once at the end (the validation set itself when val_split is 0)
    mixup: Mixup | None
    eraser: RandomErasing | None
    loss_fn: nn.Module
    fwd: nn.Module | None = None  # compiled (on CUDA) bare model, for evaluation: no collective inside eval
    train_model: nn.Module | None = None  # fwd, wrapped in DDP when distributed


@dataclass
class Progress:
    """Where the trial stands: restored from a checkpoint, advanced by every epoch."""

    epoch: int = 0  # epochs done
    best_acc: float = 0.0
    best_epoch: int = 0
    wandb_id: str | None = None
    train_time: float = 0.0
    train_images: int = 0
    last: dict[str, float] = field(default_factory=dict)  # the last epoch's metrics, for the summary
    rungs: list[dict[str, Any]] = field(default_factory=list)  # the rung records so far
    lines: list[dict[str, Any]] = field(default_factory=list)  # the metrics lines of the last epoch (and its rung)


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train one trial; return (and print, on rank 0) its summary."""
    t_start = time.time()
    trial = setup(cfg)
    progress = resume(trial, Path(cfg.output_dir) / CHECKPOINT)
    compile_and_wrap(trial)
    log = TrialLog(cfg, progress.epoch, progress.wandb_id, progress.lines) if trial.primary else None
    writer = CheckpointWriter(Path(cfg.output_dir) / CHECKPOINT) if trial.primary else None
    summary: dict[str, Any] = {}
    try:
        for epoch in range(progress.epoch, cfg.epochs):
            t0 = time.perf_counter()
            train_loss, t_train = train_one_epoch(trial, epoch)
            val_loss, val_acc, val_acc5 = evaluate(
                trial.fwd, trial.val_x, trial.val_y, trial.prepare, trial.local_bs, trial.amp, trial.world
            )
            progress.epoch = epoch + 1
            if val_acc > progress.best_acc or progress.best_epoch == 0:
                progress.best_acc, progress.best_epoch = val_acc, epoch + 1
            progress.train_time += t_train
            progress.train_images += trial.steps * cfg.batch_size
            rung = None
            if epoch + 1 in cfg.rungs:  # before the checkpoint: one that holds this epoch holds its rung too
                rung = rung_record(trial, epoch + 1, (train_loss, val_loss, val_acc, val_acc5))
                progress.rungs.append(rung)
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "val_acc5": val_acc5,
                "best_acc": progress.best_acc,
                "lr": trial.optimizer.param_groups[0]["lr"],
                "epoch_time": time.perf_counter() - t0 - (rung["rung_time"] if rung else 0.0),
                "img_per_sec": trial.steps * cfg.batch_size / t_train,
            }
            progress.lines = [record, *([rung] if rung else [])]
            # The record once its checkpoint is on disk: an agent that reads epoch k and ends the process (a
            # pause, a preemption) resumes it at epoch k + 1, never training or recording an epoch twice (and one
            # ended between the two gets the record from the checkpoint when it resumes: TrialLog).
            save_checkpoint(trial, progress, writer, log, then=functools.partial(log.epoch, record, cfg.epochs, rung)
                            if log else None)  # fmt: skip
            progress.last = {k: record[k] for k in ("val_acc", "val_acc5", "val_loss", "train_loss")}
        if writer:
            writer.wait()
        test = dict(zip(("test_loss", "test_acc", "test_acc5"), evaluate_test(trial), strict=True))
        summary = {
            "best_acc": progress.best_acc,
            "best_epoch": progress.best_epoch,
            "epochs": cfg.epochs,
            "world_size": trial.world,
            "img_per_sec": progress.train_images / progress.train_time if progress.train_time else 0.0,
            "wall_s": time.time() - t_start,
            **progress.last,
            **test,
            **({"rungs": progress.rungs} if cfg.rungs else {}),
        }
        if log:
            log.finish(summary)
    except BaseException:
        if log:
            log.finish(summary, exit_code=1)
        raise
    finally:
        if trial.distributed:
            dist.destroy_process_group()
    return summary


def setup(cfg: TrainConfig) -> Training:
    """Check the inputs (before any process group exists, so a bad trial fails at once), then build the data
    path, model, process group, optimizer, schedule and loss for this rank (torchrun's environment)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    primary, distributed = rank == 0, world > 1
    if cfg.batch_size % world:
        raise SetupError(
            f"batch_size: {cfg.batch_size} does not split across {world} ranks; allowed: a multiple of {world}"
        )
    local_bs = cfg.batch_size // world
    mixing = (cfg.cutmix > 0 or cfg.mixup > 0) and cfg.mixup_prob > 0
    if mixing and local_bs % 2:
        raise SetupError(f"batch_size: CutMix/MixUp pair images, so each rank's batch ({local_bs}) must be even")
    device = _device(cfg.device, local_rank)
    cuda = device.type == "cuda"
    _seed(cfg.seed + rank)
    data = load_dataset(cfg)
    if len(data.train) // world < local_bs:
        raise SetupError(
            f"batch_size: each rank needs {local_bs} training images per step but gets "
            f"{len(data.train) // world} of {len(data.train)}; lower batch_size or raise train_subset"
        )
    if len(data.val) < world:
        raise SetupError(f"val_subset: {len(data.val)} validation images cannot be shared by {world} ranks")
    model = build_model(cfg, data.num_classes)

    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    optimizer = make_optimizer(model, cfg)

    # The PIL path (loader workers) or the batched path (on the device), as `augment` picks.
    prepare = ToDevice(data, device, memory_format)
    batches, notice = train_batches(cfg, data, prepare, rank, world, local_bs)
    if notice and primary:
        print(f"hpsearch train: {notice}", file=sys.stderr, flush=True)
    steps = len(batches)
    mixup = None
    if mixing:
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            prob=cfg.mixup_prob,
            switch_prob=cfg.mixup_switch_prob,
            label_smoothing=cfg.smoothing,
            num_classes=data.num_classes,
        )
    val_x, val_y = _shard(data.val, rank, world, device)
    return Training(
        cfg=cfg,
        rank=rank,
        world=world,
        primary=primary,
        distributed=distributed,
        device=device,
        amp=cuda and cfg.amp,
        local_bs=local_bs,
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg, steps),
        batches=batches,
        steps=steps,
        prepare=prepare,
        val_x=val_x,
        val_y=val_y,
        test=data.test,
        mixup=mixup,
        eraser=RandomErasing(cfg.reprob, mode="pixel", device=str(device)) if cfg.reprob > 0 else None,
        loss_fn=SoftTargetCrossEntropy() if mixup else nn.CrossEntropyLoss(label_smoothing=cfg.smoothing),
    )


def _shard(split: Split, rank: int, world: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous shard of an evaluation set, on the device: every image counts exactly once."""
    lo, hi = len(split) * rank // world, len(split) * (rank + 1) // world
    images = torch.from_numpy(split.images[lo:hi]).permute(0, 3, 1, 2)
    return images.to(device), torch.from_numpy(split.labels[lo:hi]).to(device)


def evaluate_test(trial: Training) -> tuple[float, float, float]:
    """Loss, top-1 and top-5 on the test set, of the model as it ends: the one number a sweep never tuned on."""
    x, y = _shard(trial.test, trial.rank, trial.world, trial.device)
    return evaluate(trial.fwd, x, y, trial.prepare, trial.local_bs, trial.amp, trial.world)


def resume(trial: Training, ckpt_path: Path) -> Progress:
    """With `resume`, continue from the trial's checkpoint (model, optimizer, schedule, RNG and data-path
    state); an unreadable one is said in one line and the trial starts from epoch 0."""
    cfg, progress = trial.cfg, Progress()
    ckpt = read_checkpoint(ckpt_path, trial.model, trial.rank) if cfg.resume and ckpt_path.exists() else None
    if ckpt is not None:
        trial.model.load_state_dict(ckpt["model"])
        trial.optimizer.load_state_dict(ckpt["optimizer"])
        trial.scheduler.load_state_dict(ckpt["scheduler"])
        progress = Progress(ckpt["epoch"], ckpt["best_acc"], ckpt["best_epoch"], ckpt.get("wandb_id"))
        progress.rungs, progress.lines = ckpt.get("rungs", []), ckpt.get("lines", [])
        if len(ckpt["rng"]) == trial.world:
            _set_rng(ckpt["rng"][trial.rank])
            trial.batches.load_state_dict(ckpt["rng"][trial.rank].get("data", {}))
        if trial.primary:
            print(f"resumed from {ckpt_path} after epoch {progress.epoch}", flush=True)
    elif cfg.resume and trial.primary and not ckpt_path.exists():
        print(f"no checkpoint at {ckpt_path}: starting from epoch 0", flush=True)
    trial.scheduler.step_update(progress.epoch * trial.steps)
    return progress


def compile_and_wrap(trial: Training) -> None:
    """torch.compile on CUDA; DDP when distributed. Evaluation uses the bare (compiled) model, so no collective
    runs inside eval."""
    cuda, compile_ = trial.device.type == "cuda", trial.cfg.compile
    trial.fwd = torch.compile(trial.model) if cuda and compile_ else trial.model
    trial.train_model = trial.fwd
    if trial.distributed:
        trial.train_model = DDP(trial.model, device_ids=[trial.device] if cuda else None)
        if cuda and compile_:
            trial.train_model = torch.compile(trial.train_model)


def train_one_epoch(trial: Training, epoch: int) -> tuple[float, float]:
    """One pass over this rank's shard; (mean training loss across ranks, seconds it took)."""
    t0 = time.perf_counter()
    trial.batches.set_epoch(epoch)
    trial.train_model.train()
    losses = torch.zeros(trial.steps, device=trial.device)
    checked = 0
    for step, (x, y) in enumerate(trial.batches):
        if trial.mixup:
            x, y = trial.mixup(x, y)
        if trial.eraser:
            x = trial.eraser(x)
        with torch.autocast(trial.device.type, dtype=torch.bfloat16, enabled=trial.amp):
            loss = trial.loss_fn(trial.train_model(x), y)
        trial.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trial.optimizer.step()
        trial.scheduler.step_update(epoch * trial.steps + step + 1)
        losses[step] = loss.detach()
        if step + 1 - checked >= CHECK_EVERY or step + 1 == trial.steps:
            _check_finite(losses, checked, step + 1, epoch, trial.steps, trial.world)
            checked = step + 1
    t_train = time.perf_counter() - t0
    if trial.distributed:  # BN statistics drift apart per rank; evaluate (and save) rank 0's everywhere
        for buf in trial.model.buffers():
            dist.broadcast(buf, 0)
    return _mean_across_ranks(losses.mean(), trial.world), t_train


def rung_record(trial: Training, epoch: int, measured: tuple[float, float, float, float]) -> dict[str, Any]:
    """The value of the rung at the end of `epoch`: the cooled model's metrics (`measured`: this epoch's train and
    validation loss, top-1 and top-5). At the run's own end its cooldown is the branch; before, one is trained."""
    cfg, t0 = trial.cfg, time.perf_counter()
    cooldown = cooldown_epochs(cfg.cooldown_frac, epoch)
    if epoch < cfg.epochs:
        measured = cooldown_branch(trial, epoch, cooldown)
    keys = ("rung_train_loss", "rung_val_loss", "rung_val_acc", "rung_val_acc5")
    return {"rung": epoch, "rung_epochs": cooldown, **dict(zip(keys, measured, strict=True)),
            "rung_time": time.perf_counter() - t0}  # fmt: skip


def cooldown_branch(trial: Training, epoch: int, epochs: int) -> tuple[float, float, float, float]:
    """Train `epochs` epochs from the state at the end of `epoch` with the learning rate cooled from its value
    there to min_lr (the data order and augmentation draws of the epochs that follow), evaluate, and put the state
    back exactly: model, optimizer (its lr included), RNG and data path. The run's scheduler is never touched (the
    branch steps one of its own), so the run goes on as if it had never branched."""
    stable = {
        "model": copy.deepcopy(trial.model.state_dict()),
        "optimizer": copy.deepcopy(trial.optimizer.state_dict()),
        "rng": _rng_state(trial.device.type == "cuda"),
        "data": copy.deepcopy(trial.batches.state_dict()),
    }
    branch = dataclasses.replace(trial, scheduler=trial.scheduler.branch(epoch * trial.steps, epochs * trial.steps))
    try:
        for e in range(epoch, epoch + epochs):
            train_loss, _ = train_one_epoch(branch, e)
        val = evaluate(trial.fwd, trial.val_x, trial.val_y, trial.prepare, trial.local_bs, trial.amp, trial.world)
    finally:
        trial.model.load_state_dict(stable["model"])
        trial.optimizer.load_state_dict(stable["optimizer"])
        _set_rng(stable["rng"])
        trial.batches.load_state_dict(stable["data"])
    return train_loss, *val


def save_checkpoint(
    trial: Training,
    progress: Progress,
    writer: CheckpointWriter | None,
    log: TrialLog | None,
    then: Callable[[], None] | None = None,
) -> None:
    """Every rank's RNG state is gathered (a collective); the primary writes the checkpoint in the background, and
    calls `then` once it is in place."""
    rng = _gather_rng(trial.rank, trial.world, trial.device.type == "cuda", trial.batches.state_dict())
    if writer:
        writer.save(
            {
                "model": trial.model.state_dict(),
                "optimizer": trial.optimizer.state_dict(),
                "scheduler": trial.scheduler.state_dict(),
                "epoch": progress.epoch,
                "best_acc": progress.best_acc,
                "best_epoch": progress.best_epoch,
                "rungs": progress.rungs,
                "lines": progress.lines,
                "rng": rng,
                "config": trial.cfg.to_dict(),
                "wandb_id": log.wandb_id if log else None,
            },
            then,
        )


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """timm's optimizer factory; `nesterov` only for the optimizers that take it (timm's sgd defaults it on)."""
    extra = {"nesterov": cfg.nesterov} if "nesterov" in (get_optimizer_info(cfg.opt).defaults or {}) else {}
    return create_optimizer_v2(
        model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, **extra
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, prepare, batch: int, amp: bool, world: int = 1
) -> tuple[float, float, float]:
    """Loss, top-1 and top-5 accuracy (percent) over the validation shards of all ranks."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=x.device)  # loss sum, top-1, top-5, count
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for i in range(0, len(x), batch):
        xb, yb = prepare(x[i : i + batch]), y[i : i + batch]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(xb)
        logits = logits.float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5 == yb[:, None]
        totals += torch.stack(
            [
                loss_fn(logits, yb).double(),
                hits[:, 0].sum().double(),
                hits.any(1).sum().double(),
                torch.tensor(len(yb), dtype=torch.float64, device=x.device),
            ]
        )
    if world > 1:
        dist.all_reduce(totals)
    loss, top1, top5, n = totals.tolist()
    return loss / n, 100.0 * top1 / n, 100.0 * top5 / n


def read_checkpoint(path: Path, model: nn.Module, rank: int) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None when it cannot be used (truncated, not a checkpoint, another
    model's): then rank 0 says so in one line and the trial starts again from epoch 0, its first checkpoint
    replacing the bad file. Checked whole before anything is loaded, so a bad file changes no weights."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict) or "model" not in ckpt:
            raise ValueError("not an hpsearch checkpoint")
        expected = {k: v.shape for k, v in model.state_dict().items()}
        found = {k: getattr(v, "shape", None) for k, v in ckpt["model"].items()}
        if found != expected:
            wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
            raise ValueError(f"its model does not match this one (first difference: {wrong[0]})")
        missing = [k for k in ("optimizer", "scheduler", "epoch", "best_acc", "best_epoch", "rng") if k not in ckpt]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
    except Exception as e:  # torch.load and unpickling raise many types for a damaged file
        if rank == 0:
            reason = " ".join(str(e).split()) or type(e).__name__
            print(f"hpsearch train: warning: checkpoint {path} is unreadable ({reason[:200]}); starting again "
                  "from epoch 0", file=sys.stderr, flush=True)  # fmt: skip
        return None
    return ckpt


class CheckpointWriter:
    """Writes checkpoints in a background thread: the state is copied to host memory at once, and the
    disk write (hundreds of MB for ResNet-50 with momentum) overlaps the next epoch. The file is
    replaced atomically, so a kill mid-write leaves the previous checkpoint intact."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict[str, Any], then: Callable[[], None] | None = None) -> None:
        """Write `state` in the background; then call `then` there (its errors, as the write's, come out of wait)."""
        self.wait()
        host = _to_cpu(state)
        self._thread = threading.Thread(target=self._write, args=(host, then), daemon=True)
        self._thread.start()

    def _write(self, state: dict[str, Any], then: Callable[[], None] | None) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            # Serialised in memory first, so a failing write raises the OS's own error (torch.save's file
            # writer only says "file write failed").
            buffer = io.BytesIO()
            torch.save(state, buffer)
            with open(tmp, "wb") as fh:
                fh.write(buffer.getbuffer())
            os.replace(tmp, self.path)
            if then:
                then()
        except OSError as e:  # re-raised in the training thread by wait()
            tmp.unlink(missing_ok=True)
            self._error = WriteError(f"cannot write checkpoint {tmp}: {e.strerror or e}")
        except BaseException as e:
            self._error = e

    def wait(self) -> None:
        if self._thread:
            self._thread.join()
            self._thread = None
        if self._error:
            raise self._error


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _device(name: str, local_rank: int) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SetupError("device: 'cuda' but no GPU is visible; allowed: auto | cpu")
    if local_rank >= torch.cuda.device_count():
        raise SetupError(f"device: local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible)")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def _check_finite(losses: torch.Tensor, start: int, stop: int, epoch: int, steps: int, world: int) -> None:
    bad = (~torch.isfinite(losses[start:stop])).nonzero()
    first = torch.tensor([bad[0, 0].item() + start if len(bad) else steps], device=losses.device)
    if world > 1:  # all ranks must stop together, or the others hang in the next all-reduce
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
    if first.item() < steps:
        raise Diverged(
            f"diverged: non-finite training loss at epoch {epoch + 1}, step {first.item() + 1}/{steps}; "
            "try a lower lr or warmup"
        )


def _mean_across_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return value.item()


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(cuda: bool) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if cuda else None,
    }


def _set_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _gather_rng(rank: int, world: int, cuda: bool, data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every rank's RNG state, with its data path's (`data`), on rank 0 (so a resume with the same world size
    restores each)."""
    state = {**_rng_state(cuda), "data": data}
    if world == 1:
        return [state]
    out = [None] * world if rank == 0 else None
    dist.gather_object(state, out, dst=0)
    return out
