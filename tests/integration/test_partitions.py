"""workflow_phase_logs partitioned by month: migration, idempotency, retention, months ahead."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from models.ports import Batch, PartitionRef, PositionMove
from phasestream.settings import Settings
from projections.audit_sink import AuditSink, maintain_partitions
from projections.migrate import bundled_migrations, migrate
from streams.publisher import PhaseEventPublisher
from tests.background import audit_running
from tests.conftest import with_database
from tests.events import make_event
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration
REF = PartitionRef("t", 0)
POSITIONS = "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions"


def month_start(day: date, months: int = 0) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_of(when: datetime) -> str:
    return f"workflow_phase_logs_p{when.astimezone(UTC):%Y%m}"


async def partitions(db: str) -> list[str]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'workflow_phase_logs'::regclass ORDER BY 1"
        )
    finally:
        await conn.close()
    return [r["relname"] for r in rows]


async def placed(db: str) -> dict[uuid.UUID, str]:
    """Each row's id and the partition that holds it."""
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT id, tableoid::regclass::text AS part FROM workflow_phase_logs"
        )
    finally:
        await conn.close()
    return {uuid.UUID(str(r["id"])): r["part"] for r in rows}


@pytest.fixture
async def bare_database(postgres_server: str) -> AsyncIterator[str]:
    """An empty database (no migrations applied); its URL."""
    name = f"phasestream_bare_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(postgres_server, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_migration_moves_rows_into_month_partitions_and_keeps_the_views(
    bare_database: str,
) -> None:
    before = [m for m in bundled_migrations() if m.version < 7]
    old = [
        make_event("wf-old", 3, timestamp=datetime(2024, 1, 31, 23, 59, 59, tzinfo=UTC)),
        make_event("wf-old", 3, timestamp=datetime(2024, 2, 1, 0, 0, tzinfo=UTC)),
        make_event("wf-new", 5),
    ]
    conn = await asyncpg.connect(bare_database)
    try:
        await migrate(conn, before)
        await conn.executemany(
            "INSERT INTO workflow_phase_logs (id, workflow_id, user_id, phase_number, "
            "status, timestamp) VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (e.event_id, e.workflow_id, e.user_id, e.phase_number, e.status.value, e.timestamp)
                for e in old
            ],
        )
        analytics_before = await conn.fetch("SELECT * FROM workflow_phase_analytics")
        await migrate(conn)
        kind = await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE oid = 'workflow_phase_logs'::regclass"
        )
        key = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'workflow_phase_logs'::regclass AND contype = 'p'"
        )
        indexes = {
            r["relname"]: r["amname"]
            for r in await conn.fetch(
                "SELECT c.relname, a.amname FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                "WHERE i.indrelid = 'workflow_phase_logs'::regclass"
            )
        }
        analytics_after = await conn.fetch("SELECT * FROM workflow_phase_analytics")
        violations = await conn.fetchval("SELECT count(*) FROM workflow_phase_sla_violations")
        leftovers = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname LIKE 'workflow_phase_logs_partitioned%'"
            " OR relname LIKE 'workflow_phase_logs_retired%' OR relname LIKE '%unpartitioned%'"
        )
        part_indexes = {
            (r["relname"], r["amname"])
            for r in await conn.fetch(
                "SELECT c.relname, a.amname FROM pg_inherits h "
                "JOIN pg_index i ON i.indrelid = h.inhrelid "
                "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                "WHERE h.inhparent = 'workflow_phase_logs'::regclass"
            )
        }
    finally:
        await conn.close()
    assert kind == "p"
    assert key == 'PRIMARY KEY (id, "timestamp")'
    assert indexes == {
        "workflow_phase_logs_pkey": "btree",
        "workflow_phase_logs_workflow_idx": "btree",
        "workflow_phase_logs_timestamp_idx": "brin",  # 0014: was a btree
        "workflow_phase_logs_phase_status_idx": "btree",
        "workflow_phase_logs_user_idx": "btree",
        "workflow_phase_logs_finished_time_idx": "btree",  # 0013: time series
    }
    assert analytics_after == analytics_before
    assert violations == 0
    assert leftovers == [], leftovers
    assert {(name[len("workflow_phase_logs_p202401") :], am) for name, am in part_indexes} == {
        ("_pkey", "btree"),
        ("_workflow_idx", "btree"),
        ("_timestamp_idx", "brin"),
        ("_phase_status_idx", "btree"),
        ("_user_idx", "btree"),
        ("_finished_time_idx", "btree"),
    }
    assert await placed(bare_database) == {e.event_id: partition_of(e.timestamp) for e in old}


