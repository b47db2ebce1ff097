"""The lag phasestream reports is the broker's end offset minus the stored position.

Two places report it: the `phasestream_consumer_lag_records` gauge (live, from the fetch
highwater mark) and the `phasestream_projection_status` view (as of each partition's last
batch). Both are held against the broker's own end offsets. On the embedded broker the end
offsets themselves are wrong, which is why this runs on Apache Kafka only.

To look at a lag that stands still, the projector's write is held by a lock on the
positions table while it has fetched the backlog; then it is let go for a batch or two and
stopped half way, so the view shows real, non-zero lags.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from models.events import PhaseEvent
from models.ports import PartitionRef
from phasestream.settings import Settings
from streams.projector import Projector
from streams.prometheus import PipelineMetrics
from streams.publisher import PhaseEventPublisher
from tests.durable.broker_tools import (
    admin_client,
    audit_task,
    end_offsets,
    outcome,
    projected_then_behind,
    stored_positions,
)
from tests.events import many_events
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.durable_broker]

FIRST, SECOND = 120, 600
LAG_METRIC = "phasestream_consumer_lag_records"


def gauges(registry: CollectorRegistry, consumer: str, partitions: list[int]) -> dict[int, float]:
    values = {
        p: registry.get_sample_value(LAG_METRIC, {"consumer": consumer, "partition": str(p)})
        for p in partitions
    }
    return {p: v for p, v in values.items() if v is not None}


async def test_reported_lag_is_end_offset_minus_stored_position(settings: Settings) -> None:
    db = settings.database_url or ""
    group, topic = settings.audit_consumer_group, settings.phase_events_topic
    servers = settings.bootstrap_servers
    await projected_then_behind(settings, FIRST, SECOND)
    ends = await end_offsets(servers, topic)
    stored = await stored_positions(db, group)
    behind = {p: end - stored.get(p, 0) for p, end in ends.items()}
    assert sum(behind.values()) == SECOND

    registry = CollectorRegistry()
    small_batches = settings.model_copy(update={"batch_max_records": 25})
    holder = await asyncpg.connect(db)
    try:
        hold = holder.transaction()
        await hold.start()
        # Writes to the positions wait for this lock; reads (the seek on assignment) do not.
        await holder.execute("LOCK TABLE phasestream_consumer_positions IN EXCLUSIVE MODE")
        async with audit_task(small_batches, PipelineMetrics(registry)) as (projector, task):
            reported = await eventually(
                lambda: _gauges_async(registry, group, list(ends)),
                lambda g: len(g) == len(ends) or task.done(),
                timeout_s=60,
                what="a lag gauge for every partition",
            )
            assert not task.done(), f"the projector stopped: {outcome(task)}"
            assert reported == behind, "lag gauge != end offset - stored position"
            assert {ref.partition: n for ref, n in projector.stats.lag.items()} == behind
            projector.stop()  # ends after the batch(es) in hand
            await hold.rollback()
            await eventually(
                lambda: stored_positions(db, group),
                lambda p: sum(p.values()) > FIRST or task.done(),
                what="a batch written once the lock is gone",
            )
    finally:
        await holder.close()

    ends_now = await end_offsets(servers, topic)
    assert ends_now == ends
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            'SELECT "partition", stored_position, highwater, lag FROM '
            "phasestream_projection_status WHERE consumer = $1 AND topic = $2",
            group,
            topic,
        )
    finally:
        await conn.close()
    # Partitions written after the second wave was published show that wave's end.
    moved = [r for r in rows if r["stored_position"] > stored.get(r["partition"], 0)]
    assert moved, "no partition moved after the lock was released"
    assert sum(r["stored_position"] for r in rows) < FIRST + SECOND, "the stop came too late"
    for row in moved:
        end = ends[row["partition"]]
        assert row["highwater"] == end, f"partition {row['partition']}: highwater != end"
        assert row["lag"] == end - row["stored_position"], f"partition {row['partition']}"
    assert any(row["lag"] > 0 for row in moved), "every moved partition caught up"


async def _gauges_async(
    registry: CollectorRegistry, consumer: str, partitions: list[int]
) -> dict[int, float]:
    return gauges(registry, consumer, partitions)


class StopOnLastWrite:
    """A PipelineObserver that stops the projector from inside the write applying the last
    of ``total`` events: run() then ends with that write's Kafka commit just started."""

    def __init__(self, total: int) -> None:
        self.total, self.seen = total, 0
        self.projector: Projector[PhaseEvent] | None = None

    def applied(
        self, consumer: str, events: int, seconds: float, last_event_time: datetime | None
    ) -> None:
        self.seen += events
        if self.seen >= self.total and self.projector is not None:
            self.projector.stop()

    def dead_lettered(self, consumer: str, count: int) -> None:
        pass

    def lag(self, consumer: str, lag: Mapping[PartitionRef, int]) -> None:
        pass

    def lost(self, consumer: str, partition: PartitionRef, count: int) -> None:
        pass


async def test_kafka_holds_the_stored_positions_once_the_projector_stops(
    settings: Settings,
) -> None:
    """The Kafka commits run in the background (a write does not wait for the broker);
    the newest offsets still reach the group before run() returns, so lag tools that read
    the group's committed offsets agree with the stored positions."""
    db, group, topic = (
        settings.database_url or "",
        settings.audit_consumer_group,
        settings.phase_events_topic,
    )
    total = 300
    async with PhaseEventPublisher(settings.bootstrap_servers, topic) as publisher:
        await publisher.publish_many(many_events(total))
    observer = StopOnLastWrite(total)
    async with audit_task(settings, observer) as (projector, task):
        observer.projector = projector
        await asyncio.wait_for(asyncio.shield(task), timeout=60)
        assert task.exception() is None, outcome(task)
    stored = await stored_positions(db, group)
    assert sum(stored.values()) == total
    async with admin_client(settings.bootstrap_servers) as admin:
        committed = await admin.list_consumer_group_offsets(group)
    assert {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topic} == {
        p: offset for p, offset in stored.items() if offset > 0
    }
