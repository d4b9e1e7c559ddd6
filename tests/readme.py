"""What README.md tells a newcomer to run, read from the file itself so that tests run what the page says."""

from __future__ import annotations

from pathlib import Path


def quick_start(readme: Path) -> list[str]:
    """The commands of the first fenced bash block under "## Quick start", one per line."""
    lines = readme.read_text().splitlines()
    if "## Quick start" not in lines:
        raise ValueError(f"{readme}: no '## Quick start' heading")
    section = lines[lines.index("## Quick start") + 1 :]
    for i, line in enumerate(section):
        if line.startswith("## "):
            break
        if line.strip() == "```bash":
            block = section[i + 1 :]
            end = next((j for j, s in enumerate(block) if s.strip() == "```"), None)
            if end is None:
                raise ValueError(f"{readme}: the quick start's bash block is not closed")
            return [s.strip() for s in block[:end] if s.strip()]
    raise ValueError(f"{readme}: no fenced bash block under '## Quick start'")
