"""The README leads and stays true; the docs it points to hold every setting and command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from phasestream.cli import app
from phasestream.settings import Settings

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()
CLI = (DOCS / "cli.md").read_text()
#: The README is where a newcomer starts: depth belongs in docs/.
MAX_README_BYTES = 15_000


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`PHASESTREAM_{name.upper()}`" in CONFIGURATION


def command_tree() -> dict[str, set[str]]:
    """Each top-level command, with its subcommands (empty for a plain command)."""
    root = get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    return {
        name: set(command.commands) if isinstance(command, typer.core.TyperGroup) else set()
        for name, command in root.commands.items()
    }


def test_every_command_is_documented() -> None:
    tree = command_tree()
    assert "audit" in tree["run"]
    paths = [f"{name} {sub}" for name, subs in tree.items() for sub in subs]
    paths += [name for name, subs in tree.items() if not subs]
    for path in paths:
        assert f"phasestream {path}" in CLI, path


def _code(markdown: str) -> list[str]:
    """Inline code spans and fenced blocks: where the README names commands."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", markdown, flags=re.DOTALL)
    rest = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    return fenced + re.findall(r"`([^`\n]+)`", rest)


def test_every_command_the_readme_names_exists() -> None:
    tree = command_tree()
    named = [
        match.groups()
        for code in _code(README)
        for match in re.finditer(r"(?:^|[\s/])phasestream ([a-z][\w-]*)(?: ([\w|-]+))?", code)
    ]
    assert len(named) >= 10
    for command, sub in named:
        assert command in tree, command
        if tree[command]:
            assert sub is not None, command
            for each in sub.split("|"):
                assert each in tree[command], f"phasestream {command} {each}"


def _normalise(sql: str) -> list[str]:
    lines = [line.strip() for line in sql.splitlines()]
    return [line for line in lines if line and not line.startswith("--")]


def test_the_documented_example_queries_are_the_tested_ones() -> None:
    tested = (DOCS / "example-queries.sql").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", (DOCS / "analysts.md").read_text(), flags=re.DOTALL)
    assert blocks
    assert _normalise(blocks[0]) == _normalise(tested)


def test_readme_opens_with_the_two_commands() -> None:
    head = README.split("\n## ", 1)[0]
    first_commands = re.findall(r"```sh\n(.*?)```", head, flags=re.DOTALL)[0].splitlines()
    assert first_commands[0].startswith("make run ")
    assert first_commands[1].startswith("make test ")
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_short() -> None:
    size = len(README.encode())
    assert size < MAX_README_BYTES, f"README.md is {size} bytes: move depth to docs/"


def test_readme_leads_to_a_page_for_each_reader() -> None:
    sections = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    for reader in ("What you get", "Producers", "Downstream consumers", "Analysts", "Operators"):
        assert reader in sections, reader
    for page in ("configuration", "contracts", "delivery", "operations", "scaling", "benchmarks"):
        assert f"(docs/{page}.md)" in README, page
