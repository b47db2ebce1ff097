"""`phasestream replay <projection>`: rebuild a projection from the log, then swap it in.

Steps, in order:
1. note each partition's end (the highwater a fetch reports) as the replay's target, and its
   log start;
2. create the shadow table (an empty copy of the live one);
3. project the topic from each partition's log start into the shadow with the
   projection's own sink code, under a temporary consumer name (its own stored positions)
   and without a consumer group (manual assignment: nothing joins, nothing is left behind
   on the broker), until every partition's stored position reaches its target;
4. carry the live rows the replay could not rebuild (their events are no longer in the
   log: retention, a broker that restarted empty) into the shadow unchanged, after saying
   how many and why; only ``--discard-unreplayable`` leaves them out, said first too;
5. in one transaction: the shadow replaces the live table (views follow) and the replay's
   positions become the live consumer's, which resumes from there.
A failure before step 5 drops the shadow and leaves the live projection as it was.

Nothing with side effects runs: rollback, retries and notifications are other consumer
groups whose positions the replay never touches, and invalid records, dead-lettered on
their first pass, are not sent to the dead-letter topic again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from models.sla.violation_codec import decode_violation
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
from projections.carry_over import RowKeys, Unreplayable, carry_over, find_unreplayable
from projections.database import Connection
from projections.metrics_sink import MetricsDataSink
from projections.positions import load_positions
from projections.shadow import create_shadow, drop_shadow, shadow_name, swap_in
from projections.sink_base import PostgresSink
from projections.sla.violations import ViolationSink
from streams.dead_letters import DeadLetter, DeadLetterWriter
from streams.decoding import Decoder
from streams.kafka import consumer_config
from streams.progress import ProjectorStats
from streams.projector import Projector, ProjectorConfig
from streams.topic_scan import TopicScanError, highwaters, log_starts

POLL_S = 0.25
#: progress(done, total): events replayed so far and the target.
ProgressHook = Callable[[int, int], None]
#: notice(text): what the replay is about to keep or drop, said before it does so.
NoticeHook = Callable[[str], None]
#: A partition's (log start, end) when the replay began: what it replays.
Span = tuple[int, int]


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
    keys: RowKeys
    #: Tables rebuilt and swapped with ``table`` (the audit's event ids).
    companions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: events replayed, and the rows only the old table held."""

    replayed: int
    unreplayable: Unreplayable
    #: True: those rows were dropped (``--discard-unreplayable``); False: carried over.
    discarded: bool
    #: Each partition's log start offset when the replay began.
    log_starts: dict[int, int]


