"""Least privilege on a real Postgres: `phasestream db roles`, then the API and `report`
as the reader, the consumers as the writer, and what each role is refused."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from models.phases import PhaseStatus
from phasestream.api import attach_api
from phasestream.db_cli import configured_roles
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess
from phasestream.settings import Settings
from projections.roles import apply_roles
from streams.publisher import PhaseEventPublisher
from tests.background import consumers_running
from tests.conftest import settings_env
from tests.events import make_event
from tests.integration.test_reports import ANALYTICS_ALL, ANALYTICS_COLUMNS
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration
PASSWORDS = {"owner": "owner-pw-7Hq", "writer": "writer-pw-3Lx", "reader": "reader-pw-9Zc"}
#: Schema changes, refused to the reader and the writer.
DDL = [
    "CREATE TABLE intruder (x INT)",
    "DROP TABLE workflow_phase_sla_thresholds",
    "ALTER TABLE workflow_phase_logs ADD COLUMN intruder INT",
    "TRUNCATE workflow_phase_logs",
    "CREATE INDEX intruder_idx ON metrics_data (recorded_at)",
    "DROP VIEW workflow_phase_analytics",
    "SELECT phasestream_swap_table('workflow_phase_logs', 'metrics_data')",
]
#: Writes, refused to the reader and allowed to the writer.
WRITES = [
    "INSERT INTO workflow_phase_sla_thresholds (phase_number, threshold_ms) VALUES (1, 1) "
    "ON CONFLICT (phase_number) DO NOTHING",
    "UPDATE workflow_phase_sla_thresholds SET threshold_ms = 1",
    "DELETE FROM workflow_phase_logs",
    "DELETE FROM phasestream_consumer_positions",
    "CREATE TEMP TABLE scratch (x INT)",
    "SELECT phasestream_ensure_log_partition('workflow_phase_logs', '2031-01-01')",
    "SELECT phasestream_ensure_log_partitions(1)",
]


def role_settings(database: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        database_url=database,
        db_role_prefix=f"ps_{tag}",
        db_owner_password=SecretStr(PASSWORDS["owner"]),
        db_writer_password=SecretStr(PASSWORDS["writer"]),
        db_reader_password=SecretStr(PASSWORDS["reader"]),
    )


def as_role(url: str, settings: Settings, kind: str) -> str:
    """``url`` logging in as one of the roles, with its password."""
    parts = urlsplit(url)
    where = parts.netloc.rsplit("@", 1)[-1]
    login = f"{settings.db_role_prefix}_{kind}:{quote(PASSWORDS[kind])}"
    return urlunsplit(parts._replace(netloc=f"{login}@{where}"))


def role_env(settings: Settings) -> dict[str, str]:
    """The settings' environment with the passwords themselves (a SecretStr prints stars)."""
    env = settings_env(settings)
    for kind, password in PASSWORDS.items():
        env[f"PHASESTREAM_DB_{kind.upper()}_PASSWORD"] = password
    return env


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phasestream",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def refused(url: str, statements: list[str]) -> list[str]:
    """The statements that were NOT refused for lack of privilege (each in its own
    rolled-back transaction)."""
    conn = await asyncpg.connect(url)
    allowed = []
    try:
        for statement in statements:
            try:
                async with conn.transaction():
                    await conn.execute(statement)
                    allowed.append(statement)
                    raise _Undo
            except asyncpg.InsufficientPrivilegeError:
                pass
            except _Undo:
                pass
    finally:
        await conn.close()
    return allowed


class _Undo(Exception):
    """Rolls back a statement that went through, so the next one sees the same state."""


