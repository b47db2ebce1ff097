"""Helpers shared by the integration tests: waiting, events, a projector in the background."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.events import PhaseEvent
from models.phases import PhaseStatus
from phasestream.consumers import audit_projector, run_consumers
from phasestream.settings import Settings
from phasestream.wiring import Runtime
from streams.projector import Projector

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                     timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll ``probe`` until ``done`` holds for its value; fail with the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s:.0f} s; last value: {value!r}")
        await asyncio.sleep(0.1)


def make_event(workflow_id: str = "wf-1", phase: int = 1,
               status: PhaseStatus = PhaseStatus.STARTED, **fields: Any) -> PhaseEvent:
    base: dict[str, Any] = {
        "event_id": uuid.uuid4(), "workflow_id": workflow_id,
        "user_id": uuid.UUID("00000000-0000-4000-8000-000000000001"), "phase_number": phase,
        "status": status, "timestamp": datetime.now(UTC) - timedelta(seconds=1)}
    base.update(fields)
    return PhaseEvent(**base)


def many_events(count: int, workflows: int = 50) -> list[PhaseEvent]:
    return [make_event(f"wf-{i % workflows}", phase=1 + i % 7,
                       metadata={"n": i}) for i in range(count)]


@contextlib.asynccontextmanager
async def consumers_running(settings: Settings, *names: str) -> AsyncIterator[Runtime]:
    """Consumers and their HTTP server in a background task, as `phasestream run` runs them."""
    runtime = Runtime(settings)
    task = asyncio.create_task(run_consumers(runtime, list(names)))
    try:
        await eventually(_port_of(runtime, task), lambda port: port is not None,
                         what="the HTTP server")
        yield runtime
    finally:
        runtime.stop.set()
        await asyncio.wait_for(task, timeout=30)


def _port_of(runtime: Runtime, task: asyncio.Task[None]) -> Callable[[], Awaitable[int | None]]:
    async def probe() -> int | None:
        if task.done():
            task.result()  # raises what stopped it
        return runtime.http_port
    return probe


@contextlib.asynccontextmanager
async def audit_running(settings: Settings) -> AsyncIterator[Projector[PhaseEvent]]:
    """The audit projector in a background task of this event loop, stopped on exit."""
    async with audit_projector(settings) as projector:
        task = asyncio.create_task(projector.run())
        try:
            yield projector
        finally:
            projector.stop()
            await asyncio.wait_for(task, timeout=30)


async def count_rows(db: str, sql: str = "SELECT count(*) FROM workflow_phase_logs",
                     *args: Any) -> int:
    conn = await asyncpg.connect(db)
    try:
        value: int = await conn.fetchval(sql, *args)
        return value
    finally:
        await conn.close()


async def read_records(settings: Settings, topic: str, expected: int) -> list[Any]:
    """At least ``expected`` records of ``topic`` from its start, in partition/offset order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers,
                                group_id=f"reader-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", session_timeout_ms=2000,
                                heartbeat_interval_ms=500)
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


async def read_to_highwater(settings: Settings, topic: str, *, timeout_s: float = 30.0,
                            max_partition_fetch_bytes: int = 4 * 1_048_576) -> list[Any]:
    """Every record of ``topic`` (created with ``settings.topic_partitions`` partitions)
    from its start up to each partition's fetch highwater, in partition/offset order.

    The local broker's ``end_offsets()`` is wrong (the last batch's base offset + 1); the
    highwater a fetch response reports is right, so each partition is read until the
    consumer's position reaches the highwater of its latest fetch.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=max_partition_fetch_bytes)
    await consumer.start()
    found: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)

        async def behind() -> list[int]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
            return [tp.partition for tp in partitions
                    if (mark := consumer.highwater(tp)) is None
                    or await consumer.position(tp) < mark]
        await eventually(behind, lambda left: not left, timeout_s=timeout_s,
                         what=f"the fetch highwater of every partition of {topic}")
    finally:
        await consumer.stop()
    return sorted(found, key=lambda m: (m.partition, m.offset))
