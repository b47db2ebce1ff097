"""Reading a topic for people, by assignment (no group): nobody's positions move.

Where to start is a position in the log (the beginning, the end, or the first record at
or after a time). Two brokers answer differently:

- Apache Kafka answers ``end_offsets`` and ``offsets_for_times`` exactly, so the seek
  alone is right.
- The embedded Tansu reports the end of a partition as its last batch's base offset + 1
  (the rest of that batch looks new), and answers ``offsets_for_times`` without a match
  with 0 instead of "none" (the whole log looks newer). So a record is also held against
  the time the reading started from: from the end, a record stamped before the reading
  began that lies below the partition's first fetched highwater is an old one and is not
  shown; from a time, records stamped before it are not shown. This is exact unless a
  producer's clock is behind the reader's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from models.errors import InvalidEventError
from streams.kafka import KafkaCluster, as_cluster, consumer_config
from streams.subscribe.contracts import Contract
from streams.topics import partition_numbers

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Start:
    """Where reading starts: ``beginning``, ``end``, or the first record at or after ``at``."""

    where: Literal["beginning", "end", "time"]
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Tailed(Generic[T]):
    """A record read, with its decoded value or why it is invalid (one of the two is set)."""

    record: Any
    value: T | None
    error: InvalidEventError | None


class Tail(Generic[T]):
    """Records of every partition of ``topic`` from ``start``, as they come."""

    def __init__(
        self,
        servers: str | KafkaCluster,
        topic: str,
        contract: Contract[T],
        start: Start,
        *,
        max_wait_ms: int = 200,
    ) -> None:
        self.topic = topic
        self.partitions: list[TopicPartition] = []
        self.contract = contract
        self.start = start
        self._began_ms = int(time.time() * 1000)
        self._floor_ms: int | None = None
        #: Per partition, below which offset a record may be an old one (from the end).
        self._settled: dict[TopicPartition, int] = {}
        # The shared consumer settings (security included), without a group: no commits, no
        # rebalances, nobody's positions.
        self._cluster = as_cluster(servers)
        config = consumer_config(
            self._cluster,
            group_id="phasestream-subscribe",
            session_timeout_ms=10_000,
            max_wait_ms=max_wait_ms,
            max_records=500,
        )
        self._consumer = AIOKafkaConsumer(**(config | {"group_id": None}))

    async def __aenter__(self) -> Tail[T]:
        try:
            await self._consumer.start()
            await self._position()
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def _position(self) -> None:
        # By name: a consumer's own metadata holds no partitions on Apache Kafka until it
        # was given the topic.
        numbers = await partition_numbers(
            self._cluster, self.topic, client_id="phasestream-subscribe"
        )
        if not numbers:
            raise LookupError(f"topic {self.topic} does not exist")
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(numbers)]
        self._consumer.assign(self.partitions)
        if self.start.where == "beginning":
            await self._consumer.seek_to_beginning(*self.partitions)
        elif self.start.where == "end":
            await self._seek_to_end(self.partitions)
        else:
            await self._seek_to_time()

    async def _seek_to_end(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        ends = await self._consumer.end_offsets(partitions)
        for tp in partitions:
            self._consumer.seek(tp, ends[tp])
        self._floor_ms = self._began_ms

    async def _seek_to_time(self) -> None:
        assert self.start.at is not None
        at_ms = int(self.start.at.timestamp() * 1000)
        found = await self._consumer.offsets_for_times(dict.fromkeys(self.partitions, at_ms))
        for tp, hit in found.items():
            if hit is not None:
                self._consumer.seek(tp, hit.offset)
        await self._seek_to_end([tp for tp, hit in found.items() if hit is None])
        self._floor_ms = at_ms

    async def records(self) -> AsyncIterator[Tailed[T]]:
        """Decoded records, partition by partition of each fetch, in offset order."""
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            for tp in sorted(batch, key=lambda tp: tp.partition):
                for record in batch[tp]:
                    if self._shown(tp, record):
                        yield self._decode(record)

    def _shown(self, tp: TopicPartition, record: Any) -> bool:
        if self._floor_ms is None or record.timestamp >= self._floor_ms:
            return True
        if self.start.where == "time":
            return False
        settled = self._settled.setdefault(tp, self._consumer.highwater(tp) or 0)
        return int(record.offset) >= settled

    def _decode(self, record: Any) -> Tailed[T]:
        try:
            return Tailed(record, self.contract.decode(record.key, record.value), None)
        except InvalidEventError as exc:
            return Tailed(record, None, exc)
