"""A broker restart mid-stream: the audit projector keeps going, every event lands once.

The restart (the conftest's ``restart_broker``: the started Apache Kafka's clean stop and
start, or PHASESTREAM_TEST_BROKER_RESTART_COMMAND for an external broker) falls while a
publisher and the projector are both busy.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from aiokafka.errors import KafkaError

from models.events import PhaseEvent
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.durable.broker_tools import (
    audit_task,
    end_offsets,
    outcome,
    stored_positions,
    wait_for_topic,
)
from tests.events import many_events
from tests.waiting import count_rows, eventually

pytestmark = [pytest.mark.integration, pytest.mark.durable_broker]

EVENTS = 4000
CHUNK = 100
CHUNK_PAUSE_S = 0.25  # ~10 s of publishing: the restart falls in the middle of it


def timed(restart: Callable[[], None]) -> float:
    """Run the restart; its duration in seconds."""
    began = time.monotonic()
    restart()
    return time.monotonic() - began


class SteadyPublisher:
    """Publishes the events in chunks, re-sending a chunk the broker did not take.

    A chunk that failed half way is sent whole again: its records may be in the log
    twice, which the projector must absorb (the event id is the row's key).
    """

    def __init__(self, settings: Settings, events: list[PhaseEvent]) -> None:
        self.settings = settings
        self.events = events
        self.sent = 0
        self.failed_sends = 0

    async def run(self) -> None:
        async with PhaseEventPublisher(
            self.settings.bootstrap_servers, self.settings.phase_events_topic
        ) as publisher:
            for start in range(0, len(self.events), CHUNK):
                chunk = self.events[start : start + CHUNK]
                await self._send(publisher, chunk)
                self.sent += len(chunk)
                await asyncio.sleep(CHUNK_PAUSE_S)

    async def _send(self, publisher: PhaseEventPublisher, chunk: list[PhaseEvent]) -> None:
        deadline = time.monotonic() + 180
        while True:
            try:
                await publisher.publish_many(chunk)
                return
            except KafkaError:
                self.failed_sends += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)


async def test_broker_restart_mid_stream_every_event_lands_exactly_once(
    settings: Settings, restart_broker: Callable[[], None]
) -> None:
    db = settings.database_url or ""
    group = settings.audit_consumer_group
    events = many_events(EVENTS)
    publisher = SteadyPublisher(settings, events)
    async with audit_task(settings) as (projector, task):
        publishing = asyncio.create_task(publisher.run())
        try:
            # Mid-stream: the projector has written some, the publisher is still going.
            await eventually(
                lambda: count_rows(db),
                lambda n: n >= EVENTS // 5,
                timeout_s=60,
                what="the first fifth of the events projected",
            )
            assert not publishing.done(), "the publisher finished before the restart"
            rows_before = await count_rows(db)
            took = await asyncio.to_thread(timed, restart_broker)
            await wait_for_topic(settings.bootstrap_servers, settings.phase_events_topic, 120)
            await asyncio.wait_for(publishing, timeout=240)
        finally:
            if not publishing.done():
                publishing.cancel()
        rows = await eventually(
            lambda: count_rows(db),
            lambda n: n >= EVENTS or task.done(),
            timeout_s=180,
            what="every event projected after the restart",
        )
        assert not task.done(), f"the projector stopped across the restart: {outcome(task)}"
        ends = await end_offsets(settings.bootstrap_servers, settings.phase_events_topic)
        await eventually(
            lambda: stored_positions(db, group),
            lambda p: p == ends,
            timeout_s=60,
            what=f"stored positions at the end offsets {ends}",
        )
    assert rows_before < EVENTS, "the restart did not fall mid-stream"
    assert rows == EVENTS
    assert await count_rows(db, "SELECT count(DISTINCT id) FROM workflow_phase_logs") == EVENTS
    ids = await _ids(db)
    assert ids == {e.event_id for e in events}, (
        f"{len({e.event_id for e in events} - ids)} events missing, "
        f"{len(ids - {e.event_id for e in events})} unexpected"
    )
    # The log holds every event at least once (more where a chunk was sent twice).
    assert sum(ends.values()) >= EVENTS
    assert projector.stats.events_applied >= EVENTS
    print(
        f"restart took {took:.1f} s; {publisher.failed_sends} chunk sends failed and were "
        f"repeated; {sum(ends.values()) - EVENTS} records in the log twice"
    )


async def _ids(db: str) -> set[uuid.UUID]:
    conn = await asyncpg.connect(db)
    try:
        return {
            uuid.UUID(str(r["id"])) for r in await conn.fetch("SELECT id FROM workflow_phase_logs")
        }
    finally:
        await conn.close()
