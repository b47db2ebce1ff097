"""Records that retention deleted before the projector read them are never skipped silently.

The projector stored position P for a partition; the broker's log now starts at S > P
(retention deleted P .. S-1 while the projector was away). Those events can never reach the
audit log. The right answer is a loud one: the projector stops with an error and stores
no position past the gap, so the loss is seen, and an operator decides (e.g. to accept it
by moving the stored position, or to restore the events from elsewhere).

The records are deleted with the admin DeleteRecords call: it moves the log start offset
exactly as time or size retention does, without waiting for the broker's retention check
(every 5 minutes by default).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete

from phasestream.settings import Settings
from tests.durable.broker_tools import (
    admin_client,
    audit_task,
    end_offsets,
    log_start_offsets,
    outcome,
    projected_then_behind,
    stored_positions,
)
from tests.waiting import count_rows

pytestmark = [pytest.mark.integration, pytest.mark.durable_broker]

FIRST, SECOND = 60, 240
WATCH_S = 30.0  # long enough for a projector to read and write what is left


async def test_records_deleted_before_they_were_read_stop_the_projector_loudly(
    settings: Settings,
) -> None:
    db = settings.database_url or ""
    group, topic = settings.audit_consumer_group, settings.phase_events_topic
    servers = settings.bootstrap_servers
    # The projector is away; more events arrive, and retention takes some of them.
    await projected_then_behind(settings, FIRST, SECOND)
    stored = await stored_positions(db, group)
    ends = await end_offsets(servers, topic)
    cuts = {
        p: stored.get(p, 0) + (end - stored.get(p, 0)) // 2
        for p, end in ends.items()
        if end - stored.get(p, 0) >= 2
    }
    assert cuts, f"no partition has two unread records: stored {stored}, ends {ends}"
    async with admin_client(servers) as admin:
        starts = await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(cut) for p, cut in cuts.items()}
        )
    assert {tp.partition: start for tp, start in starts.items()} == cuts
    assert {
        p: s for p, s in (await log_start_offsets(servers, topic)).items() if p in cuts
    } == cuts, "the broker's log does not start where records were deleted"
    rows_before = await count_rows(db)

    async with audit_task(settings) as (_, task):
        deadline = time.monotonic() + WATCH_S
        while not task.done() and time.monotonic() < deadline:
            now = await stored_positions(db, group)
            if any(now.get(p) != stored.get(p) for p in cuts):
                await asyncio.sleep(1)  # let it finish what it is doing, then judge
                break
            await asyncio.sleep(0.2)
        positions = await stored_positions(db, group)
        rows = await count_rows(db)
        state = outcome(task)
        failed = task.done() and not task.cancelled() and task.exception() is not None

    skipped = {
        p: f"stored {stored.get(p, 0)} -> {positions.get(p)}, offsets "
        f"{stored.get(p, 0)}..{cut - 1} deleted"
        for p, cut in cuts.items()
        if positions.get(p) != stored.get(p)
    }
    assert not skipped, (
        f"the audit projector moved past records it never read, without failing "
        f"(it {state}; {rows - rows_before} rows written): {skipped}"
    )
    assert failed, (
        f"the audit projector neither failed nor moved on within {WATCH_S:.0f} s of "
        f"finding offsets {cuts} gone: it {state}"
    )
