"""Learning-rate schedules, stepped every update: timm's by name, and wsd (warmup-stable-decay) with its
cooldown branches.

wsd warms up as timm's schedules do (linearly from warmup_lr over warmup_epochs), holds the peak lr, and cools
down to min_lr over the last ceil(cooldown_frac x epochs) epochs, linearly or as 1-sqrt (the two cooldowns of
Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"). A cooldown
branch at a rung is the same cooldown started there, from the lr the run has there. Recent timm has a
WSDLRScheduler, the timm >= 1.0.9 that hpsearch supports has none: this is a small subclass of timm's Scheduler,
so checkpoints and step_update work as for timm's own.
"""

from __future__ import annotations

import math

import torch
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from hpsearch.params import TrainConfig, cooldown_epochs


class WarmupStableDecay(Scheduler):
    """Linear warmup over `warmup_t` updates, the peak lr, then a cooldown to `lr_min` from update `decay_start`
    to `decay_end` (`shape`: linear | 1-sqrt); `lr_min` after. `peak` defaults to the optimizer's lr."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        decay_start: int,
        decay_end: int,
        lr_min: float,
        shape: str,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        peak: list[float] | None = None,
    ):
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=False)
        if peak is not None:
            self.base_values = list(peak)
        self.decay_start, self.decay_end, self.lr_min, self.shape = decay_start, decay_end, lr_min, shape
        self.warmup_t, self.warmup_lr_init = warmup_t, warmup_lr_init
        self.update_groups(self._get_lr(0))

    def _get_lr(self, t: int) -> list[float]:
        if t < self.warmup_t:
            return [self.warmup_lr_init + (peak - self.warmup_lr_init) * t / self.warmup_t for peak in self.base_values]
        done = min(max(t - self.decay_start, 0) / (self.decay_end - self.decay_start), 1.0)
        left = 1.0 - done if self.shape == "linear" else 1.0 - math.sqrt(done)
        return [self.lr_min + (peak - self.lr_min) * left for peak in self.base_values]

    def branch(self, start: int, length: int) -> WarmupStableDecay:
        """The cooldown branch from update `start`: this schedule's lr there, cooled to lr_min over `length`
        updates in the same shape. A schedule of its own: this one is left as it was."""
        return WarmupStableDecay(
            self.optimizer, start, start + length, self.lr_min, self.shape, peak=self._get_lr(start)
        )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> Scheduler:
    """The schedule `sched` names, stepped every update (`steps` per epoch)."""
    if cfg.sched == "wsd":
        total = cfg.epochs * steps
        return WarmupStableDecay(
            optimizer,
            decay_start=total - cooldown_epochs(cfg.cooldown_frac, cfg.epochs) * steps,
            decay_end=total,
            lr_min=cfg.min_lr,
            shape=cfg.cooldown_shape,
            warmup_t=cfg.warmup_epochs * steps,
            warmup_lr_init=cfg.warmup_lr,
        )
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.sched,
        num_epochs=cfg.epochs,
        decay_epochs=cfg.decay_epochs,
        decay_rate=cfg.decay_rate,
        min_lr=cfg.min_lr,
        warmup_lr=cfg.warmup_lr,
        warmup_epochs=cfg.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=steps,
    )
    return scheduler
