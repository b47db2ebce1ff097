"""`phasestream replay <projection>`: rebuild a projection from offset 0, then swap it in.

Steps, in order:
1. note each partition's end (the highwater a fetch reports) as the replay's target;
2. create the shadow table (an empty copy of the live one);
3. project the topic from offset 0 into the shadow with the projection's own sink code,
   under a temporary consumer name (its own stored positions) and without a consumer
   group (manual assignment: nothing joins, nothing is left behind on the broker), until
   every partition's stored position reaches its target;
4. in one transaction: the shadow replaces the live table (views follow) and the replay's
   positions become the live consumer's, which resumes from there.
A failure before step 4 drops the shadow and leaves the live projection as it was.

Nothing with side effects runs: rollback, retries and notifications are other consumer
groups whose positions the replay never touches, and invalid records, dead-lettered on
their first pass, are not sent to the dead-letter topic again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from models.errors import PhasestreamError
from models.ports import PartitionRef
from models.violation_codec import decode_violation
from phasestream.cli_support import fail, load_settings
from phasestream.kafka_cluster import check_kafka, kafka_cluster
from phasestream.settings import Settings
from phasestream.wiring import (
    backoff,
    connected,
    database_url,
    phase_event_decoder,
    phase_event_time,
)
from projections.audit_sink import EVENT_IDS_TABLE, AuditSink, maintain_partitions
from projections.metrics_sink import MetricsDataSink
from projections.positions import load_positions
from projections.shadow import create_shadow, drop_shadow, shadow_name, swap_in
from projections.sink_base import PostgresSink
from projections.violation_sink import ViolationSink
from streams.dead_letters import DeadLetter, DeadLetterWriter
from streams.decoding import Decoder
from streams.kafka import consumer_config
from streams.progress import ProjectorStats
from streams.projector import Projector, ProjectorConfig
from streams.topic_scan import TopicScanError, highwaters

POLL_S = 0.25
#: progress(done, total): events replayed so far and the target.
ProgressHook = Callable[[int, int], None]


class ReplayError(PhasestreamError):
    """The replay could not run (unknown projection, unreadable topic)."""


@dataclass(frozen=True, slots=True)
class Projection:
    """What one projection replays: its sink, table, source topic and live consumer."""

    sink_type: type[PostgresSink[Any]]
    table: str
    topic: str
    live_consumer: str
    decoder: Decoder[Any]
    event_time: Callable[[Any], datetime]
    #: Tables rebuilt and swapped with ``table`` (the audit's event ids).
    companions: tuple[str, ...] = ()


def projections(settings: Settings) -> dict[str, Projection]:
    events = phase_event_decoder(settings)
    return {
        "audit": Projection(AuditSink, AuditSink.default_table, settings.phase_events_topic,
                            settings.audit_consumer_group, events, phase_event_time,
                            (EVENT_IDS_TABLE,)),
        "sla-violations": Projection(
            ViolationSink, ViolationSink.default_table, settings.sla_violations_topic,
            settings.sla_violations_consumer_group, decode_violation,
            lambda v: v.detected_at),
        "metrics": Projection(MetricsDataSink, MetricsDataSink.default_table,
                              settings.phase_events_topic, settings.metrics_consumer_group,
                              events, phase_event_time),
    }


class _NoDeadLetters(DeadLetterWriter):
    """Invalid records were dead-lettered on their first pass: do not send them again."""

    def __init__(self) -> None:  # no producer: nothing is sent
        self.topic = ""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send_all(self, letters: Sequence[DeadLetter]) -> None:
        return None


class _GrouplessConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """Manually assigned, in no consumer group: there is no Kafka commit to make (the
    projector's commit only feeds lag monitoring; the replay's positions live in Postgres)."""

    async def commit(self, offsets: Any = None) -> None:
        return None


async def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    """Each partition's end, from a fetch's highwater."""
    try:
        return await highwaters(kafka_cluster(settings), topic, client_id="phasestream-replay")
    except TopicScanError as exc:
        raise ReplayError(str(exc)) from exc


@contextlib.asynccontextmanager
async def _replaying(settings: Settings, projection: Projection, sink: PostgresSink[Any],
                     name: str, partitions: Sequence[TopicPartition],
                     ) -> AsyncIterator[asyncio.Task[None]]:
    """The projector into the shadow, running in a task; stopped (batch in hand done) on exit."""
    config = ProjectorConfig(name, projection.topic, settings.batch_max_records,
                             settings.batch_max_wait_ms, projection.decoder, projection.event_time)
    options = consumer_config(kafka_cluster(settings), group_id=name,
                              session_timeout_ms=settings.consumer_session_timeout_ms,
                              max_wait_ms=settings.batch_max_wait_ms,
                              max_records=settings.batch_max_records)
    options["group_id"] = None  # manual assignment: the replay is no member of any group
    consumer = _GrouplessConsumer(**options)
    await consumer.start()
    try:
        running = Projector(consumer=consumer, sink=sink, dead_letters=_NoDeadLetters(),
                            config=config, backoff=backoff(settings), stats=ProjectorStats(name))
        consumer.assign(list(partitions))
        running.assigned(partitions)
        task = asyncio.create_task(running.run())
        try:
            yield task
        finally:
            running.stop()
            await task
    finally:
        await consumer.stop()


async def _wait_for(pool: asyncpg.Pool[Any], name: str, ends: dict[TopicPartition, int],
                    task: asyncio.Task[None], progress: ProgressHook | None) -> None:
    total = sum(ends.values())
    refs = {PartitionRef(tp.topic, tp.partition): end for tp, end in ends.items()}
    while True:
        stored = await load_positions(pool, name, refs)
        done = sum(min(stored.get(ref, 0), end) for ref, end in refs.items())
        if progress is not None:
            progress(done, total)
        if done >= total:
            return
        if task.done():  # it stopped early: raise what stopped it
            task.result()
            raise ReplayError(f"{name} stopped at {done} of {total} events")
        await asyncio.sleep(POLL_S)


async def replay(settings: Settings, which: str, progress: ProgressHook | None = None) -> int:
    """Rebuild projection ``which`` from offset 0 and swap it in; the events replayed."""
    known = projections(settings)
    if which not in known:
        raise ReplayError(f"unknown projection {which!r}; one of: {', '.join(known)}")
    projection = known[which]
    await check_kafka(settings)
    ends = await end_offsets(settings, projection.topic)
    name = f"{projection.live_consumer}-replay-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {}
    if projection.sink_type is AuditSink:
        options["retention_months"] = settings.audit_retention_months
        options["ids_table"] = shadow_name(EVENT_IDS_TABLE)
    conn = await asyncpg.connect(database_url(settings))
    try:
        shadow = await create_shadow(conn, projection.table)
        for companion in projection.companions:
            await create_shadow(conn, companion)
        try:
            async with connected(projection.sink_type, settings, table=shadow,
                                 **options) as sink:
                async with _replaying(settings, projection, sink, name, list(ends)) as task:
                    await _wait_for(sink.pool, name, ends, task, progress)
                if isinstance(sink, AuditSink):  # months ahead, even where no event is yet
                    await maintain_partitions(sink.pool, table=shadow,
                                              retention_months=sink.retention_months,
                                              ids_table=sink.ids_table)
            await swap_in(conn, table=projection.table, shadow=shadow, topic=projection.topic,
                          live_consumer=projection.live_consumer, replay_consumer=name,
                          companions=projection.companions)
        except BaseException:
            await drop_shadow(conn, shadow, name, projection.companions)
            raise
    finally:
        await conn.close()
    return sum(ends.values())


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


def replay_command(projection: Annotated[str, typer.Argument(
        help="audit, sla-violations or metrics")]) -> None:
    """Rebuild a projection from offset 0 into a shadow table, then swap it in atomically."""
    settings = load_settings()
    if projection not in projections(settings):
        raise fail(f"unknown projection {projection!r}; one of: "
                   f"{', '.join(projections(settings))}", 2)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               _RateColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(f"replaying {projection}", total=None)
        try:
            replayed = asyncio.run(replay(
                settings, projection,
                lambda done, total: bar.update(task, completed=done, total=total)))
        except PhasestreamError as exc:
            raise fail(str(exc)) from None
    typer.echo(f"{projection}: replayed {replayed} events and swapped the rebuilt table in")
