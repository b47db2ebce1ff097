"""The projector's continuity check: records that resume past where they should, because
retention deleted the rest, stop the consumer (or, by choice, are counted and skipped).

The broker side needs a broker that keeps a log with a moving start: the same behaviour is
proven end to end on Apache Kafka by tests/durable/test_retention.py. Here the projector's
decision is exercised with a stand-in for the two answers it reads from the consumer
(the records fetched and the partition's log start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from models.errors import LostRecordsError
from streams.backoff import Backoff
from streams.progress import ConsumerStats
from streams.projector import Projector, ProjectorConfig

TP = TopicPartition("events", 3)


@dataclass
class Record:
    offset: int


class LogStart:
    """Answers beginning_offsets() as a broker whose log starts at ``start``."""

    def __init__(self, start: int) -> None:
        self.start = start

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[Any, int]:
        return dict.fromkeys(partitions, self.start)


def projector(log_start: int, policy: str) -> Projector[Any]:
    config: ProjectorConfig[Any] = ProjectorConfig(
        "audit", TP.topic, 100, 50, lambda k, v: v, lambda e: e, on_lost_records=policy
    )
    running: Projector[Any] = Projector(
        consumer=LogStart(log_start),
        sink=None,  # type: ignore[arg-type]
        dead_letters=None,  # type: ignore[arg-type]
        config=config,
        backoff=Backoff(0.01, 0.01),
        stats=ConsumerStats("audit"),
    )
    running._expected[TP] = 10  # as seek_to_stored leaves it
    running._fetch_next[TP] = 10
    return running


async def test_records_resuming_at_the_stored_position_pass() -> None:
    running = projector(log_start=0, policy="fail")
    await running._check_continuity({TP: [Record(10), Record(11)]})
    await running._check_continuity({TP: [Record(12)]})
    assert running.stats.lost_records == 0


async def test_a_jump_inside_the_log_loses_nothing() -> None:
    # Compaction or transaction markers: the log still starts before the jump.
    running = projector(log_start=0, policy="fail")
    await running._check_continuity({TP: [Record(14)]})
    assert running.stats.lost_records == 0


async def test_records_deleted_before_they_were_read_stop_the_consumer() -> None:
    running = projector(log_start=25, policy="fail")
    with pytest.raises(LostRecordsError) as lost:
        await running._check_continuity({TP: [Record(25), Record(26)]})
    assert lost.value.count == 15
    assert "offsets 10..24 of events[3]" in str(lost.value)
    assert "PHASESTREAM_ON_LOST_RECORDS=skip" in str(lost.value)


async def test_skip_counts_the_lost_records_and_goes_on() -> None:
    running = projector(log_start=25, policy="skip")
    await running._check_continuity({TP: [Record(25), Record(26)]})
    assert running.stats.lost_records == 15
    await running._check_continuity({TP: [Record(27)]})
    assert running.stats.lost_records == 15
