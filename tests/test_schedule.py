"""The wsd schedule (warmup, constant, cooldown) and its cooldown branches: learning rates at chosen updates, the
checkpoint round trip, and the inputs it refuses."""

from __future__ import annotations

import math

import pytest
import torch

from hpsearch.params import ParamError, TrainConfig, cooldown_epochs, parse_args
from hpsearch.train.schedule import WarmupStableDecay, make_scheduler

STEPS = 4  # updates per epoch
PEAK, WARMUP_LR, MIN_LR = 0.1, 0.01, 0.001


def _wsd(shape: str) -> WarmupStableDecay:
    """10 epochs: 2 of warmup, 6 stable, a cooldown over the last 2 (0.2 x 10)."""
    cfg = TrainConfig(
        sched="wsd", epochs=10, lr=PEAK, warmup_epochs=2, warmup_lr=WARMUP_LR, min_lr=MIN_LR, cooldown_shape=shape
    )
    return make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK), cfg, STEPS)


def _lr(scheduler: WarmupStableDecay, t: int) -> float:
    scheduler.step_update(t)
    return scheduler.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize(
    "shape, left_at_middle", [("linear", 0.5), ("1-sqrt", 1 - math.sqrt(0.5))], ids=["linear", "1-sqrt"]
)
def test_wsd_learning_rate_at_chosen_updates(shape: str, left_at_middle: float):
    s = _wsd(shape)
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(WARMUP_LR)  # as built, before the first update
    assert _lr(s, 4) == pytest.approx((WARMUP_LR + PEAK) / 2)  # warmup's middle
    assert _lr(s, 8) == pytest.approx(PEAK)  # warmup's end
    assert _lr(s, 20) == pytest.approx(PEAK)  # stable
    assert _lr(s, 32) == pytest.approx(PEAK)  # the cooldown starts after epoch 8
    assert _lr(s, 36) == pytest.approx(MIN_LR + (PEAK - MIN_LR) * left_at_middle)
    assert _lr(s, 40) == pytest.approx(MIN_LR)  # the run's last update leaves min_lr
    assert _lr(s, 44) == pytest.approx(MIN_LR)


def test_a_branch_cools_from_the_lr_where_it_starts_and_leaves_the_run_schedule_alone():
    s = _wsd("linear")
    branch = s.branch(start=20, length=8)  # at epoch 5 (stable), over 2 epochs
    assert [_lr(branch, t) for t in (20, 24, 28, 30)] == pytest.approx([PEAK, (PEAK + MIN_LR) / 2, MIN_LR, MIN_LR])
    in_warmup = s.branch(start=4, length=4)  # mid-warmup: from the warmup's lr there, not the peak
    assert [_lr(in_warmup, t) for t in (4, 8)] == pytest.approx([(WARMUP_LR + PEAK) / 2, MIN_LR])
    assert _lr(s, 21) == pytest.approx(PEAK)  # the run's own schedule goes on as before


def test_a_checkpointed_wsd_schedule_resumes_the_same():
    s = _wsd("1-sqrt")
    _lr(s, 33)
    fresh = _wsd("linear")  # another shape: the checkpoint's wins, as for timm's schedulers
    fresh.load_state_dict(s.state_dict())
    assert [_lr(fresh, t) for t in (34, 37)] == [_lr(s, t) for t in (34, 37)]


def test_cooldown_epochs_round_up_to_whole_epochs():
    assert cooldown_epochs(0.2, 10) == 2
    assert cooldown_epochs(0.1, 30) == 3  # 0.1 x 30 is 3.0000000000000004 in floating point
    assert cooldown_epochs(0.2, 7) == 2
    assert cooldown_epochs(0.01, 3) == 1


def test_cooldown_at_is_read_as_whole_epochs():
    cfg = parse_args(["--sched=wsd", "--epochs=20", "--cooldown_at= 10, 5,10", "--warmup_epochs=0"])
    assert cfg.rungs == [5, 10]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--sched=wsd", "--cooldown_frac=1"], "cooldown_frac: '1' is not valid; allowed: a number > 0 and < 1"),
        (["--sched=wsd", "--cooldown_frac=0"], "cooldown_frac: '0' is not valid; allowed: a number > 0 and < 1"),
        (["--sched=wsd", "--cooldown_at=5,0"], "cooldown_at: '5,0' is not valid; allowed: comma-separated epochs"),
        (["--sched=wsd", "--cooldown_at=2.5"], "cooldown_at: '2.5' is not valid; allowed: comma-separated epochs"),
        (["--sched=wsd", "--epochs=20", "--cooldown_at=10,30"], "cooldown_at: epoch 30 is above epochs (20)"),
        (["--cooldown_at=10"], "cooldown_at: cooldown branches need sched wsd (sched is cosine)"),
        (["--sched=wsd", "--epochs=6", "--warmup_epochs=5"], "cooldown_frac: the cooldown (2 of 6 epochs) overlaps"),
        (["--cooldown_shape=cosine"], "cooldown_shape: 'cosine' is not valid; allowed: 1-sqrt | linear"),
    ],
)
def test_bad_schedule_input_is_named(argv: list[str], says: str):
    with pytest.raises(ParamError) as e:
        parse_args(argv)
    assert says in str(e.value) and "\n" not in str(e.value)
