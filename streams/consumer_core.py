"""What every Kafka consumer of phasestream shares, whatever it does with a batch: the
client, the rebalance listener, the lag it reports, dead-lettering with its count.

``streams/projector.py`` (positions in its sink) and ``streams/notifier.py`` (positions
in Kafka) differ in where a partition starts and how a batch becomes durable; the rest is
here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from models.ports import PartitionRef
from streams.dead_letters import DeadLetter, DeadLetters
from streams.progress import ConsumerStats

#: What a consumer does with partitions when they are assigned or revoked.
OnPartitions = Callable[[Iterable[TopicPartition]], None]


def kafka_consumer(**config: Any) -> AIOKafkaConsumer:
    """The Kafka client of a consumer (one place to make it, for tests and tools)."""
    return AIOKafkaConsumer(**config)


class _GrouplessConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """Manually assigned, in no consumer group: there is no Kafka commit to make (the
    projector's commit only feeds lag monitoring; its positions live in its sink)."""

    async def commit(self, offsets: Any = None) -> None:
        return None


def groupless_consumer(**config: Any) -> AIOKafkaConsumer:
    """A consumer for partitions assigned by hand (a replay): no group, no commits."""
    return _GrouplessConsumer(**{**config, "group_id": None})


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Hands the assigned and revoked partitions to the consumer that reads them."""

    def __init__(self, *, assigned: OnPartitions, revoked: OnPartitions) -> None:
        self._assigned = assigned
        self._revoked = revoked

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._assigned(assigned)


def lag(
    consumer: AIOKafkaConsumer,
    positions: Mapping[TopicPartition, int | None],
) -> dict[PartitionRef, int]:
    """Records behind each partition's fetch highwater (right on the local broker, where
    end_offsets() is not). A session that expired (e.g. a paused process) leaves the
    consumer without its partitions before the revoke callback forgets them: only the
    partitions it still holds count."""
    behind = {}
    held = consumer.assignment()
    for tp, position in positions.items():
        if tp not in held:
            continue
        highwater = consumer.highwater(tp)
        if highwater is not None:
            behind[PartitionRef(tp.topic, tp.partition)] = max(0, highwater - (position or 0))
    return behind


async def send_dead_letters(
    dlq: DeadLetters, stats: ConsumerStats, letters: Sequence[DeadLetter]
) -> None:
    """Send ``letters`` (awaited: the broker has them all) and count them."""
    if letters:
        await dlq.send_all(letters)
        stats.dead_lettered(len(letters))
