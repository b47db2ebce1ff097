"""Builds the running pieces from settings: database URL, sinks, consumers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable

import asyncpg

from models.codec import decode_record
from models.events import PhaseEvent
from phasestream.local_stack import running_embedded_postgres_url
from phasestream.logs import tune_gc
from phasestream.settings import Settings
from projections.audit_sink import AuditSink
from projections.migrate import migrate
from projections.positions import forget_topics
from streams.backoff import Backoff, retry_unavailable
from streams.dead_letters import DeadLetterWriter
from streams.decoding import Decoder
from streams.kafka import consumer_config
from streams.progress import ProjectorStats, log_progress
from streams.projector import Projector, ProjectorConfig, kafka_consumer
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


def database_url(settings: Settings) -> str:
    return settings.database_url or running_embedded_postgres_url(settings.postgres_dir)


def phase_event_decoder(settings: Settings) -> Decoder[PhaseEvent]:
    limit = settings.max_event_bytes
    return lambda key, value: decode_record(key, value, max_bytes=limit)


def backoff(settings: Settings) -> Backoff:
    return Backoff(settings.db_retry_initial_ms / 1000, settings.db_retry_max_ms / 1000)


async def run_migrations(settings: Settings) -> int:
    conn = await asyncpg.connect(database_url(settings))
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
        dropped = await forget_topics(conn, [settings.phase_events_topic])
    finally:
        await conn.close()
    if dropped:
        log.info("the embedded broker starts with an empty log: forgot %d stored consumer "
                 "positions (audit rows are kept)", dropped)


async def create_topics(settings: Settings) -> list[str]:
    return await ensure_topics(
        settings.bootstrap_servers, [settings.phase_events_topic, settings.dlq_topic],
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor)


@contextlib.asynccontextmanager
async def audit_projector(settings: Settings) -> AsyncIterator[Projector[PhaseEvent]]:
    """The audit projector, started, subscribed, and stopped on exit."""
    name = settings.audit_consumer_group
    config = ProjectorConfig(name, settings.phase_events_topic, settings.batch_max_records,
                             settings.batch_max_wait_ms, phase_event_decoder(settings),
                             event_time=lambda event: event.timestamp)
    url = database_url(settings)
    sink = await retry_unavailable(lambda: AuditSink.connect(url), backoff(settings),
                                   f"{name}: connecting to Postgres")
    dlq = DeadLetterWriter(settings.bootstrap_servers, settings.dlq_topic, name)
    consumer = kafka_consumer(**consumer_config(
        settings.bootstrap_servers, group_id=name,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        max_wait_ms=settings.batch_max_wait_ms, max_records=settings.batch_max_records))
    async with sink:
        await dlq.start()
        try:
            await consumer.start()
            try:
                projector = Projector(consumer=consumer, sink=sink, dead_letters=dlq,
                                      config=config, backoff=backoff(settings),
                                      stats=ProjectorStats(name))
                projector.subscribe()
                yield projector
            finally:
                await consumer.stop()
        finally:
            await dlq.stop()


def on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask for a clean stop: the batch in hand finishes or is abandoned."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


async def run_audit(settings: Settings, stop: asyncio.Event | None = None) -> None:
    async with audit_projector(settings) as projector:
        tune_gc()
        log.info("audit projector: group %s on %s, batches of up to %d records",
                 settings.audit_consumer_group, settings.phase_events_topic,
                 settings.batch_max_records)
        progress = asyncio.create_task(log_progress(projector.stats))
        watcher = asyncio.create_task(_relay(stop, projector.stop)) if stop else None
        try:
            await projector.run()
        finally:
            for task in (progress, watcher):
                if task is not None:
                    task.cancel()
        log.info("audit projector stopped after %d events", projector.stats.events_applied)


async def _relay(event: asyncio.Event, action: Callable[[], None]) -> None:
    await event.wait()
    action()