async def test_partitions_ahead_exist_after_migration(database: str) -> None:
    this_month = month_start(datetime.now(UTC).date())
    wanted = [f"workflow_phase_logs_p{month_start(this_month, i):%Y%m}" for i in range(4)]
    assert set(wanted) <= set(await partitions(database))


async def test_duplicates_across_months_are_one_row_each_in_its_month(database: str) -> None:
    now = datetime.now(UTC)
    times = [
        datetime(2023, 12, 31, 23, 30, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, tzinfo=UTC),
        now - timedelta(days=40),
        now,
        datetime(2031, 6, 15, tzinfo=UTC),
    ]
    events = [make_event(f"wf-{i}", 1 + i % 7, timestamp=t) for i, t in enumerate(times)]
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", Batch.single(REF, events, PositionMove(None, 5)))
        # The same events again (a producer retry) and a replay: no new rows.
        await sink.apply("c", Batch.single(REF, events[::-1], PositionMove(5, 10)))
        await sink.apply("c", Batch.single(REF, events, PositionMove(10, 15)))
    assert await placed(database) == {e.event_id: partition_of(e.timestamp) for e in events}
    # Months without a partition (2023, 2031) got one on the fly, the batch did not fail.
    assert {partition_of(times[0]), partition_of(times[-1])} <= set(await partitions(database))


async def test_pipeline_replay_across_months_leaves_one_row_per_event(settings: Settings) -> None:
    db = settings.database_url or ""
    base = datetime(2025, 1, 15, tzinfo=UTC)
    events = [
        make_event(f"wf-{i % 9}", 1 + i % 7, timestamp=base + timedelta(days=13 * i))
        for i in range(60)
    ]
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(events)
        await pub.publish_many(events[:20])
    async with audit_running(settings):
        await eventually(lambda: count_rows(db, POSITIONS), lambda n: n == 80)
    await count_rows(
        db,
        "WITH d AS (DELETE FROM phasestream_consumer_positions RETURNING 1) SELECT count(*) FROM d",
    )
    async with audit_running(settings) as projector:
        await eventually(lambda: count_rows(db, POSITIONS), lambda n: n == 80)
    assert projector.stats.dead_letters == 0
    assert await placed(db) == {e.event_id: partition_of(e.timestamp) for e in events}


async def test_retention_drops_only_partitions_older_than_the_setting(database: str) -> None:
    now = datetime.now(UTC)
    this_month = month_start(now.date())
    old = [
        make_event(
            "wf-r",
            1,
            timestamp=datetime.combine(month_start(this_month, -k), datetime.min.time(), UTC)
            + timedelta(days=3),
        )
        for k in (0, 1, 2, 3, 6)
    ]
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", Batch.single(REF, old, PositionMove(None, len(old))))
        dropped = await maintain_partitions(sink.pool, retention_months=2)
    # Kept: every month that may hold a row younger than 2 months.
    assert sorted(dropped) == sorted({partition_of(e.timestamp) for e in old[3:]})
    assert set((await placed(database)).values()) == {partition_of(e.timestamp) for e in old[:3]}
    async with await AuditSink.connect(database) as sink:
        assert await maintain_partitions(sink.pool, retention_months=0) == []
    assert len(await placed(database)) == 3


async def test_audit_sink_runs_upkeep_before_its_first_batch(database: str) -> None:
    long_ago = make_event("wf-x", 1, timestamp=datetime(2020, 5, 5, tzinfo=UTC))
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", Batch.single(REF, [long_ago], PositionMove(None, 1)))
    assert partition_of(long_ago.timestamp) in await partitions(database)
    async with await AuditSink.connect(database, retention_months=12, months_ahead=5) as sink:
        await sink.apply("c", Batch.single(REF, [], PositionMove(1, 2)))
    names = await partitions(database)
    assert partition_of(long_ago.timestamp) not in names
    this_month = month_start(datetime.now(UTC).date())
    assert f"workflow_phase_logs_p{month_start(this_month, 5):%Y%m}" in names


async def test_a_month_dropped_behind_the_sinks_back_is_made_again(database: str) -> None:
    # The sink skips ensuring a month it ensured before; a partition dropped since (by hand,
    # or by another process's retention) must not make it refuse the batch.
    when = datetime(2031, 6, 15, tzinfo=UTC)
    first, second = (make_event(f"wf-{i}", 2, timestamp=when + timedelta(hours=i)) for i in (1, 2))
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", Batch.single(REF, [first], PositionMove(None, 1)))
        conn = await asyncpg.connect(database)
        try:
            await conn.execute(f"DROP TABLE {partition_of(when)}")
        finally:
            await conn.close()
        await sink.apply("c", Batch.single(REF, [second], PositionMove(1, 2)))
        assert await sink.positions("c", [REF]) == {REF: 2}
    assert await placed(database) == {second.event_id: partition_of(when)}
