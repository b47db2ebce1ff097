"""phasestream_projection_status: position, highwater, lag and last event time per partition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.background import audit_running
from tests.events import make_event
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration
POSITIONS = "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions"


async def test_status_view_shows_position_highwater_lag_and_last_event(settings: Settings) -> None:
    db = settings.database_url or ""
    base = datetime(2026, 3, 1, 12, tzinfo=UTC)
    events = [
        make_event(f"wf-{i % 10}", 1 + i % 7, timestamp=base + timedelta(minutes=i))
        for i in range(80)
    ]
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(events)
        async with audit_running(settings):
            await eventually(lambda: count_rows(db, POSITIONS), lambda n: n == 80)
        # More events the consumer has not seen: the stored lag is as of its last batch.
        await pub.publish_many([make_event("wf-late", timestamp=base)])
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT * FROM phasestream_projection_status WHERE consumer = $1",
            settings.audit_consumer_group,
        )
    finally:
        await conn.close()
    assert rows
    assert sum(r["stored_position"] for r in rows) == 80
    assert all(r["highwater"] == r["stored_position"] and r["lag"] == 0 for r in rows)
    newest: dict[str, datetime] = {}
    for event in events:
        newest[event.workflow_id] = max(event.timestamp, newest.get(event.workflow_id, base))
    # Each partition's last event time is the newest event time of the workflows on it.
    assert max(r["last_event_at"] for r in rows) == events[-1].timestamp
    assert {r["last_event_at"] for r in rows} <= set(newest.values())
    assert all(r["event_age"] > timedelta(0) for r in rows)


async def test_lag_is_highwater_minus_position(settings: Settings) -> None:
    db = settings.database_url or ""
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            "INSERT INTO phasestream_consumer_positions (consumer, topic, partition, "
            "next_offset, highwater, last_event_at) VALUES ('c', 't', 0, 40, 100, now()), "
            "('c', 't', 1, 7, NULL, NULL)"
        )
        rows = await conn.fetch(
            'SELECT "partition", lag FROM phasestream_projection_status '
            "WHERE consumer = 'c' ORDER BY 1"
        )
    finally:
        await conn.close()
    assert [(r["partition"], r["lag"]) for r in rows] == [(0, 60), (1, None)]
