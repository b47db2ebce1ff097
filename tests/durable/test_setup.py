"""How durable-broker tests are chosen and documented (no broker needed: runs everywhere)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GUIDE = (ROOT / "docs" / "development.md").read_text()
SECTION = GUIDE.split("\n## Running the tests against Apache Kafka", 1)[-1].split("\n## ", 1)[0]
DEV_TEST = "tests/integration/test_dev.py"
CLUSTER_TEST = "tests/faults/test_kafka_failover.py"


def durable_files() -> list[str]:
    marked = re.compile(r"^pytestmark = .*\bdurable_broker\b", re.MULTILINE)
    return sorted(path.name for path in HERE.glob("test_*.py") if marked.search(path.read_text()))


def durable_tests() -> int:
    """How many tests the durable files hold (a run on Tansu deselects every one)."""
    test = re.compile(r"^(?:async )?def test_", re.MULTILINE)
    return sum(len(test.findall((HERE / name).read_text())) for name in durable_files())


def collect(
    external: str | None, test_broker: str = "tansu", expect: int = 0
) -> tuple[set[str], str]:
    """The test ids a run would select, and its output (collection only, no broker)."""
    env = {k: v for k, v in os.environ.items() if k != "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS"}
    env["PHASESTREAM_TEST_BROKER"] = test_broker
    if external:
        env["PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS"] = external
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            str(HERE),
            DEV_TEST,
            CLUSTER_TEST,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == expect, done.stdout + done.stderr
    ids = {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}
    return ids, done.stdout if done.returncode == 0 else done.stdout + done.stderr


def test_the_guide_lists_every_durable_test_and_how_to_run_them() -> None:
    assert "\n## Running the tests against Apache Kafka" in GUIDE
    assert len(durable_files()) >= 4
    for name in durable_files():
        assert f"`{name}`" in SECTION, name
    assert "PHASESTREAM_TEST_BROKER=kafka" in SECTION
    assert "`PHASESTREAM_TEST_BROKER_RESTART_COMMAND`" in SECTION
    assert "make test" in SECTION
    assert f"`{CLUSTER_TEST}`" in SECTION


def test_durable_tests_are_deselected_on_the_embedded_broker_not_skipped() -> None:
    ids, out = collect(None)
    assert not any(f"tests/durable/{name}" in ids for name in durable_files())
    assert DEV_TEST in ids
    assert CLUSTER_TEST not in ids
    assert f"{durable_tests()} durable_broker tests deselected" in out
    assert "kafka_cluster tests deselected" in out


def embedded_tests() -> int:
    """How many tests tests/integration/test_dev.py (about the embedded Tansu) holds."""
    return len(re.findall(r"^(?:async )?def test_", (ROOT / DEV_TEST).read_text(), re.MULTILINE))


def test_the_started_kafka_runs_them_and_the_cluster_tests() -> None:
    ids, out = collect(None, "kafka")
    assert {f"tests/durable/{name}" for name in durable_files()} <= ids
    assert CLUSTER_TEST in ids
    assert DEV_TEST not in ids
    assert f"{embedded_tests()} embedded_broker tests deselected" in out
    assert f"({embedded_tests()} deselected)" in out.splitlines()[-1]


def test_an_external_broker_runs_them_and_leaves_out_the_embedded_ones() -> None:
    ids, out = collect("127.0.0.1:1")  # collection never connects
    assert {f"tests/durable/{name}" for name in durable_files()} <= ids
    assert DEV_TEST not in ids
    assert CLUSTER_TEST not in ids
    assert f"{embedded_tests()} embedded_broker tests deselected" in out


def test_an_unknown_broker_name_stops_the_run_with_the_choices() -> None:
    _ids, out = collect(None, "redpanda", expect=pytest.ExitCode.USAGE_ERROR)
    assert "PHASESTREAM_TEST_BROKER='redpanda': pick one of tansu, kafka" in out
