"""The README stays true: every setting, every command, the example queries."""

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


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`PHASESTREAM_{name.upper()}`" in README


def command_paths() -> list[str]:
    root = get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    paths = []
    for name, command in root.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            paths += [f"{name} {sub}" for sub in command.commands]
        else:
            paths.append(name)
    return paths


def test_every_command_is_documented() -> None:
    paths = command_paths()
    assert "run audit" in paths
    for path in paths:
        assert f"phasestream {path}" in README, path


def _normalise(sql: str) -> list[str]:
    lines = [line.strip() for line in sql.splitlines()]
    return [line for line in lines if line and not line.startswith("--")]


def test_readme_example_queries_are_the_tested_ones() -> None:
    tested = (ROOT / "docs" / "example-queries.sql").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", README, flags=re.DOTALL)
    assert blocks
    assert _normalise(blocks[0]) == _normalise(tested)


def test_readme_opens_with_the_two_commands() -> None:
    head = README.split("\n## ", 1)[0]
    assert "make run" in head
    assert "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()
