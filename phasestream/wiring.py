"""Builds the running pieces from settings: database URL, topics, sinks, projectors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from models.errors import SinkUnavailableError
from models.event_codec import decode_record
from models.events import PhaseEvent
from models.ports import PartitionRef
from phasestream.kafka_cluster import kafka_cluster
from phasestream.settings import Settings
from projections.database import connection
from projections.migrate import migrate
from projections.positions import forget_topics
from projections.sink_base import PostgresSink
from streams.backoff import Backoff, retry_unavailable
from streams.consumer_core import groupless_consumer, kafka_consumer
from streams.consumer_stop import stop_consumer
from streams.dead_letters import DeadLetters, DeadLetterWriter, NoDeadLetters
from streams.decoding import Decoder
from streams.kafka import consumer_config
from streams.progress import ConsumerStats, PipelineObserver, log_progress
from streams.projector import Projector, ProjectorConfig
from streams.prometheus import PipelineMetrics
from streams.topics import ensure_topics

log = logging.getLogger(__name__)
T = TypeVar("T")
S = TypeVar("S", bound=PostgresSink[Any])


def phase_event_decoder(settings: Settings) -> Decoder[PhaseEvent]:
    # A lambda, not functools.partial: a partial with keywords builds a dict every call.
    limit = settings.max_event_bytes
    return lambda key, value: decode_record(key, value, max_bytes=limit)


#: attrgetter runs in C: it is called once per event.
phase_event_time: Final[Callable[[PhaseEvent], datetime]] = operator.attrgetter("timestamp")


def backoff(settings: Settings) -> Backoff:
    return Backoff(settings.db_retry_initial_ms / 1000, settings.db_retry_max_ms / 1000)


@dataclass
class Runtime:
    """What the consumers of one process share: settings, stop signal, metrics registry."""

    settings: Settings
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    pipeline: PipelineMetrics = field(init=False)
    http_port: int | None = None  # where /metrics listens, once it does

    def __post_init__(self) -> None:
        self.pipeline = PipelineMetrics(self.registry)


async def run_migrations(settings: Settings) -> int:
    async with connection(settings.resolved_database_url) as conn:
        applied = await migrate(conn)
    log.info("database schema is current (%d migrations applied now)", len(applied))
    return len(applied)


async def forget_lost_log(settings: Settings) -> None:
    """A new memory-only broker starts with empty topics: positions stored for the old log
    would point past its end. Rows are kept (their ids make any re-delivery a no-op)."""
    async with connection(settings.resolved_database_url) as conn:
        dropped = await forget_topics(
            conn, [settings.phase_events_topic, settings.sla_violations_topic]
        )
    if dropped:
        log.info(
            "the embedded broker starts with an empty log: forgot %d stored consumer "
            "positions (projected rows are kept)",
            dropped,
        )


async def create_topics(settings: Settings) -> list[str]:
    return await ensure_topics(
        kafka_cluster(settings),
        [
            settings.phase_events_topic,
            settings.dlq_topic,
            settings.sla_violations_topic,
            settings.rollback_commands_topic,
        ],
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
    )


class StoppedWaiting(Exception):
    """The stop was asked while a consumer still waited for Postgres: it ends there, cleanly
    (nothing was consumed yet, so nothing is left half done)."""


@contextlib.asynccontextmanager
async def connected(
    sink_type: type[S], settings: Settings, *, stop: asyncio.Event | None = None, **options: Any
) -> AsyncIterator[S]:
    """A sink connected to Postgres, waiting (with backoff) while Postgres is not there,
    until ``stop`` is set (then StoppedWaiting)."""
    url = settings.resolved_database_url
    try:
        sink = await retry_unavailable(
            lambda: sink_type.connect(url, **options),
            backoff(settings),
            f"{sink_type.__name__}: connecting to Postgres",
            stop,
        )
    except SinkUnavailableError:
        if stop is None or not stop.is_set():
            raise
        raise StoppedWaiting(
            f"stopped while waiting for Postgres ({sink_type.__name__})",
        ) from None
    async with sink:
        yield sink


@contextlib.asynccontextmanager
async def projector(
    settings: Settings,
    *,
    name: str,
    topic: str,
    sink: PostgresSink[T],
    decoder: Decoder[T],
    event_time: Callable[[T], datetime],
    on_applied: Callable[[Sequence[T]], None] | None = None,
    observer: PipelineObserver | None = None,
    replaying: Sequence[PartitionRef] | None = None,
) -> AsyncIterator[Projector[T]]:
    """A projector of ``topic`` into ``sink`` as consumer group ``name``, subscribed; or,
    ``replaying`` those partitions, assigned by hand in no group and sending no dead letters
    (the live pass sent them), storing its positions as consumer ``name``."""
    # A replay never skips lost records: it reads from each partition's log start.
    config = ProjectorConfig(
        name,
        topic,
        settings.batch_max_records,
        settings.batch_max_wait_ms,
        decoder,
        event_time,
        on_applied,
        "fail" if replaying is not None else settings.on_lost_records,
        settings.writes_in_flight,
    )
    options = consumer_options(settings, name)
    async with contextlib.AsyncExitStack() as stack:
        dlq = await dead_letters(settings, name, stack, live=replaying is None)
        consumer = kafka_consumer(**options) if replaying is None else groupless_consumer(**options)
        await consumer.start()
        stack.push_async_callback(stop_consumer, consumer, name)
        running = Projector(
            consumer=consumer,
            sink=sink,
            dead_letters=dlq,
            config=config,
            backoff=backoff(settings),
            stats=ConsumerStats(name, observer),
        )
        if replaying is None:
            running.subscribe()
        else:
            partitions = [TopicPartition(ref.topic, ref.partition) for ref in replaying]
            consumer.assign(partitions)
            running.assigned(partitions)
        yield running


def consumer_options(settings: Settings, name: str) -> dict[str, Any]:
    """The Kafka consumer options of consumer group ``name``."""
    return consumer_config(
        kafka_cluster(settings),
        group_id=name,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        max_wait_ms=settings.batch_max_wait_ms,
        max_records=settings.batch_max_records,
        min_bytes=settings.batch_min_bytes,
    )


async def dead_letters(
    settings: Settings, name: str, stack: contextlib.AsyncExitStack, *, live: bool = True
) -> DeadLetters:
    """The dead-letter writer of consumer ``name``, started on ``stack``; none if not live."""
    if not live:
        return NoDeadLetters()
    dlq = DeadLetterWriter(
        kafka_cluster(settings),
        settings.dlq_topic,
        name,
        max_value_bytes=settings.dlq_max_value_bytes,
        idempotent=settings.kafka_idempotent_producer,
    )
    await dlq.start()
    stack.push_async_callback(dlq.stop)
    return dlq


async def drive(running: Projector[Any], stop: asyncio.Event, progress_s: float) -> None:
    """Run a projector until ``stop`` is set, logging its progress every ``progress_s``."""
    name, config = running.stats.name, running.config
    log.info(
        "%s: consuming %s, batches of up to %d records", name, config.topic, config.max_records
    )
    progress = asyncio.create_task(log_progress(running.stats, progress_s))
    watcher = asyncio.create_task(_relay(stop, running.stop))
    try:
        await running.run()
    finally:
        progress.cancel()
        watcher.cancel()
    log.info("%s: stopped after %d events", name, running.stats.events_applied)


async def _relay(event: asyncio.Event, action: Callable[[], None]) -> None:
    await event.wait()
    action()


def on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask for a clean stop: the batch in hand finishes or is abandoned."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
