"""Raw records on a topic: sent as given (keys and bytes, no codec), and read back from
its start."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

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
    consumer's position reaches the highwater of its latest fetch. Under load the local
    broker's highwater can also trail records it has acknowledged, so a caller that knows
    how many were sent says so in ``at_least``.
    """
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

        async def behind() -> list[int]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
            return [
                tp.partition
                for tp in partitions
                if (mark := consumer.highwater(tp)) is None or await consumer.position(tp) < mark
            ]

        await eventually(
            behind,
            lambda left: not left and len(found) >= at_least,
            timeout_s=timeout_s,
            what=f"the fetch highwater of every partition of {topic}",
        )
    finally:
        await consumer.stop()
    return sorted(found, key=lambda m: (m.partition, m.offset))
