"""Environment knobs: W&B's mode read as wandb reads it, and a bad knob is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import env, hpsearch

from hpsearch.wandb_env import default_mode


@pytest.mark.parametrize(
    "mode, key, expected",
    [
        ("disabled", None, "disabled"),
        ("Disabled", None, "disabled"),
        ("DISABLED", "k", "disabled"),
        ("Offline", "k", "offline"),
        ("dryrun", "k", "offline"),
        ("", None, "offline"),  # no login: offline runs, synced later
        ("", "k", "online"),
        ("online", "k", "online"),
    ],
)
def test_wandb_mode_is_read_in_any_case_as_wandb_reads_it(monkeypatch, tmp_path: Path, mode, key, expected):
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    if key:
        monkeypatch.setenv("WANDB_API_KEY", key)
    else:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert default_mode() == expected


def test_a_bad_environment_knob_is_one_line_and_exit_2(tmp_path: Path):
    p = hpsearch("status", "nosuch", cwd=tmp_path, env=env(HPSEARCH_STALE_AFTER="soon"))
    assert p.returncode == 2
    assert (
        p.stderr.strip()
        == "hpsearch: error: HPSEARCH_STALE_AFTER='soon' is not valid; allowed: a number of seconds > 0"
    )
