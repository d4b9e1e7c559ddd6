"""Flag forms W&B's agent produces and people type, and the checks shared with sweep validation."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from hpsearch.params import DEFAULTS, ParamError, TrainConfig, check_value, parse_args


def test_defaults_are_the_reference_best_run():
    cfg = TrainConfig()
    assert (cfg.model, cfg.opt, cfg.lr, cfg.momentum, cfg.weight_decay) == ("resnet50", "sgd", 0.25, 0.9, 1e-3)
    assert (cfg.sched, cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr) == ("cosine", 5, 0.01, 1e-6)
    assert (cfg.hflip, cfg.aa, cfg.cutmix, cfg.mixup) == (0.7, "original", 1.0, 0.0)
    assert (cfg.batch_size, cfg.epochs) == (512, 250)


def test_all_flag_forms():
    cfg = parse_args(
        ["--lr=0.1", "--weight-decay", "5e-4", "--nesterov", "--amp", "false", "batch_size=256", "--cifar-stem=False"]
    )
    assert cfg.lr == 0.1 and cfg.weight_decay == 5e-4 and cfg.batch_size == 256
    assert cfg.nesterov is True and cfg.amp is False and cfg.cifar_stem is False


def test_wandb_agent_numbers_convert():
    assert parse_args(["--epochs=250.0", "--lr=1e-3"]).epochs == 250  # JSON floats that are whole
    with pytest.raises(ParamError, match="epochs: '2.5' is not valid; allowed: an integer >= 1"):
        parse_args(["--epochs=2.5"])


def test_config_file_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.05\nmomentum: {value: 0.8}\nweight-decay: 1e-4\n")
    cfg = parse_args(["--config", str(f), "--lr=0.2"])
    assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (0.2, 0.8, 1e-4)
    f.write_text("lrr: 1\n")
    with pytest.raises(ParamError, match=r"c.yaml: unknown key 'lrr' \(did you mean lr\?\)"):
        parse_args(["--config", str(f)])


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("hflip", 2, ">= 0 and <= 1"),
        ("dataset", "imagenet", "cifar100 | cifar10 | fashion_mnist | digits | synthetic"),
        ("opt", "sgdd", "timm optimizer"),
        ("model", "resnet51", "timm model name"),
        ("aa", "originall", "timm policy"),
        ("amp", "maybe", "true or false"),
        ("lr", "nan", "a number > 0"),
    ],
)
def test_bad_values_say_what_is_allowed(key, value, allowed):
    with pytest.raises(ParamError, match=f"^{key}: .* is not valid; allowed: .*{re.escape(allowed)}"):
        check_value(key, value)


def test_good_policy_strings_pass():
    for aa in ("none", "cifar10", "original", "v0", "rand-m9-n2-mstd0.5", "augmix-m5-w3"):
        assert check_value("aa", aa) == aa


def test_argv_round_trips():
    cfg = TrainConfig(lr=0.1, aa="cifar10", nesterov=True)
    assert parse_args(cfg.argv()) == cfg
    assert set(DEFAULTS) == set(cfg.to_dict())


def test_model_names_are_checked_from_the_cache_without_importing_timm(tmp_path):
    # First check: timm decides and its list lands in the cache; then a fresh process knows the names
    # without the seconds-long timm import, and a name the cache lacks still goes to timm (and is refused).
    code = (
        "import sys; from hpsearch.params import check_value, ParamError\n"
        "check_value('model', 'test_resnet'); print('timm' in sys.modules)\n"
        "try: check_value('model', 'resnet51')\n"
        "except ParamError as e: print(e)\n"
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True) for _ in range(2)]
    assert [r.stdout.splitlines()[0] for r in runs] == ["True", "False"], [r.stderr for r in runs]
    assert all("model: 'resnet51' is not valid; allowed: a timm model name" in r.stdout for r in runs)
    (cache,) = (tmp_path / "hpsearch").glob("timm-*-models.txt")
    assert {"resnet50", "test_resnet"} <= set(cache.read_text().split())
