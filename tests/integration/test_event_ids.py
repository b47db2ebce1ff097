"""One event id, one event: a different event reusing an id is dead-lettered, the first stays.

A redelivery (same bytes) or the same event serialised differently (key order) is a no-op;
any field that differs, the timestamp included, makes it a conflict, whether the first
event was stored in an earlier batch, arrives earlier in the same batch, or the audit
table is rebuilt by a replay.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from models.errors import ConflictingEventsError
from models.event_codec import encode_event
from models.events import PhaseEvent
from models.ports import Batch, PartitionRef, PositionMove
from phasestream.replay import replay
from phasestream.settings import Settings
from projections.audit_sink import AuditSink, maintain_partitions
from tests.background import audit_running
from tests.events import make_event
from tests.topics import read_records
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration

REF = PartitionRef("t", 0)
REASON = "event_id: already recorded with a different payload"


async def stored(db: str, event_id: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db)
    try:
        return await conn.fetch("SELECT * FROM workflow_phase_logs WHERE id = $1", event_id)
    finally:
        await conn.close()


async def publish(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for value in values:  # one key: one partition, in this order
            await producer.send_and_wait(settings.phase_events_topic, value, key=b"wf-c")
    finally:
        await producer.stop()


def reordered(event: PhaseEvent) -> bytes:
    """The same event with its JSON keys in reverse order."""
    fields: dict[str, Any] = orjson.loads(encode_event(event))
    return orjson.dumps(dict(reversed(list(fields.items()))))


async def test_an_id_reused_by_a_different_event_is_dead_lettered(settings: Settings) -> None:
    first = make_event("wf-c", metadata={"v": 1})
    same_time = msgspec.structs.replace(first, metadata={"v": 2})
    later = msgspec.structs.replace(first, timestamp=first.timestamp + timedelta(seconds=5))
    neighbour = make_event("wf-c", phase=2)
    values = [
        encode_event(first),
        encode_event(first),
        reordered(first),
        encode_event(same_time),
        encode_event(later),
        encode_event(neighbour),
    ]
    await publish(settings, values)

    db = settings.database_url or ""
    async with audit_running(settings) as projector:
        await eventually(
            lambda: count_rows(
                db, "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions"
            ),
            lambda n: n == len(values),
        )
    assert projector.stats.dead_letters == 2
    rows = await stored(db, first.event_id)
    assert [(r["timestamp"], orjson.loads(r["metadata"])) for r in rows] == [
        (first.timestamp, {"v": 1})
    ]
    assert len(await stored(db, neighbour.event_id)) == 1
    letters = await read_records(settings, settings.dlq_topic, 2)
    assert [m.value for m in letters] == [encode_event(same_time), encode_event(later)]
    for letter, offset in zip(letters, (3, 4), strict=True):
        headers = dict(letter.headers)
        assert headers["phasestream.field"] == b"event_id"
        assert headers["phasestream.reason"].decode() == REASON
        assert headers["phasestream.source.offset"] == str(offset).encode()


async def test_conflicts_within_one_batch_and_against_stored_rows(database: str) -> None:
    first = make_event("wf-c", metadata={"v": 1})
    other = make_event("wf-c", phase=3)
    clash = msgspec.structs.replace(first, status=first.status, duration_ms=7)
    async with await AuditSink.connect(database) as sink:
        with pytest.raises(ConflictingEventsError) as within:
            await sink.apply(
                "c", Batch.single(REF, [first, other, first, clash], PositionMove(None, 4))
            )
        assert within.value.refused == frozenset({(REF, 3)})
        await sink.apply("c", Batch.single(REF, [first, other, first], PositionMove(None, 3)))
        with pytest.raises(ConflictingEventsError) as stored_before:
            await sink.apply(
                "c", Batch.single(REF, [make_event("wf-c"), clash, first], PositionMove(3, 6))
            )
        assert stored_before.value.refused == frozenset({(REF, 1)})
    # Refused batches left nothing behind: no row, no claimed id, no position move.
    assert await count_rows(database) == 2
    assert await count_rows(database, "SELECT count(*) FROM workflow_phase_event_ids") == 2
    assert (
        await count_rows(database, "SELECT max(next_offset) FROM phasestream_consumer_positions")
        == 3
    )


async def test_a_batch_of_distinct_ids_checks_those_claimed_before(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # No id twice in a batch: ids and rows go straight into their tables; an id an earlier
    # batch claimed sends the batch through the stage, which compares it with the stored.
    first = make_event("wf-d", metadata={"v": 1})
    second = make_event("wf-d", phase=2)
    fresh = make_event("wf-d", phase=3)
    clash = msgspec.structs.replace(second, duration_ms=9)
    async with await AuditSink.connect(database) as sink:
        await sink.apply("d", Batch.single(REF, [first, second], PositionMove(None, 2)))
        # A redelivery of both beside a new event: the new one written, the others no-ops.
        await sink.apply("d", Batch.single(REF, [second, fresh, first], PositionMove(2, 5)))
        assert await count_rows(database) == 3
        with pytest.raises(ConflictingEventsError) as refused:
            await sink.apply(
                "d",
                Batch.single(REF, [make_event("wf-d", phase=4), first, clash], PositionMove(5, 8)),
            )
        assert refused.value.refused == frozenset({(REF, 2)})
    # Neither batch was taken for a log row that the id table lacks (which would keep
    # every later batch on the stage).
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # The refused batch left nothing behind: no row, no claimed id, no position move.
    assert [r["duration_ms"] for r in await stored(database, second.event_id)] == [
        second.duration_ms
    ]
    assert len(await stored(database, fresh.event_id)) == 1
    assert await count_rows(database) == 3
    assert await count_rows(database, "SELECT count(*) FROM workflow_phase_event_ids") == 3
    assert (
        await count_rows(database, "SELECT max(next_offset) FROM phasestream_consumer_positions")
        == 5
    )


async def test_a_replay_keeps_the_first_event_of_an_id(settings: Settings) -> None:
    first = make_event("wf-c", metadata={"v": 1})
    later = msgspec.structs.replace(first, timestamp=first.timestamp + timedelta(minutes=1))
    await publish(settings, [encode_event(first), encode_event(later)])
    db = settings.database_url or ""
    positions = "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions"
    async with audit_running(settings):
        await eventually(lambda: count_rows(db, positions), lambda n: n == 2)
    assert (await replay(settings, "audit")).replayed == 2
    rows = await stored(db, first.event_id)
    assert [r["timestamp"] for r in rows] == [first.timestamp]
    ids = await count_rows(db, "SELECT count(*) FROM workflow_phase_event_ids")
    assert ids == 1
    # The rebuilt id table is the live one: the conflict is still refused after the swap.
    async with await AuditSink.connect(db) as sink:
        with pytest.raises(ConflictingEventsError):
            await sink.apply("other", Batch.single(REF, [later], PositionMove(None, 1)))


async def test_retention_forgets_the_ids_of_the_months_it_drops(database: str) -> None:
    now = datetime.now(UTC)
    old = make_event("wf-r", timestamp=now - timedelta(days=200))
    recent = make_event("wf-r", timestamp=now - timedelta(minutes=1))
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", Batch.single(REF, [old, recent], PositionMove(None, 2)))
        assert await maintain_partitions(sink.pool, retention_months=2)
    conn = await asyncpg.connect(database)
    try:
        kept = await conn.fetch("SELECT id FROM workflow_phase_event_ids")
    finally:
        await conn.close()
    assert [r["id"] for r in kept] == [recent.event_id]


async def test_a_row_whose_id_the_id_table_lacks_is_kept_once(database: str) -> None:
    # An id stored twice before migration 0008, its earlier month then dropped by
    # retention: the log holds a row whose id is in no id row. Its redelivery must be a
    # no-op, not a key violation (the insert goes without ON CONFLICT while it can).
    event, neighbour = make_event("wf-o"), make_event("wf-o", phase=2)
    async with await AuditSink.connect(database) as sink:
        await sink.apply("c", Batch.single(REF, [event], PositionMove(None, 1)))
        await sink.pool.execute(
            "DELETE FROM workflow_phase_event_ids WHERE id = $1", event.event_id
        )
        await sink.apply("c", Batch.single(REF, [neighbour, event], PositionMove(1, 3)))
        await sink.apply("c", Batch.single(REF, [make_event("wf-o")], PositionMove(3, 4)))
    assert len(await stored(database, event.event_id)) == 1
    assert await count_rows(database) == 3
    assert await count_rows(database, "SELECT count(*) FROM workflow_phase_event_ids") == 3
