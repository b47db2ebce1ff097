"""Migrations, the sink's compare-and-set positions, the views and the example queries."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from models.errors import StalePositionError
from models.phases import PhaseStatus
from models.ports import Batch, PartitionRef, PositionMove
from projections.audit_sink import AuditSink
from projections.migrate import Migration, MigrationError, bundled_migrations, migrate
from projections.outbox import violation_outbox
from projections.rollback_commander import DECIDED_BEFORE
from tests.events import make_event

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).parents[2] / "docs" / "example-queries.sql"
REF = PartitionRef("t", 0)


def example_queries() -> dict[str, str]:
    text = EXAMPLES.read_text()
    parts = re.split(r"^-- example: (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


async def test_migrate_twice_and_concurrently_applies_each_file_once(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        # The template was migrated already: nothing is pending.
        assert await migrate(conn) == []
        extra = Migration(9999, "probe", "CREATE TABLE probe_table (id int)")
        others = [await asyncpg.connect(database) for _ in range(3)]
        results = await asyncio.gather(
            *(migrate(c, [*bundled_migrations(), extra]) for c in others)
        )
        for other in others:
            await other.close()
        assert sorted(len(r) for r in results) == [0, 0, 1]
        versions = [
            r["version"]
            for r in await conn.fetch(
                "SELECT version FROM phasestream_schema_migrations ORDER BY version"
            )
        ]
        assert versions == [m.version for m in bundled_migrations()] + [9999]
    finally:
        await conn.close()


async def test_a_changed_applied_migration_is_refused(database: str) -> None:
    first = bundled_migrations()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited")
    conn = await asyncpg.connect(database)
    try:
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await migrate(conn, [edited])
    finally:
        await conn.close()


async def test_positions_move_compare_and_set(database: str) -> None:
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", Batch.single(REF, [make_event()], PositionMove(None, 5)))
        assert await sink.positions("c", [REF]) == {REF: 5}
        # A stale writer (it believes the partition is still unstored, or at 3) fails,
        # and its rows are not written either.
        stale = make_event()
        for expected in (None, 3):
            with pytest.raises(StalePositionError):
                await sink.apply("c", Batch.single(REF, [stale], PositionMove(expected, 9)))
        await sink.apply("c", Batch.single(REF, [], PositionMove(5, 7)))
        assert await sink.positions("c", [REF, PartitionRef("t", 1)]) == {REF: 7}
    conn = await asyncpg.connect(database)
    ids = {r["id"] for r in await conn.fetch("SELECT id FROM workflow_phase_logs")}
    await conn.close()
    assert stale.event_id not in ids
    assert len(ids) == 1


async def seed_known_events(database: str) -> None:
    now = datetime.now(UTC)
    events = []
    # Phase 3 (SLA 120 s): 4 executions: 3 completed (one late by 30 s), 1 failed and rolled back.
    for i, (status, duration) in enumerate(
        [
            (PhaseStatus.COMPLETED, 1000),
            (PhaseStatus.COMPLETED, 3000),
            (PhaseStatus.COMPLETED, 150_000),
            (PhaseStatus.FAILED, 2000),
        ]
    ):
        start = now - timedelta(hours=1, minutes=i)
        events.append(make_event(f"wf-{i}", 3, PhaseStatus.STARTED, timestamp=start))
        events.append(
            make_event(
                f"wf-{i}",
                3,
                status,
                duration_ms=duration,
                timestamp=start + timedelta(milliseconds=duration),
            )
        )
    events.append(
        make_event(
            "wf-3",
            3,
            PhaseStatus.ROLLED_BACK,
            timestamp=now,
            rollback_triggered=True,
            rollback_to_phase=2,
            previous_phase=3,
        )
    )
    # Phase 5 (SLA 10 s): one slow completion 3 days ago: outside 24 h, inside 7 days.
    old = now - timedelta(days=3)
    events.append(make_event("wf-9", 5, PhaseStatus.STARTED, timestamp=old))
    events.append(
        make_event(
            "wf-9",
            5,
            PhaseStatus.COMPLETED,
            duration_ms=25_000,
            timestamp=old + timedelta(seconds=25),
        )
    )
    async with await AuditSink.connect(database) as sink:
        await sink.apply("seed", Batch.single(REF, events, PositionMove(None, len(events))))


async def test_analytics_view_counts_rates_and_percentiles(database: str) -> None:
    await seed_known_events(database)
    conn = await asyncpg.connect(database)
    rows = {
        r["phase_number"]: r for r in await conn.fetch("SELECT * FROM workflow_phase_analytics")
    }
    await conn.close()
    p3 = rows[3]
    assert (
        p3["started_count"],
        p3["completed_count"],
        p3["failed_count"],
        p3["rolled_back_count"],
    ) == (4, 3, 1, 1)
    assert float(p3["completion_rate"]) == 75.0
    assert float(p3["failure_rate"]) == 25.0
    assert float(p3["rollback_rate"]) == 25.0
    assert float(p3["avg_duration_ms"]) == 39_000.0  # (1000 + 3000 + 150000 + 2000) / 4
    assert p3["p50_duration_ms"] == 2500.0
    assert p3["sla_threshold_ms"] == 120_000
    assert rows[5]["completed_count"] == 1
    assert set(rows) == {3, 5}


async def test_sla_violations_view(database: str) -> None:
    await seed_known_events(database)
    conn = await asyncpg.connect(database)
    rows = await conn.fetch("SELECT * FROM workflow_phase_sla_violations ORDER BY phase_number")
    await conn.close()
    assert [
        (r["workflow_id"], r["phase_number"], r["threshold_ms"], r["excess_ms"]) for r in rows
    ] == [("wf-2", 3, 120_000, 30_000), ("wf-9", 5, 10_000, 15_000)]


async def test_example_queries_run_unchanged_with_exact_answers(database: str) -> None:
    await seed_known_events(database)
    queries = example_queries()
    assert len(queries) == 3
    conn = await asyncpg.connect(database)
    try:
        rates = await conn.fetch(queries["phase completion rates over the last 7 days"])
        violations = await conn.fetch(queries["SLA violations in the last 24 hours"])
        rollbacks = await conn.fetch(queries["rollback statistics"])
    finally:
        await conn.close()
    assert [
        (r["phase_number"], r["completed"], r["failed"], float(r["completion_rate"])) for r in rates
    ] == [(3, 3, 1, 75.0), (5, 1, 0, 100.0)]
    assert [(r["workflow_id"], r["excess_ms"]) for r in violations] == [("wf-2", 30_000)]
    assert [(r["phase_number"], r["rollback_to_phase"], r["rollbacks"]) for r in rollbacks] == [
        (3, 2, 1)
    ]


async def test_sla_thresholds_are_seeded(database: str) -> None:
    conn = await asyncpg.connect(database)
    rows = await conn.fetch(
        "SELECT phase_number, threshold_ms FROM workflow_phase_sla_thresholds ORDER BY phase_number"
    )
    await conn.close()
    assert [(r[0], r[1]) for r in rows] == [
        (1, 30_000),
        (2, 60_000),
        (3, 120_000),
        (4, 90_000),
        (5, 10_000),
        (6, 15_000),
        (7, 60_000),
    ]


async def plan(pool: asyncpg.Pool[asyncpg.Record], query: str, *args: object) -> str:
    return "\n".join(r[0] for r in await pool.fetch(f"EXPLAIN {query}", *args))


async def test_what_every_batch_or_claim_asks_reads_an_index_not_the_whole_table(
    database: str,
) -> None:
    # The rollback ledger only grows, and an outbox grows while the broker is away: the
    # lookup of each batch and each claim of the relay must not read all of either.
    async with asyncpg.create_pool(database, min_size=1, max_size=1) as pool:
        await pool.execute(
            "INSERT INTO rollback_commands (command_id, kind, workflow_id, user_id, "
            "failed_event_id, failed_phase, rollback_to_phase, decided_at) "
            "SELECT gen_random_uuid(), 'rollback', 'wf-' || i, gen_random_uuid(), "
            "gen_random_uuid(), 3, 2, now() FROM generate_series(1, 20000) AS i"
        )
        await pool.execute(
            "INSERT INTO sla_violation_outbox (violation_id, workflow_id, payload) "
            "SELECT gen_random_uuid(), 'wf-' || i, '\\x00' FROM generate_series(1, 20000) AS i"
        )
        await pool.execute("ANALYZE rollback_commands, sla_violation_outbox")
        ledger = await plan(pool, DECIDED_BEFORE, [uuid.uuid4() for _ in range(50)])
        relay = violation_outbox(pool).claim_query
        claim = await plan(pool, relay, 500, "sla_violation_outbox")
    assert "rollback_commands_failed_event_idx" in ledger, ledger
    assert "Seq Scan" not in ledger, ledger
    assert "sla_violation_outbox_created_idx" in claim, claim
    assert "Sort" not in claim, claim
