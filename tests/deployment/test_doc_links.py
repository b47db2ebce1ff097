"""Every relative link in the README and docs/ leads to a file, and to a heading there."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.IGNORECASE)


def _prose(markdown: str) -> str:
    """Markdown without code: links and headings inside code are not links and headings."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", markdown))


def anchors(markdown: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1 on repeats."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_anchors_follow_githubs_rules() -> None:
    text = "# A (b)\n## Reports (`phasestream report …`)\n## A (b)\n```\n# not a heading\n```\n"
    assert anchors(text) == {"a-b", "reports-phasestream-report-", "a-b-1"}


def links(page: Path) -> list[str]:
    return [
        target for target in LINK.findall(_prose(page.read_text())) if not EXTERNAL.match(target)
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page: Path) -> None:
    assert [broken for target in links(page) if (broken := _broken(page, target))] == []


def _broken(page: Path, target: str) -> str | None:
    """Why ``target`` leads nowhere, or None."""
    path, _, anchor = target.partition("#")
    resolved = (page.parent / unquote(path)).resolve() if path else page
    if not resolved.exists():
        return f"{target}: no such file"
    if anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved.read_text())):
        return f"{target}: no such heading"
    return None


def test_the_readme_links_to_docs() -> None:
    assert sum(target.startswith("docs/") for target in links(ROOT / "README.md")) >= 10
