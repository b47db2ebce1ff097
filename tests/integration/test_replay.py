"""`phasestream replay`: rebuilt tables equal the incremental ones, swapped in whole, and
nothing with side effects fires again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from models.phases import PhaseStatus
from models.sla.violation import SlaViolation, ViolationKind
from models.sla.violation_codec import encode_violation
from phasestream.kafka_cluster import kafka_cluster
from phasestream.replay import ReplayError, replay
from phasestream.settings import Settings
from streams.kafka import producer_config
from streams.publisher import PhaseEventPublisher
from tests.background import consumers_running
from tests.events import make_event, many_events
from tests.integration.test_rollback import commands, read_topic
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration

AUDIT_SUM = (
    "SELECT md5(string_agg(row(id, workflow_id, user_id, phase_number, status, "
    '"timestamp", duration_ms, previous_phase, error_message, error_stack, metadata, '
    "rollback_triggered, rollback_to_phase)::text, ',' ORDER BY id)) "
    "FROM workflow_phase_logs"
)
METRICS_SUM = (
    "SELECT md5(string_agg(row(id, metric_name, metric_type, value, labels, "
    "error_message, metadata, recorded_at)::text, ',' ORDER BY id)) FROM metrics_data"
)
VIOLATIONS_SUM = (
    "SELECT md5(string_agg(row(violation_id, kind, workflow_id, user_id, "
    "phase_number, started_event_id, started_at, detected_at, elapsed_ms, "
    "threshold_ms)::text, ',' ORDER BY violation_id)) "
    "FROM workflow_phase_sla_violation_events"
)
POSITIONS = (
    "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions WHERE consumer = $1"
)


async def fetchval(db: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(db)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def fetch(db: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def consumed(db: str, group: str, records: int) -> None:
    await eventually(
        lambda: count_rows(db, POSITIONS, group),
        lambda n: n == records,
        what=f"{group} consumed {records} records",
    )


async def test_replay_equals_incremental_and_readers_keep_the_live_table(
    settings: Settings,
) -> None:
    db = settings.database_url or ""
    events = [
        *many_events(300),
        make_event(
            "wf-x", 4, PhaseStatus.FAILED, duration_ms=9, timestamp=datetime(2025, 2, 3, tzinfo=UTC)
        ),
    ]
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(events)
        await pub.publish_many(events[:50])  # duplicates: still one row each
        async with consumers_running(settings, "audit", "metrics"):
            await consumed(db, settings.audit_consumer_group, 351)
            await consumed(db, settings.metrics_consumer_group, 351)
    audit_sum, metrics_sum = await fetchval(db, AUDIT_SUM), await fetchval(db, METRICS_SUM)
    analytics = await fetch(db, "SELECT * FROM workflow_phase_analytics ORDER BY 1")
    # Damage both projections; the replay must restore exactly the incremental content.
    await fetchval(
        db,
        "WITH d AS (DELETE FROM workflow_phase_logs WHERE id IN (SELECT id "
        "FROM workflow_phase_logs ORDER BY id LIMIT 10) RETURNING 1) "
        "SELECT count(*) FROM d",
    )
    await fetchval(
        db,
        "UPDATE metrics_data SET value = -1 WHERE id IN "
        "(SELECT id FROM metrics_data ORDER BY id LIMIT 5)",
    )

    seen: list[int] = []
    progress: list[tuple[int, int]] = []
    replaying = asyncio.create_task(replay(settings, "audit", lambda d, t: progress.append((d, t))))
    while not replaying.done():  # a reader during the replay sees the live table, whole
        seen.append(await count_rows(db))
        await asyncio.sleep(0.01)
    assert (await replaying).replayed == 351
    # Either the damaged live table or the whole rebuilt one, never a part of the rebuild.
    assert 291 in seen
    assert set(seen) <= {291, 301}
    assert progress[-1] == (351, 351)
    assert await fetchval(db, AUDIT_SUM) == audit_sum
    assert await fetch(db, "SELECT * FROM workflow_phase_analytics ORDER BY 1") == analytics

    await replay(settings, "metrics")
    assert await fetchval(db, METRICS_SUM) == metrics_sum
    # The replay's own positions and shadow tables are gone; the live consumers own theirs.
    assert (
        await fetchval(
            db,
            "SELECT count(*) FROM phasestream_consumer_positions WHERE consumer LIKE '%-replay-%'",
        )
        == 0
    )
    assert (
        await fetch(
            db,
            "SELECT relname FROM pg_class WHERE relname "
            "LIKE ANY('{workflow_phase_logs_shadow%,metrics_data_shadow%}')",
        )
        == []
    )
    assert await count_rows(db, POSITIONS, settings.audit_consumer_group) == 351

    # The live consumers resume from the replayed positions.
    more = many_events(20)
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(more)
    async with consumers_running(settings, "audit"):
        await consumed(db, settings.audit_consumer_group, 371)
    assert await count_rows(db) == 321


async def test_replay_of_sla_violations_restores_the_projection_and_its_view(
    settings: Settings,
) -> None:
    db = settings.database_url or ""
    start = datetime.now(UTC) - timedelta(hours=1)
    violations = [
        SlaViolation(
            uuid.uuid4(),
            ViolationKind.OVERDUE,
            f"wf-{i}",
            uuid.uuid4(),
            1 + i % 7,
            uuid.uuid4(),
            start,
            start + timedelta(minutes=5),
            300_000,
            30_000,
        )
        for i in range(40)
    ]
    producer = AIOKafkaProducer(
        **producer_config(kafka_cluster(settings), client_id="t", linger_ms=5)
    )
    await producer.start()
    try:
        for v in [*violations, *violations[:10]]:
            await producer.send_and_wait(
                settings.sla_violations_topic, encode_violation(v), key=v.key
            )
    finally:
        await producer.stop()
    async with consumers_running(settings, "sla"):
        await consumed(db, settings.sla_violations_consumer_group, 50)
    checksum = await fetchval(db, VIOLATIONS_SUM)
    overdue = await fetchval(db, "SELECT count(*) FROM workflow_phase_sla_violations")
    await fetchval(db, "TRUNCATE workflow_phase_sla_violation_events")
    assert (await replay(settings, "sla-violations")).replayed == 50
    assert await fetchval(db, VIOLATIONS_SUM) == checksum
    assert await fetchval(db, "SELECT count(*) FROM workflow_phase_sla_violations") == overdue == 40


async def test_replay_fires_no_side_effects_again(settings: Settings) -> None:
    db = settings.database_url or ""
    failed = make_event("wf-r", 3, PhaseStatus.FAILED, duration_ms=50, error_message="boom")
    async with (
        consumers_running(settings, "rollback", "audit"),
        PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub,
    ):
        await pub.publish(failed)
        await eventually(
            lambda: count_rows(
                db, "SELECT count(*) FROM workflow_phase_logs WHERE status = 'rolled_back'"
            ),
            lambda n: n == 1,
        )
        await consumed(db, settings.audit_consumer_group, 2)
        await consumed(db, settings.rollback_consumer_group, 2)
    issued = commands(await read_topic(settings, settings.rollback_commands_topic))
    ledger = await fetch(db, "SELECT * FROM rollback_commands ORDER BY command_id")
    rollback_positions = await fetch(
        db,
        "SELECT topic, partition, next_offset FROM phasestream_consumer_positions "
        "WHERE consumer = $1 ORDER BY 1, 2",
        settings.rollback_consumer_group,
    )
    assert len(issued) == 1

    await replay(settings, "audit")
    await replay(settings, "metrics")

    again = commands(await read_topic(settings, settings.rollback_commands_topic))
    assert [c.command_id for c in again] == [issued[0].command_id]
    assert await fetch(db, "SELECT * FROM rollback_commands ORDER BY command_id") == ledger
    assert (
        await fetch(
            db,
            "SELECT topic, partition, next_offset FROM phasestream_consumer_positions "
            "WHERE consumer = $1 ORDER BY 1, 2",
            settings.rollback_consumer_group,
        )
        == rollback_positions
    )
    assert await fetchval(db, "SELECT count(*) FROM phasestream_outbox") == 0
    assert await count_rows(db) == 2


async def test_unknown_projection_is_refused_and_changes_nothing(settings: Settings) -> None:
    with pytest.raises(ReplayError, match="unknown projection 'rollback'"):
        await replay(settings, "rollback")


async def test_replay_while_the_live_consumer_runs_loses_nothing(settings: Settings) -> None:
    db = settings.database_url or ""
    first, during = many_events(400), many_events(200)
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(first)
        async with consumers_running(settings, "audit"):
            await consumed(db, settings.audit_consumer_group, 400)

            async def trickle() -> None:  # the live consumer keeps projecting new events
                for i in range(0, len(during), 20):
                    await pub.publish_many(during[i : i + 20])
                    await asyncio.sleep(0.05)

            _, result = await asyncio.gather(trickle(), replay(settings, "audit"))
            await consumed(db, settings.audit_consumer_group, 600)
    assert await count_rows(db) == 600
    # What the live consumer wrote past the replay's end is in the log: not "unreplayable".
    assert result.unreplayable.rows == 0