@contextlib.asynccontextmanager
async def api_as_reader(database: str, settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    # The consumers' URL points nowhere: the API must use only the reader's.
    api = Settings(
        database_url="postgresql://nobody@127.0.0.1:1/none",
        api_database_url=as_role(database, settings, "reader"),
    )
    app = build_app(
        CollectorRegistry(), {}, HttpAccess.from_settings(api), lambda app: attach_api(app, api)
    )
    async with (
        serving(app, "127.0.0.1", 0) as port,
        aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session,
    ):
        yield session


async def test_db_roles_then_api_and_report_as_the_reader_which_cannot_write(
    seeded: tuple[str, datetime],
) -> None:
    database, _ = seeded
    settings = role_settings(database)
    code, out, err = await cli(role_env(settings), "db", "roles")
    assert (code, err) == (0, "")
    prefix = settings.db_role_prefix
    assert f"role {prefix}_reader: created (password set)" in out
    assert not any(p in out for p in PASSWORDS.values())

    async with (
        api_as_reader(database, settings) as session,
        session.get("/api/analytics") as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert body["items"] == [
        dict(zip(ANALYTICS_COLUMNS, row, strict=True)) for row in ANALYTICS_ALL
    ]

    env = settings_env(
        settings.model_copy(
            update={
                "database_url": "postgresql://nobody@127.0.0.1:1/none",
                "api_database_url": as_role(database, settings, "reader"),
            }
        )
    )
    code, out, err = await cli(env, "report", "analytics", "--format", "csv")
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 1 + len(ANALYTICS_ALL)

    reader = as_role(database, settings, "reader")
    assert await refused(reader, DDL + WRITES) == []
    conn = await asyncpg.connect(reader)
    try:  # reading is all it may do: tables, views, and a month partition directly
        part = await conn.fetchval(
            "SELECT min(inhrelid::regclass::text) FROM pg_inherits "
            "WHERE inhparent = 'workflow_phase_logs'::regclass"
        )
        assert await conn.fetchval(f"SELECT count(*) FROM {part}") >= 0
        assert await conn.fetchval("SELECT count(*) FROM workflow_phase_analytics") > 0
    finally:
        await conn.close()

    owner = settings.model_copy(update={"database_url": as_role(database, settings, "owner")})
    code, _, err = await cli(settings_env(owner), "migrate")
    assert (code, "0 migrations applied now" in err) == (0, True)

    # A table of a later migration (or a replay's) comes readable and writable.
    conn = await asyncpg.connect(as_role(database, settings, "owner"))
    try:
        await conn.execute("CREATE TABLE later_migration (x INT)")
    finally:
        await conn.close()
    insert = "INSERT INTO later_migration VALUES (1)"
    assert await refused(as_role(database, settings, "writer"), [insert]) == [insert]
    assert await refused(reader, [insert]) == []
    conn = await asyncpg.connect(reader)
    try:
        assert await conn.fetchval("SELECT count(*) FROM later_migration") == 0
    finally:
        await conn.close()

    code, again, _ = await cli(role_env(settings), "db", "roles")  # safe to run twice
    assert code == 0
    assert f"role {prefix}_reader: updated (password set)" in again


async def test_the_writer_runs_the_consumers_but_changes_no_schema(settings: Settings) -> None:
    database = settings.database_url or ""
    roles = role_settings(database)
    admin = await asyncpg.connect(database)
    try:
        await apply_roles(admin, configured_roles(roles))
    finally:
        await admin.close()
    writer = as_role(database, roles, "writer")
    # A month no partition exists for yet: the audit sink creates it, through migration
    # 0011's SECURITY DEFINER function, as the owner.
    future = make_event("wf-future", 2, timestamp=datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC))
    failed = make_event("wf-r", 3, PhaseStatus.FAILED, duration_ms=5, error_message="boom")
    as_writer = settings.model_copy(update={"database_url": writer})
    async with (
        consumers_running(as_writer, "audit", "rollback", "metrics", "sla"),
        PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub,
    ):
        await pub.publish_many([future, make_event("wf-r", 3), failed])
        await eventually(
            lambda: count_rows(database),
            lambda n: n == 4,
            what="three events and the rolled_back one, projected",
        )
        await eventually(
            lambda: count_rows(database, "SELECT count(*) FROM metrics_data"),
            lambda n: n > 0,
            what="metrics_data rows",
        )
    conn = await asyncpg.connect(database)
    try:
        owner = await conn.fetchval(
            "SELECT pg_get_userbyid(relowner) FROM pg_class "
            "WHERE relname = 'workflow_phase_logs_p203105'"
        )
        commands = await conn.fetchval("SELECT count(*) FROM rollback_commands")
    finally:
        await conn.close()
    assert owner == f"{roles.db_role_prefix}_owner"
    assert commands == 1
    reader = await asyncpg.connect(as_role(database, roles, "reader"))
    try:  # default privileges: the reader reads a partition created after `db roles`
        assert await reader.fetchval("SELECT count(*) FROM workflow_phase_logs_p203105") == 1
    finally:
        await reader.close()
    ledger = "INSERT INTO phasestream_schema_migrations VALUES (99, 'x', 'x')"
    assert await refused(writer, [*DDL, ledger]) == []
    assert await refused(writer, WRITES) == WRITES  # rows, temp tables, partitions
