"""A replay after retention deleted the oldest records keeps the rows it cannot rebuild.

The events are projected; then DeleteRecords moves each partition's log start past about
half of them (all of one partition's), as retention does. `phasestream replay audit` must
rebuild what the log still holds, carry the rows of the deleted records over unchanged,
and say how many and that they are older than the log's start, naming the start offsets.
"""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete

from phasestream.replay import replay
from phasestream.settings import Settings
from streams.kafka import KafkaCluster
from streams.publisher import PhaseEventPublisher
from streams.topic_scan import highwaters, log_starts
from tests.background import consumers_running
from tests.durable.broker_tools import admin_client
from tests.events import many_events
from tests.integration.test_replay import AUDIT_SUM, consumed, fetchval
from tests.topics import read_to_highwater
from tests.waiting import count_rows

pytestmark = [pytest.mark.integration, pytest.mark.durable_broker]

EVENTS = 240


async def test_replay_keeps_the_rows_of_records_retention_deleted(settings: Settings) -> None:
    db, topic, servers = (
        settings.database_url or "",
        settings.phase_events_topic,
        settings.bootstrap_servers,
    )
    async with PhaseEventPublisher(servers, topic) as pub:
        await pub.publish_many(many_events(EVENTS))
    async with consumers_running(settings, "audit"):
        await consumed(db, settings.audit_consumer_group, EVENTS)
    audit_sum = await fetchval(db, AUDIT_SUM)
    ends = await highwaters(KafkaCluster(servers), topic)
    cuts = {tp.partition: end // 2 for tp, end in ends.items() if end >= 2}
    assert len(cuts) >= 2, f"fewer than two partitions hold two records: {ends}"
    emptied = min(cuts)  # retention took all of this one: the replay has nothing to wait for
    cuts[emptied] = ends[TopicPartition(topic, emptied)]
    deleted = sum(
        1 for r in await read_to_highwater(settings, topic) if r.offset < cuts.get(r.partition, 0)
    )
    async with admin_client(servers) as admin:
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(cut) for p, cut in cuts.items()}
        )
    assert {
        tp.partition: s
        for tp, s in (await log_starts(KafkaCluster(servers), ends)).items()
        if tp.partition in cuts
    } == cuts, "the log does not start where records were cut"

    notices: list[str] = []
    result = await replay(settings, "audit", notice=notices.append)

    assert result.unreplayable.rows == deleted
    assert result.replayed == EVENTS - deleted
    assert not result.discarded
    assert {p: s for p, s in result.log_starts.items() if s} == cuts
    first = min(cuts)
    assert notices[0].startswith(
        f"keeping {deleted} rows older than the log's start "
        f"(offset {cuts[first]:,} on partition {first}"
    )
    assert await count_rows(db) == EVENTS
    assert await fetchval(db, AUDIT_SUM) == audit_sum
