"""Whether this machine can talk to a W&B server, decided the way the wandb library does."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse


def api_key_configured() -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc for the W&B host (where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def default_mode() -> str:
    """online with a login and WANDB_MODE not saying otherwise; else offline (or disabled, if asked)."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("disabled", "offline"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if api_key_configured() else "offline"
