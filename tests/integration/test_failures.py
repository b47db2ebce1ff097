"""Failure: kill -9 of the projector process, Postgres connections dropped, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from phasestream.local_stack import embedded_postgres
from phasestream.settings import Settings
from phasestream.wiring import create_topics, run_migrations
from streams.publisher import PhaseEventPublisher
from tests.background import audit_running
from tests.conftest import settings_env
from tests.events import many_events
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration


def start_audit_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    # Small batches: many transactions, so a kill lands mid-stream and often mid-batch.
    env = settings_env(settings) | {"PHASESTREAM_BATCH_MAX_RECORDS": "200"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "phasestream", "run", "audit"], env=env, stdout=out, stderr=out
        )


def at_least(count: int) -> Callable[[int], bool]:
    return lambda n: n >= count


async def exact_check(db: str, expected: set[str]) -> None:
    conn = await asyncpg.connect(db)
    try:
        ids = [str(r["id"]) for r in await conn.fetch("SELECT id FROM workflow_phase_logs")]
    finally:
        await conn.close()
    assert len(ids) == len(set(ids))
    lost, extra = len(expected - set(ids)), len(set(ids) - expected)
    assert set(ids) == expected, f"lost {lost}, extra {extra}"


async def test_kill_9_mid_stream_then_restart_projects_every_event_once(
    settings: Settings, tmp_path: Path
) -> None:
    events = many_events(20_000, workflows=500)
    db = settings.database_url or ""
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(events)
    log = tmp_path / "audit.log"
    for kill_at in (2_000, 9_000):
        process = start_audit_process(settings, log)
        await eventually(
            lambda: count_rows(db),
            at_least(kill_at),
            timeout_s=60,
            what=f"{kill_at} rows before the kill",
        )
        process.kill()  # SIGKILL: no cleanup, possibly inside a transaction
        process.wait()
        assert process.returncode == -signal.SIGKILL
        assert await count_rows(db) < len(events), "killed too late to test anything"
    process = start_audit_process(settings, log)
    try:
        await eventually(lambda: count_rows(db), lambda n: n >= len(events), timeout_s=90)
        await asyncio.sleep(1)  # anything duplicated would land now
    finally:
        process.terminate()
        process.wait(timeout=30)
    await exact_check(db, {str(e.event_id) for e in events})
    assert await count_rows(
        db, "SELECT sum(next_offset) FROM phasestream_consumer_positions"
    ) == len(events)


async def test_postgres_connections_dropped_mid_stream_lose_nothing(settings: Settings) -> None:
    events = many_events(6_000, workflows=200)
    db = settings.database_url or ""
    dbname = urlsplit(db).path.lstrip("/")
    admin = await asyncpg.connect(db)
    terminated = 0
    async with (
        audit_running(settings),
        PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub,
    ):
        for chunk in range(6):
            await pub.publish_many(events[chunk * 1000 : (chunk + 1) * 1000])
            # Cut every other session to this database: the projector's pool connections.
            terminated += await admin.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                dbname,
            )
            await asyncio.sleep(0.2)
        await eventually(lambda: count_rows(db), lambda n: n >= len(events), timeout_s=60)
    await admin.close()
    assert terminated >= 6, "the projector's connections were not cut"
    # No count of applied events here: a commit whose acknowledgement was cut is retried,
    # fails the compare-and-set, and the projector re-reads from the stored position, so
    # its own count can be short while the table is exact; the table is what counts.
    await exact_check(db, {str(e.event_id) for e in events})


async def test_sigterm_stops_cleanly_and_keeps_position(settings: Settings, tmp_path: Path) -> None:
    events = many_events(500)
    db = settings.database_url or ""
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(events)
    log = tmp_path / "audit.log"
    process = start_audit_process(settings, log)
    await eventually(lambda: count_rows(db), lambda n: n == len(events), timeout_s=60)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    text = log.read_text()
    assert f"{settings.audit_consumer_group}: stopped after 500 events" in text, text[-2000:]
    assert await count_rows(
        db, "SELECT sum(next_offset) FROM phasestream_consumer_positions"
    ) == len(events)


async def test_postgres_restart_mid_stream_loses_nothing(broker: str, tmp_path: Path) -> None:
    """A real restart: the projector's own embedded Postgres is stopped and started again."""
    events = many_events(4_000, workflows=100)
    data = tmp_path / "pg"
    with embedded_postgres(data) as url:
        await run_migrations(Settings(database_url=url))
        configured = Settings(
            kafka_bootstrap_servers=broker,
            database_url=url,
            phase_events_topic=f"restart-{data.name}-{os.getpid()}-{id(events)}",
            audit_consumer_group=f"restart-{id(events)}",
            consumer_session_timeout_ms=2000,
            batch_max_records=200,
            batch_max_wait_ms=50,
            db_retry_initial_ms=100,
            db_retry_max_ms=500,
        )
        await create_topics(configured)
        try:
            async with (
                audit_running(configured),
                PhaseEventPublisher(broker, configured.phase_events_topic) as pub,
            ):
                await pub.publish_many(events[:2_000])
                await eventually(lambda: count_rows(url), lambda n: n > 0)
                await asyncio.to_thread(pg_ctl, data, "stop", "-m", "fast")
                await pub.publish_many(events[2_000:])  # Kafka accepts them while Postgres is down
                await asyncio.sleep(2)
                await asyncio.to_thread(pg_ctl, data, "start", "-w")
                await eventually(lambda: count_rows(url), lambda n: n >= len(events), timeout_s=60)
            await exact_check(url, {str(e.event_id) for e in events})
        finally:
            # The helper only stops the server process it started, not the restarted one.
            await asyncio.to_thread(pg_ctl, data, "stop", "-m", "fast")


def pg_ctl(data: Path, *args: str) -> None:
    """Stop or start the embedded server the way its own helper does (as its system user)."""
    from embedded_postgres import _commands  # noqa: PLC0415  # the embedded server's binaries

    socket_dir = data  # embedded_postgres puts the socket in the data directory here
    options = ["-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(data / "log")]
    user = "embedded_postgres" if os.geteuid() == 0 else None
    run = _commands.pg_ctl  # type: ignore[attr-defined]  # defined at import, per binary
    run([*(options if args[0] == "start" else []), *args], pgdata=data, user=user, timeout=30)
