"""Reading a topic's ends and tails without joining a consumer group.

The ends are the highwater a fetch reports: the local broker's ListOffsets (what
``end_offsets()`` asks) is not reliable, its fetch highwater is. Both readers assign
partitions by hand, so nothing joins a group and nothing is left behind on the broker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from models.errors import PhasestreamError
from models.ports import PartitionRef
from streams.kafka import KafkaCluster
from streams.topics import partition_numbers

TIMEOUT_S: Final = 30.0


class TopicScanError(PhasestreamError):
    """A topic's ends or tail could not be read in time (retriable: the broker may be back)."""

    retriable = True


@contextlib.asynccontextmanager
async def _reader(cluster: KafkaCluster, client_id: str,
                  max_partition_fetch_bytes: int) -> AsyncIterator[AIOKafkaConsumer]:
    # earliest: a start below the log start (retention) reads from the log start, never
    # from the end, which would skip records.
    consumer = AIOKafkaConsumer(**cluster.client_kwargs(client_id), enable_auto_commit=False,
                                fetch_max_wait_ms=50, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=max_partition_fetch_bytes)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def highwaters(cluster: KafkaCluster, topic: str, *,
                     client_id: str = "phasestream-ends") -> dict[TopicPartition, int]:
    """Each partition's end (the next offset to be written)."""
    numbers = await partition_numbers(cluster, topic, client_id=client_id)
    if not numbers:
        raise TopicScanError(f"topic {topic} does not exist")
    tps = [TopicPartition(topic, p) for p in numbers]
    async with _reader(cluster, client_id, 1024) as consumer:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + TIMEOUT_S
        while any(consumer.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                raise TopicScanError(f"no highwater for every partition of {topic}")
            await consumer.getmany(timeout_ms=100, max_records=1)
        return {tp: int(consumer.highwater(tp)) for tp in tps}


async def header_values(cluster: KafkaCluster, starts: Mapping[TopicPartition, int],
                        header: str, *, client_id: str = "phasestream-scan") -> set[bytes]:
    """Values of ``header`` in the records from each start offset to the partition's end."""
    found: set[bytes] = set()
    async with _reader(cluster, client_id, 1_048_576) as consumer:
        consumer.assign(list(starts))
        for tp, start in starts.items():
            consumer.seek(tp, start)
        pending = set(starts)
        deadline = time.monotonic() + TIMEOUT_S
        while pending:
            if time.monotonic() > deadline:
                raise TopicScanError(f"could not read {sorted(map(str, pending))} to the end")
            fetched = await consumer.getmany(*pending, timeout_ms=200)
            for records in fetched.values():
                found.update(v for r in records for k, v in (r.headers or ()) if k == header)
            pending -= set(await _at_end(consumer, pending))
    return found


async def read_to_end(cluster: KafkaCluster, topic: str, *,
                      client_id: str = "phasestream-scan") -> AsyncIterator[ConsumerRecord]:
    """Every record of ``topic`` from the log start to the ends it had when reading began."""
    ends = await highwaters(cluster, topic, client_id=client_id)
    pending = {tp for tp, end in ends.items() if end > 0}
    async with _reader(cluster, client_id, 1_048_576) as consumer:
        consumer.assign(list(pending))
        if pending:
            await consumer.seek_to_beginning(*pending)
        idle_until = time.monotonic() + TIMEOUT_S
        while pending:
            if time.monotonic() > idle_until:
                raise TopicScanError(f"could not read {sorted(map(str, pending))} to the end")
            fetched = await consumer.getmany(*pending, timeout_ms=500)
            if fetched:
                idle_until = time.monotonic() + TIMEOUT_S
            for records in fetched.values():
                for record in records:
                    if record.offset < ends[TopicPartition(record.topic, record.partition)]:
                        yield record
            pending -= set(await _at_end_of(consumer, pending, ends))


async def _at_end_of(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
                     ends: Mapping[TopicPartition, int]) -> list[TopicPartition]:
    return [tp for tp in partitions if await consumer.position(tp) >= ends[tp]]


async def _at_end(consumer: AIOKafkaConsumer,
                  partitions: Iterable[TopicPartition]) -> list[TopicPartition]:
    done = []
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is not None and await consumer.position(tp) >= highwater:
            done.append(tp)
    return done


async def log_starts(cluster: KafkaCluster, partitions: Iterable[TopicPartition], *,
                     client_id: str = "phasestream-starts") -> dict[TopicPartition, int]:
    """Each partition's log start: the oldest offset retention (or a restart) has left.

    ListOffsets(earliest) is right on Apache Kafka (DeleteRecords and retention move it) and
    on the local broker (which deletes nothing, so it is 0 there).
    """
    async with _reader(cluster, client_id, 1024) as consumer:
        try:
            starts = await consumer.beginning_offsets(list(partitions))
        except KafkaError as exc:
            raise TopicScanError(f"could not read the log start offsets: {exc}") from exc
    return {tp: int(offset) for tp, offset in starts.items()}


async def spans(cluster: KafkaCluster, topic: str, *,
                client_id: str = "phasestream-spans") -> dict[PartitionRef, tuple[int, int]]:
    """Each partition's (log start, end) now: what a replay reads (start = end when
    retention deleted every record)."""
    ends = await highwaters(cluster, topic, client_id=client_id)
    starts = await log_starts(cluster, list(ends), client_id=client_id)
    return {PartitionRef(tp.topic, tp.partition): (min(starts.get(tp, 0), end), end)
            for tp, end in ends.items()}
