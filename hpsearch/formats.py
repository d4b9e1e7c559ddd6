"""How values read in tables and lines: `status`, `report`, the agent's progress lines."""

from __future__ import annotations

from typing import Any

from hpsearch.params import format_value


def fmt_value(v: Any) -> str:
    """A table cell: '-' for nothing, 4 significant digits for floats, true/false for booleans."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return format_value(v)


def fmt_duration(seconds: float) -> str:
    """As the reference report writes wall times: 42s, 49m45s, 1h01m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
