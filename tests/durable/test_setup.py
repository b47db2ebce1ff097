"""How durable-broker tests are chosen and documented (no broker needed: runs everywhere)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import TEST_SESSION_TIMEOUT_MS

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
README = (ROOT / "README.md").read_text()
SECTION = README.split("### Running the tests against Apache Kafka", 1)[-1].split("\n## ", 1)[0]
OVERRIDE = HERE / "kafka-tests.compose.yml"
DEV_TEST = "tests/integration/test_dev.py"


def durable_files() -> list[str]:
    marked = re.compile(r"^pytestmark = .*\bdurable_broker\b", re.MULTILINE)
    return sorted(path.name for path in HERE.glob("test_*.py")
                  if marked.search(path.read_text()))


def collect(external: str | None) -> tuple[set[str], str]:
    """The test ids a run would select, and its output (collection only, no broker)."""
    env = {k: v for k, v in os.environ.items() if k != "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS"}
    if external:
        env["PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS"] = external
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(HERE), DEV_TEST], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}
    return ids, done.stdout


def test_the_readme_section_lists_every_durable_test_and_how_to_run_them() -> None:
    assert "### Running the tests against Apache Kafka" in README
    assert len(durable_files()) >= 4
    for name in durable_files():
        assert f"`{name}`" in SECTION, name
    assert "`PHASESTREAM_TEST_BROKER_RESTART_COMMAND`" in SECTION
    assert "tests/durable/kafka-tests.compose.yml" in SECTION
    assert "make test" in SECTION


def test_the_readme_command_uses_the_port_the_compose_kafka_publishes() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kafka = compose["services"]["kafka"]
    published = {str(port).split(":")[-2] for port in kafka["ports"]}  # [ip:]host:container
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    servers = re.search(r"PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS=(\S+)", SECTION)
    assert servers is not None
    host, port = servers.group(1).rsplit(":", 1)
    assert port in published
    assert f"//{host}:{port}" in advertised  # what clients are sent back to after bootstrap


def test_the_override_lets_the_broker_accept_the_tests_sessions() -> None:
    override = yaml.safe_load(OVERRIDE.read_text())
    assert set(override["services"]) == {"kafka"}
    floor = int(override["services"]["kafka"]["environment"]["KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS"])
    assert floor <= TEST_SESSION_TIMEOUT_MS


def test_durable_tests_are_deselected_on_the_embedded_broker_not_skipped() -> None:
    ids, out = collect(None)
    assert not any(f"tests/durable/{name}" in ids for name in durable_files())
    assert DEV_TEST in ids
    assert f"{len(durable_files())} durable_broker tests deselected" in out
    assert f"({len(durable_files())} deselected)" in out.splitlines()[-1]


def test_an_external_broker_runs_them_and_leaves_out_the_embedded_ones() -> None:
    ids, out = collect("127.0.0.1:1")  # collection never connects
    assert {f"tests/durable/{name}" for name in durable_files()} <= ids
    assert DEV_TEST not in ids
    embedded = len(re.findall(r"^(?:async )?def test_", (ROOT / DEV_TEST).read_text(),
                              re.MULTILINE))
    assert f"{embedded} embedded_broker tests deselected" in out
    assert f"({embedded} deselected)" in out.splitlines()[-1]
