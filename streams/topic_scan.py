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
async def _reader(
    cluster: KafkaCluster, client_id: str, max_partition_fetch_bytes: int
) -> AsyncIterator[AIOKafkaConsumer]:
    # earliest: a start below the log start (retention) reads from the log start, never
    # from the end, which would skip records.
    consumer = AIOKafkaConsumer(
        **cluster.client_kwargs(client_id),
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=max_partition_fetch_bytes,
    )
    try:
        await consumer.start()
    except BaseException:
        # A start cut short (a timeout, a broker that is not there) still closes the client.
        await consumer.stop()
        raise
    try:
        yield consumer
    finally:
        await consumer.stop()


async def highwaters(
    cluster: KafkaCluster, topic: str, *, client_id: str = "phasestream-ends"
) -> dict[TopicPartition, int]:
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


async def header_values(
    cluster: KafkaCluster,
    starts: Mapping[TopicPartition, int],
    header: str,
    *,
    client_id: str = "phasestream-scan",
) -> set[bytes]:
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


async def read_to_end(
    cluster: KafkaCluster, topic: str, *, client_id: str = "phasestream-scan"
) -> AsyncIterator[ConsumerRecord]:
    """Every record of ``topic`` from the log start to the ends it had when reading began."""
    ends = await highwaters(cluster, topic, client_id=client_id)
    async for record in read_range(cluster, dict.fromkeys(ends, 0), ends, client_id=client_id):
        yield record


async def read_range(
    cluster: KafkaCluster,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    *,
    client_id: str = "phasestream-scan",
) -> AsyncIterator[ConsumerRecord]:
    """The records of each partition from its start (or the log start, if that is later)
    to its end, exclusive; a partition whose start is not below its end is not read."""
    pending = {tp for tp, end in ends.items() if end > starts.get(tp, 0)}
    if not pending:
        # Nothing to read, and no client: aiokafka's stop() right after assign([]) can
        # raise the CancelledError of its own committed-offsets task.
        return
    async with _reader(cluster, client_id, 1_048_576) as consumer:
        consumer.assign(list(pending))
        # From the log start: seek_to_beginning, where a seek to 0 would rely on the reset.
        if from_start := [tp for tp in pending if starts.get(tp, 0) == 0]:
            await consumer.seek_to_beginning(*from_start)
        for tp in pending - set(from_start):
            consumer.seek(tp, starts[tp])
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


def newest_starts(
    starts: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int], most: int
) -> dict[TopicPartition, int]:
    """Where to start reading so as to read at most ``most`` records, the newest of each
    partition, shared evenly: a partition holding fewer than its share gives the rest to
    the others."""
    sizes = sorted(
        ((max(0, ends[tp] - starts.get(tp, 0)), tp) for tp in ends), key=lambda item: item[0]
    )
    left, chosen = most, {}
    for index, (size, tp) in enumerate(sizes):
        share = -(-left // (len(sizes) - index))  # ceil: the last partition takes what is left
        take = min(size, share)
        chosen[tp] = ends[tp] - take
        left -= take
    return chosen


async def _at_end_of(
    consumer: AIOKafkaConsumer,
    partitions: Iterable[TopicPartition],
    ends: Mapping[TopicPartition, int],
) -> list[TopicPartition]:
    return [tp for tp in partitions if await consumer.position(tp) >= ends[tp]]


async def _at_end(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> list[TopicPartition]:
    done = []
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is not None and await consumer.position(tp) >= highwater:
            done.append(tp)
    return done


async def log_starts(
    cluster: KafkaCluster,
    partitions: Iterable[TopicPartition],
    *,
    client_id: str = "phasestream-starts",
) -> dict[TopicPartition, int]:
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


async def spans(
    cluster: KafkaCluster, topic: str, *, client_id: str = "phasestream-spans"
) -> dict[PartitionRef, tuple[int, int]]:
    """Each partition's (log start, end) now: what a replay reads (start = end when
    retention deleted every record)."""
    ends = await highwaters(cluster, topic, client_id=client_id)
    starts = await log_starts(cluster, list(ends), client_id=client_id)
    return {
        PartitionRef(tp.topic, tp.partition): (min(starts.get(tp, 0), end), end)
        for tp, end in ends.items()
    }
