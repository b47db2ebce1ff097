"""The audit projector against the real broker and Postgres: rows, duplicates, replay."""

from __future__ import annotations

import functools
import operator

import asyncpg
import pytest

from models.phases import PhaseStatus
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.background import audit_running
from tests.events import make_event, many_events
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration


def publisher(settings: Settings) -> PhaseEventPublisher:
    return PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic)


class PhaseFailedError(RuntimeError):
    pass


async def test_phase_success_gives_started_and_completed_rows(settings: Settings) -> None:
    user = make_event().user_id
    async with (
        publisher(settings) as pub,
        pub.phase("wf-ok", user, 3, metadata={"k": "v"}, previous_phase=2) as run,
    ):
        run.metadata["result"] = "built"
    async with audit_running(settings):
        await eventually(lambda: count_rows(settings.database_url or ""), lambda n: n == 2)
    conn = await asyncpg.connect(settings.database_url)
    rows = await conn.fetch("SELECT * FROM workflow_phase_logs ORDER BY timestamp")
    await conn.close()
    assert [r["status"] for r in rows] == ["started", "completed"]
    assert {r["workflow_id"] for r in rows} == {"wf-ok"}
    assert all(r["phase_number"] == 3 and r["previous_phase"] == 2 for r in rows)
    assert rows[0]["duration_ms"] is None
    assert rows[1]["duration_ms"] is not None
    assert rows[1]["duration_ms"] >= 0
    assert rows[0]["id"] == run.started.event_id
    assert '"result": "built"' in rows[1]["metadata"]


async def test_phase_failure_gives_failed_row_with_error_and_reraises(settings: Settings) -> None:
    user = make_event().user_id
    async with publisher(settings) as pub:
        with pytest.raises(PhaseFailedError, match="disk full"):
            async with pub.phase("wf-bad", user, 4):
                raise PhaseFailedError("disk full")
    async with audit_running(settings):
        await eventually(lambda: count_rows(settings.database_url or ""), lambda n: n == 2)
    conn = await asyncpg.connect(settings.database_url)
    failed = await conn.fetchrow("SELECT * FROM workflow_phase_logs WHERE status = 'failed'")
    await conn.close()
    assert failed is not None
    assert failed["error_message"] == "disk full"
    assert "PhaseFailedError: disk full" in failed["error_stack"]
    assert failed["duration_ms"] >= 0


async def test_duplicates_and_replay_leave_one_row_per_event(settings: Settings) -> None:
    events = many_events(300)
    async with publisher(settings) as pub:
        await pub.publish_many(events)
        await pub.publish_many(events[:100])  # a producer retry storm: the same events again
    db = settings.database_url or ""
    async with audit_running(settings):
        await eventually(
            lambda: count_rows(
                db, "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions"
            ),
            lambda n: n == 400,
            what="all 400 records consumed",
        )
    assert await count_rows(db) == 300
    # Replay from offset 0: forget the positions and run again.
    await count_rows(
        db,
        "WITH d AS (DELETE FROM phasestream_consumer_positions RETURNING 1) SELECT count(*) FROM d",
    )
    async with audit_running(settings):
        await eventually(
            lambda: count_rows(
                db, "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions"
            ),
            lambda n: n == 400,
            what="replay consumed all 400 records",
        )
    assert await count_rows(db) == 300
    assert await count_rows(db, "SELECT count(DISTINCT id) FROM workflow_phase_logs") == 300
    wanted = {str(e.event_id) for e in events}
    conn = await asyncpg.connect(db)
    stored = {str(r["id"]) for r in await conn.fetch("SELECT id FROM workflow_phase_logs")}
    await conn.close()
    assert stored == wanted


async def test_restart_resumes_from_stored_positions(settings: Settings) -> None:
    first, second = many_events(200), many_events(150)
    db = settings.database_url or ""
    async with publisher(settings) as pub:
        await pub.publish_many(first)
        async with audit_running(settings):
            await eventually(lambda: count_rows(db), lambda n: n == 200)
        await pub.publish_many(second)
    async with audit_running(settings):
        await eventually(lambda: count_rows(db), lambda n: n == 350)
    positions = await count_rows(db, "SELECT sum(next_offset) FROM phasestream_consumer_positions")
    assert positions == 350


async def test_rolled_back_status_and_all_fields_round_trip(settings: Settings) -> None:
    event = make_event(
        "wf-rb",
        5,
        PhaseStatus.ROLLED_BACK,
        previous_phase=5,
        rollback_triggered=True,
        rollback_to_phase=4,
        duration_ms=12,
        error_message="boom",
        error_stack="trace",
        metadata={"a": [1, 2]},
    )
    async with publisher(settings) as pub:
        await pub.publish(event)
    async with audit_running(settings):
        await eventually(lambda: count_rows(settings.database_url or ""), lambda n: n == 1)
    conn = await asyncpg.connect(settings.database_url)
    row = await conn.fetchrow("SELECT * FROM workflow_phase_logs")
    await conn.close()
    assert row is not None
    assert (
        row["id"],
        row["status"],
        row["rollback_triggered"],
        row["rollback_to_phase"],
        row["error_message"],
        row["duration_ms"],
        row["timestamp"],
    ) == (event.event_id, "rolled_back", True, 4, "boom", 12, event.timestamp)


async def test_a_minimum_fetch_size_holds_a_fetch_no_longer_than_the_batch_wait(
    settings: Settings,
) -> None:
    # 1 MiB is far more than these events: every fetch ends on the wait, not on the size.
    held = settings.model_copy(update={"batch_min_bytes": 1_048_576, "batch_max_wait_ms": 200})
    db = held.database_url or ""
    async with audit_running(held) as projector, publisher(held) as pub:
        for want in range(1, 4):
            await pub.publish(make_event(f"wf-trickle-{want}"))
            at_least = functools.partial(operator.le, want)  # want <= n
            rows = await eventually(lambda: count_rows(db), at_least, timeout_s=10)
            assert rows == want
    assert projector.stats.dead_letters == 0
