"""Builds the running pieces from settings: database URL, topics, sinks, projectors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from prometheus_client import CollectorRegistry

from models.event_codec import decode_record
from models.events import PhaseEvent
from phasestream.kafka_cluster import kafka_cluster
from phasestream.local_stack import running_embedded_postgres_url
from phasestream.settings import Settings
from projections.audit_sink import AuditSink
from projections.database import connect, translated
from projections.migrate import migrate
from projections.positions import forget_topics
from projections.sink_base import PostgresSink
from streams.backoff import Backoff, retry_unavailable
from streams.consumer_stop import stop_consumer
from streams.dead_letters import DeadLetterWriter
from streams.decoding import Decoder
from streams.kafka import consumer_config
from streams.progress import PipelineObserver, ProjectorStats, log_progress
from streams.projector import Projector, ProjectorConfig, kafka_consumer
from streams.prometheus import PipelineMetrics
from streams.topics import ensure_topics

log = logging.getLogger(__name__)
T = TypeVar("T")
S = TypeVar("S", bound=PostgresSink[Any])


def database_url(settings: Settings) -> str:
    return settings.database_url or running_embedded_postgres_url(settings.postgres_dir)


def reader_database_url(settings: Settings) -> str:
    """Where the read-only surfaces (HTTP API, reports) connect: the reader role's URL."""
    return settings.api_database_url or database_url(settings)


def phase_event_decoder(settings: Settings) -> Decoder[PhaseEvent]:
    limit = settings.max_event_bytes
    return lambda key, value: decode_record(key, value, max_bytes=limit)


def phase_event_time(event: PhaseEvent) -> datetime:
    return event.timestamp


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
    async with translated():
        conn = await connect(database_url(settings))
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    log.info("database schema is current (%d migrations applied now)", len(applied))
    return len(applied)


async def forget_lost_log(settings: Settings) -> None:
    """A new memory-only broker starts with empty topics: positions stored for the old log
    would point past its end. Rows are kept (their ids make any re-delivery a no-op)."""
    conn = await asyncpg.connect(database_url(settings))
    try:
        dropped = await forget_topics(conn, [settings.phase_events_topic,
                                             settings.sla_violations_topic])
    finally:
        await conn.close()
    if dropped:
        log.info("the embedded broker starts with an empty log: forgot %d stored consumer "
                 "positions (projected rows are kept)", dropped)


async def create_topics(settings: Settings) -> list[str]:
    return await ensure_topics(
        kafka_cluster(settings),
        [settings.phase_events_topic, settings.dlq_topic, settings.sla_violations_topic,
         settings.rollback_commands_topic],
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor)


@contextlib.asynccontextmanager
async def connected(sink_type: type[S], settings: Settings, **options: Any,
                    ) -> AsyncIterator[S]:
    """A sink connected to Postgres, waiting (with backoff) while Postgres is not there."""
    url = database_url(settings)
    sink = await retry_unavailable(lambda: sink_type.connect(url, **options), backoff(settings),
                                   f"{sink_type.__name__}: connecting to Postgres")
    async with sink:
        yield sink


@contextlib.asynccontextmanager
async def projector(settings: Settings, *, name: str, topic: str, sink: PostgresSink[T],
                    decoder: Decoder[T], event_time: Callable[[T], datetime],
                    on_applied: Callable[[Sequence[T]], None] | None = None,
                    observer: PipelineObserver | None = None,
                    ) -> AsyncIterator[Projector[T]]:
    """A projector of ``topic`` into ``sink`` as consumer group ``name``, subscribed."""
    config = ProjectorConfig(name, topic, settings.batch_max_records,
                             settings.batch_max_wait_ms, decoder, event_time, on_applied,
                             settings.on_lost_records)
    cluster = kafka_cluster(settings)
    dlq = DeadLetterWriter(cluster, settings.dlq_topic, name,
                           max_value_bytes=settings.dlq_max_value_bytes,
                           idempotent=settings.kafka_idempotent_producer)
    consumer = kafka_consumer(**consumer_config(
        cluster, group_id=name,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        max_wait_ms=settings.batch_max_wait_ms, max_records=settings.batch_max_records))
    await dlq.start()
    try:
        await consumer.start()
        try:
            running = Projector(consumer=consumer, sink=sink, dead_letters=dlq, config=config,
                                backoff=backoff(settings), stats=ProjectorStats(name, observer))
            running.subscribe()
            yield running
        finally:
            await stop_consumer(consumer, name)
    finally:
        await dlq.stop()


@contextlib.asynccontextmanager
async def audit_projector(settings: Settings, observer: PipelineObserver | None = None,
                          ) -> AsyncIterator[Projector[PhaseEvent]]:
    """The audit projector, started, subscribed, and stopped on exit."""
    async with connected(AuditSink, settings,
                         retention_months=settings.audit_retention_months) as sink, projector(
            settings, name=settings.audit_consumer_group, topic=settings.phase_events_topic,
            sink=sink, decoder=phase_event_decoder(settings), event_time=phase_event_time,
            observer=observer) as running:
        yield running


async def drive(running: Projector[Any], stop: asyncio.Event, progress_s: float) -> None:
    """Run a projector until ``stop`` is set, logging its progress every ``progress_s``."""
    name, config = running.stats.name, running.config
    log.info("%s: consuming %s, batches of up to %d records", name, config.topic,
             config.max_records)
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
