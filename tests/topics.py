"""Raw records on a topic: sent as given (keys and bytes, no codec), and read back from
its start."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from phasestream.settings import Settings
from tests.waiting import eventually


async def send_records(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send ``(key, value)`` pairs to ``topic`` and wait until the broker has them all."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(
            *[await producer.send(topic, value, key=key) for key, value in records]
        )
    finally:
        await producer.stop()


async def read_records(settings: Settings, topic: str, expected: int) -> list[Any]:
    """At least ``expected`` records of ``topic`` from its start, in partition/offset order."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"reader-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    found: list[Any] = []
    try:

        async def probe() -> int:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
            return len(found)

        await eventually(probe, lambda n: n >= expected, what=f"{expected} records of {topic}")
    finally:
        await consumer.stop()
    return sorted(found, key=lambda m: (m.partition, m.offset))


class _Progress(NamedTuple):
    """What a read to the highwater has reached (its repr is the failure's last value)."""

    behind: list[int]  # partitions whose position is below their fetch highwater
    found: int
    highwaters: dict[int, int | None]


async def read_to_highwater(
    settings: Settings,
    topic: str,
    *,
    timeout_s: float = 30.0,
    max_partition_fetch_bytes: int = 4 * 1_048_576,
    at_least: int = 0,
) -> list[Any]:
    """Every record of ``topic`` (created with ``settings.topic_partitions`` partitions)
    from its start up to each partition's fetch highwater, and at least ``at_least`` of
    them, in partition/offset order.

    The local broker's ``end_offsets()`` is wrong (the last batch's base offset + 1); the
    highwater a fetch response reports is right, so each partition is read until the
    consumer's position reaches the highwater of its latest fetch. Under the load of both
    suites at once, a reader of the local broker twice stopped at the highwater with fewer
    records than were acknowledged (tests/integration/test_relay.py). A reader short of
    ``at_least`` therefore reads once more with a fresh consumer, and a failure names what
    each read found per partition.
    """
    first: AssertionError | None = None
    for _ in range(2):
        try:
            return await _read_once(settings, topic, timeout_s, max_partition_fetch_bytes, at_least)
        except AssertionError as exc:
            if first is not None:
                raise AssertionError(f"{first}; read again: {exc}") from None
            first = exc
    raise AssertionError("unreachable")


async def _read_once(
    settings: Settings,
    topic: str,
    timeout_s: float,
    max_partition_fetch_bytes: int,
    at_least: int,
) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=max_partition_fetch_bytes,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)

        async def progress() -> _Progress:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
            marks = {tp.partition: consumer.highwater(tp) for tp in partitions}
            behind = [
                tp.partition
                for tp in partitions
                if (mark := marks[tp.partition]) is None or await consumer.position(tp) < mark
            ]
            return _Progress(behind, len(found), marks)

        await eventually(
            progress,
            lambda now: not now.behind and now.found >= at_least,
            timeout_s=timeout_s,
            what=f"the fetch highwater of every partition of {topic} (at least {at_least})",
        )
    finally:
        await consumer.stop()
    return sorted(found, key=lambda m: (m.partition, m.offset))
