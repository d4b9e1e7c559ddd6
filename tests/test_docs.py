"""README.md and docs/: every relative link resolves, and the quick start's commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from readme import quick_start

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks: a `# comment` in a bash block is no heading."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but - and _ dropped, spaces to -, a
    repeated one suffixed -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(page.read_text()):
        if m := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for line in prose(page.read_text())
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line))  # `[a](b)` in code is no link
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: are not the repository's
    ]


def broken(page: Path, target: str) -> str | None:
    """Why `target`, a link in `page`, does not resolve; None when it does."""
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}"
    if anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
        return f"{target}: no heading in {dest.name} gives #{anchor}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    assert [why for target in relative_links(page) if (why := broken(page, target))] == []


def test_every_docs_page_is_one_click_from_the_readme() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def test_github_anchors_drop_punctuation_and_number_repeats(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Search: `hpsearch simulate`\n\n## With a W&B server\n\n```\n# not a heading\n```\n\n## Notes\n## Notes\n"
    )
    assert anchors(page) == {"search-hpsearch-simulate", "with-a-wb-server", "notes", "notes-1"}


def test_the_quick_start_is_two_commands_the_second_what_ci_runs() -> None:
    commands = quick_start(README)
    assert len(commands) == 2, commands
    assert commands[1] == "bash .ci/run"
    assert (ROOT / ".ci" / "run").is_file()
