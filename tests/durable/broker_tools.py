"""What the durable-broker tests ask the broker and the database directly.

The broker's own answers (end offsets, log start offsets, topic configs) are the truth
these tests hold phasestream to; on Apache Kafka they are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from models.events import PhaseEvent
from phasestream.consumers import audit_projector
from phasestream.settings import Settings
from streams.kafka import KafkaCluster
from streams.progress import PipelineObserver
from streams.projector import Projector
from streams.publisher import PhaseEventPublisher
from streams.topics import partition_numbers
from tests.events import many_events
from tests.waiting import eventually


@contextlib.asynccontextmanager
async def offsets_reader(servers: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group, only to ask for offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, request_timeout_ms=15_000
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def partitions_of(servers: str, topic: str) -> list[TopicPartition]:
    found = await partition_numbers(KafkaCluster(servers), topic, client_id="phasestream-tests")
    assert found, f"the broker knows no partitions of {topic}"
    return [TopicPartition(topic, p) for p in found]


async def end_offsets(servers: str, topic: str) -> dict[int, int]:
    """Each partition's end offset (the offset the next record will get)."""
    async with offsets_reader(servers) as consumer:
        ends = await consumer.end_offsets(await partitions_of(servers, topic))
    return {tp.partition: int(offset) for tp, offset in ends.items()}


async def log_start_offsets(servers: str, topic: str) -> dict[int, int]:
    """Each partition's log start offset (the oldest record retention has left)."""
    async with offsets_reader(servers) as consumer:
        starts = await consumer.beginning_offsets(await partitions_of(servers, topic))
    return {tp.partition: int(offset) for tp, offset in starts.items()}


async def stored_positions(db: str, consumer: str) -> dict[int, int]:
    """The positions a projection stored in Postgres, by partition."""
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM phasestream_consumer_positions WHERE consumer = $1",
            consumer,
        )
    finally:
        await conn.close()
    return {r["partition"]: r["next_offset"] for r in rows}


@contextlib.asynccontextmanager
async def admin_client(servers: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers, client_id="phasestream-tests", request_timeout_ms=15_000
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def topic_configs(servers: str, topics: list[str]) -> dict[str, dict[str, str]]:
    """Every config the broker applies to each topic (describe_configs), by name."""
    async with admin_client(servers) as admin:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        )
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, message, _type, name, entries, *_ in response.resources:
            assert error_code == 0, f"describe_configs {name}: error {error_code}: {message}"
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found


async def topic_layout(servers: str, topics: list[str]) -> dict[str, list[int]]:
    """Each topic's replica count per partition, in partition order."""
    async with admin_client(servers) as admin:
        described = await admin.describe_topics(topics)
    layout: dict[str, list[int]] = {}
    for topic in described:
        assert topic["error_code"] == 0, f"describe_topics: {topic}"
        parts = sorted(topic["partitions"], key=lambda p: p["partition"])
        layout[topic["topic"]] = [len(p["replicas"]) for p in parts]
    return layout


async def wait_for_topic(servers: str, topic: str, timeout_s: float) -> None:
    """Wait until the broker serves the topic's offsets again (e.g. after a restart)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await asyncio.wait_for(end_offsets(servers, topic), timeout=20)
            return
        except (KafkaError, OSError, AssertionError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the broker at {servers} did not serve {topic} again "
                    f"within {timeout_s:.0f} s: {exc!r}"
                ) from exc
            await asyncio.sleep(1)


@contextlib.asynccontextmanager
async def audit_task(
    settings: Settings,
    observer: PipelineObserver | None = None,
) -> AsyncIterator[tuple[Projector[PhaseEvent], asyncio.Task[None]]]:
    """The audit projector running in a task the test can watch (did it stop? why?)."""
    async with audit_projector(settings, observer=observer) as projector:
        task = asyncio.create_task(projector.run())
        try:
            yield projector, task
        finally:
            projector.stop()
            with contextlib.suppress(Exception):  # its outcome is the test's to judge
                await asyncio.wait_for(task, timeout=30)


def outcome(task: asyncio.Task[Any]) -> str:
    """How a task stands, in words, for assertion messages."""
    if not task.done():
        return "still running"
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return "returned normally" if error is None else f"raised {type(error).__name__}: {error}"


async def projected_then_behind(settings: Settings, first: int, second: int) -> None:
    """Project ``first`` events and stop the projector; then publish ``second`` more, which
    wait unread behind its stored positions."""
    db, group = settings.database_url or "", settings.audit_consumer_group
    async with PhaseEventPublisher(
        settings.bootstrap_servers, settings.phase_events_topic
    ) as publisher:
        await publisher.publish_many(many_events(first))
        async with audit_task(settings):
            await eventually(
                lambda: stored_positions(db, group),
                lambda p: sum(p.values()) == first,
                what="the first events",
            )
        await publisher.publish_many(many_events(second))