def projections(settings: Settings) -> dict[str, Projection]:
    events = phase_event_decoder(settings)
    return {
        "audit": Projection(AuditSink, AuditSink.default_table, settings.phase_events_topic,
                            settings.audit_consumer_group, events, phase_event_time,
                            RowKeys("id", "timestamp", EVENT_IDS_TABLE, month_partitioned=True),
                            (EVENT_IDS_TABLE,)),
        "sla-violations": Projection(
            ViolationSink, ViolationSink.default_table, settings.sla_violations_topic,
            settings.sla_violations_consumer_group, decode_violation,
            lambda v: v.detected_at, RowKeys("violation_id", "detected_at")),
        "metrics": Projection(MetricsDataSink, MetricsDataSink.default_table,
                              settings.phase_events_topic, settings.metrics_consumer_group,
                              events, phase_event_time, RowKeys("id", "recorded_at")),
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


async def log_start_offsets(settings: Settings,
                            partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    try:
        return await log_starts(kafka_cluster(settings), partitions,
                                client_id="phasestream-replay")
    except TopicScanError as exc:
        raise ReplayError(str(exc)) from exc


async def _wait_for(pool: asyncpg.Pool[Any], name: str, span: dict[TopicPartition, Span],
                    task: asyncio.Task[None], progress: ProgressHook | None) -> None:
    """Until every partition's stored position reaches its end (a partition whose records
    retention deleted, start = end, has nothing to wait for)."""
    refs = {PartitionRef(tp.topic, tp.partition): edges for tp, edges in span.items()}
    total = sum(max(end - start, 0) for start, end in refs.values())
    while True:
        stored = await load_positions(pool, name, refs)
        done = sum(max(min(stored.get(ref, start), end) - start, 0)
                   for ref, (start, end) in refs.items())
        if progress is not None:
            progress(done, total)
        if done >= total:
            return
        if task.done():  # it stopped early: raise what stopped it
            task.result()
            raise ReplayError(f"{name} stopped at {done} of {total} events")
        await asyncio.sleep(POLL_S)


async def replay(settings: Settings, which: str, progress: ProgressHook | None = None, *,
                 discard_unreplayable: bool = False,
                 notice: NoticeHook | None = None) -> ReplayResult:
    """Rebuild projection ``which`` from the log, keep what the log no longer holds (unless
    ``discard_unreplayable``), and swap it in."""
    known = projections(settings)
    if which not in known:
        raise ReplayError(f"unknown projection {which!r}; one of: {', '.join(known)}")
    projection = known[which]
    await check_kafka(settings)
    name = f"{projection.live_consumer}-replay-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url(settings))
    try:
        # Before the ends are read: a live row projected earlier came from below them.
        began: datetime = await conn.fetchval("SELECT now()")
        ends = await end_offsets(settings, projection.topic)
        starts = await log_start_offsets(settings, list(ends))
        span = {tp: (min(starts.get(tp, 0), end), end) for tp, end in ends.items()}
        shadow = await create_shadow(conn, projection.table)
        for companion in projection.companions:
            await create_shadow(conn, companion)
        run = _Rebuild(settings, projection, conn, shadow, name, began,
                       discard_unreplayable, notice or _quiet)
        try:
            kept = await run.rebuild(span, progress)
            await swap_in(conn, table=projection.table, shadow=shadow, topic=projection.topic,
                          live_consumer=projection.live_consumer, replay_consumer=name,
                          companions=projection.companions, top_up=run.carry_over,
                          live_since=began)
        except BaseException:
            await drop_shadow(conn, shadow, name, projection.companions)
            raise
    finally:
        await conn.close()
    # Records below the log start (retention) were never there to replay.
    return dataclasses.replace(kept, replayed=sum(end - start for start, end in span.values()))


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class _Rebuild:
    """Steps 3 and 4 for one replay: into ``shadow`` as consumer ``name``."""

    settings: Settings
    projection: Projection
    conn: asyncpg.Connection[Any]
    shadow: str
    name: str
    began: datetime  #: Postgres' clock before the ends were read
    discard: bool
    notice: NoticeHook

    async def rebuild(self, span: dict[TopicPartition, Span],
                      progress: ProgressHook | None) -> ReplayResult:
        """The shadow gets the log's events, then the rows only the live table holds."""
        options: dict[str, Any] = {}
        if self.projection.sink_type is AuditSink:
            options["retention_months"] = self.settings.audit_retention_months
            options["ids_table"] = shadow_name(EVENT_IDS_TABLE)
        async with connected(self.projection.sink_type, self.settings, table=self.shadow,
                             **options) as sink:
            async with _replaying(self.settings, self.projection, sink, self.name,
                                  list(span)) as task:
                await _wait_for(sink.pool, self.name, span, task, progress)
            result = await self.keep_unreplayable(
                {tp.partition: start for tp, (start, _) in sorted(span.items())})
            if isinstance(sink, AuditSink):  # months ahead, even where no event is yet
                await maintain_partitions(sink.pool, table=self.shadow,
                                          retention_months=sink.retention_months,
                                          ids_table=sink.ids_table)
        return result

    async def keep_unreplayable(self, by_partition: dict[int, int]) -> ReplayResult:
        """Say what the log no longer holds, then carry it over (or leave it out)."""
        table, keys = self.projection.table, self.projection.keys
        lost = await find_unreplayable(self.conn, table=table, shadow=self.shadow, keys=keys,
                                       before=self.began)
        if lost.rows:
            self.notice(describe_unreplayable(lost, by_partition, self.projection.topic,
                                              discard=self.discard))
        await self.carry_over(self.conn)
        return ReplayResult(0, lost, self.discard and lost.rows > 0, by_partition)

    async def carry_over(self, conn: Connection) -> int:
        """The live rows the shadow lacks, into it (the unreplayable ones unless discarding);
        again in the swap's transaction for what the live consumer wrote meanwhile."""
        return await carry_over(conn, table=self.projection.table, shadow=self.shadow,
                                keys=self.projection.keys, before=self.began,
                                discard=self.discard)


def describe_unreplayable(lost: Unreplayable, starts: dict[int, int], topic: str, *,
                          discard: bool) -> str:
    """One line: how many rows, of which event times, and why the log lacks them."""
    span = (f"event times {lost.oldest:%Y-%m-%d %H:%M} .. {lost.newest:%Y-%m-%d %H:%M} UTC"
            if lost.oldest and lost.newest else "no event times")
    moved = {p: s for p, s in starts.items() if s > 0}
    if moved:
        where = ", ".join(f"offset {s:,} on partition {p}" for p, s in moved.items())
        why = (f"older than the log's start ({where} of {topic}): retention deleted "
               "their records")
    else:
        why = (f"not in the log (it starts at offset 0 on all {len(starts)} partitions of "
               f"{topic}: the broker no longer has them, e.g. the embedded broker restarted "
               "empty, or the topic was recreated)")
    if discard:
        return (f"dropping {lost.rows:,} rows {why}; {span} (--discard-unreplayable)")
    return (f"keeping {lost.rows:,} rows {why}, unchanged; {span}; "
            "--discard-unreplayable would drop them")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


def replay_command(
        projection: Annotated[str, typer.Argument(help="audit, sla-violations or metrics")],
        discard_unreplayable: Annotated[bool, typer.Option(
            help="Drop the rows whose events the log no longer holds (kept by default); "
                 "says what it drops first.")] = False,
) -> None:
    """Rebuild a projection from the log into a shadow table, keep the rows the log no
    longer holds, then swap it in atomically."""
    settings = load_settings()
    if projection not in projections(settings):
        raise fail(f"unknown projection {projection!r}; one of: "
                   f"{', '.join(projections(settings))}", 2)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               _RateColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(f"replaying {projection}", total=None)
        try:
            result = asyncio.run(replay(
                settings, projection,
                lambda done, total: bar.update(task, completed=done, total=total),
                discard_unreplayable=discard_unreplayable,
                notice=lambda text: bar.console.print(
                    f"{projection}: {text}", markup=False, highlight=False, soft_wrap=True)))
        except PhasestreamError as exc:
            raise fail(str(exc)) from None
    typer.echo(f"{projection}: {summary(result)} and swapped the rebuilt table in")


def summary(result: ReplayResult) -> str:
    done = f"replayed {result.replayed:,} events"
    if not result.unreplayable.rows:
        return done
    verb = "dropped" if result.discarded else "kept"
    return f"{done}, {verb} {result.unreplayable.rows:,} rows the log no longer holds"
