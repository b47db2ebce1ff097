"""Reading the dead-letter topic back, by assignment (no consumer group, so nobody's
positions move): every letter, or the summary of all of them or of the newest few.

``phasestream dlq ...`` and ``GET /api/dlq`` both read through here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord

from models.dead_letters import StoredLetter, stored_letter
from models.dlq_summary import DlqSummary, Tally, count_letter, summary_of
from streams.kafka import KafkaCluster
from streams.topic_scan import highwaters, log_starts, newest_starts, read_range, read_to_end

CLIENT_ID = "phasestream-dlq"


async def read_letters(
    cluster: KafkaCluster, topic: str, *, client_id: str = CLIENT_ID
) -> AsyncIterator[StoredLetter]:
    """Every letter of ``topic``, from its start to the end it had when reading began."""
    async for record in read_to_end(cluster, topic, client_id=client_id):
        yield _letter(record)


async def summarise_letters(
    cluster: KafkaCluster, topic: str, *, most: int | None = None, client_id: str = CLIENT_ID
) -> DlqSummary:
    """The summary of the letters of ``topic``; with ``most``, of at most that many, the
    newest of each partition (``truncated`` says whether that left some out)."""
    ends = await highwaters(cluster, topic, client_id=client_id)
    starts = await log_starts(cluster, ends, client_id=client_id)
    total = sum(max(0, ends[tp] - starts.get(tp, 0)) for tp in ends)
    window = starts if most is None else newest_starts(starts, ends, most)
    tally: Tally = {}
    scanned = 0
    async for record in read_range(cluster, window, ends, client_id=client_id):
        count_letter(tally, _letter(record))
        scanned += 1
    return summary_of(tally, scanned, total)


def _letter(record: ConsumerRecord) -> StoredLetter:
    return stored_letter(
        record.partition,
        record.offset,
        record.timestamp,
        key=record.key,
        value=record.value,
        headers=record.headers,
    )
