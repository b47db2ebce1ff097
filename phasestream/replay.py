"""`phasestream replay <projection>`: which projections can be rebuilt, wired.

The algorithm (shadow table, replay, rows the log no longer holds, swap) is
``projections/replay.py``; this module gives it the log side (``streams/``: the spans, the
projector built by ``wiring.projector`` as the live one is) and the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
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
from phasestream.wiring import connected, phase_event_decoder, phase_event_time, projector
from projections.audit_sink import EVENT_IDS_TABLE, AuditSink
from projections.carry_over import RowKeys
from projections.metrics_sink import MetricsDataSink
from projections.replay import (
    NoticeHook,
    ProgressHook,
    Projection,
    ReplayError,
    ReplayResult,
    Span,
)
from projections.replay import replay as rebuild
from projections.shadow import shadow_name
from projections.sink_base import PostgresSink
from projections.sla.violations import ViolationSink
from streams.decoding import Decoder
from streams.topic_scan import TopicScanError, spans

__all__ = ["ReplayError", "ReplayResult", "replay", "replay_command"]


@dataclass(frozen=True, slots=True)
class Replayable:
    """A projection and how its topic's records decode."""

    projection: Projection
    decoder: Decoder[Any]
    event_time: Callable[[Any], datetime]


def projections(settings: Settings) -> dict[str, Replayable]:
    events = phase_event_decoder(settings)
    audit = Projection(
        AuditSink,
        AuditSink.default_table,
        settings.phase_events_topic,
        settings.audit_consumer_group,
        RowKeys("id", "timestamp", EVENT_IDS_TABLE, month_partitioned=True),
        (EVENT_IDS_TABLE,),
        {
            "retention_months": settings.audit_retention_months,
            "ids_table": shadow_name(EVENT_IDS_TABLE),
        },
    )
    violations = Projection(
        ViolationSink,
        ViolationSink.default_table,
        settings.sla_violations_topic,
        settings.sla_violations_consumer_group,
        RowKeys("violation_id", "detected_at"),
    )
    metrics = Projection(
        MetricsDataSink,
        MetricsDataSink.default_table,
        settings.phase_events_topic,
        settings.metrics_consumer_group,
        RowKeys("id", "recorded_at"),
    )
    return {
        "audit": Replayable(audit, events, phase_event_time),
        "sla-violations": Replayable(violations, decode_violation, lambda v: v.detected_at),
        "metrics": Replayable(metrics, events, phase_event_time),
    }


@dataclass(frozen=True, slots=True)
class _Wiring:
    """The replay's ``ReplayWiring``: Kafka through ``streams/``, sinks as the live ones."""

    settings: Settings
    replayable: Replayable

    async def spans(self, topic: str) -> dict[PartitionRef, Span]:
        try:
            return await spans(kafka_cluster(self.settings), topic, client_id="phasestream-replay")
        except TopicScanError as exc:
            raise ReplayError(str(exc)) from exc

    def sink(self, table: str) -> contextlib.AbstractAsyncContextManager[PostgresSink[Any]]:
        projection = self.replayable.projection
        return connected(
            projection.sink_type, self.settings, table=table, **projection.sink_options
        )

    @contextlib.asynccontextmanager
    async def projecting(
        self,
        sink: PostgresSink[Any],
        name: str,
        partitions: Sequence[PartitionRef],
    ) -> AsyncIterator[asyncio.Task[None]]:
        async with projector(
            self.settings,
            name=name,
            topic=self.replayable.projection.topic,
            sink=sink,
            decoder=self.replayable.decoder,
            event_time=self.replayable.event_time,
            replaying=partitions,
        ) as running:
            task = asyncio.create_task(running.run())
            try:
                yield task
            finally:
                running.stop()
                await task


async def replay(
    settings: Settings,
    which: str,
    progress: ProgressHook | None = None,
    *,
    discard_unreplayable: bool = False,
    notice: NoticeHook | None = None,
) -> ReplayResult:
    """Rebuild projection ``which`` from the log, keep what the log no longer holds (unless
    ``discard_unreplayable``), and swap it in."""
    known = projections(settings)
    if which not in known:
        raise ReplayError(f"unknown projection {which!r}; one of: {', '.join(known)}")
    await check_kafka(settings)
    projection = known[which].projection
    name = f"{projection.live_consumer}-replay-{uuid.uuid4().hex[:8]}"
    return await rebuild(
        settings.resolved_database_url,
        projection,
        _Wiring(settings, known[which]),
        name,
        progress,
        discard=discard_unreplayable,
        notice=notice,
    )


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


def replay_command(
    projection: Annotated[str, typer.Argument(help="audit, sla-violations or metrics")],
    discard_unreplayable: Annotated[
        bool,
        typer.Option(
            help="Drop the rows whose events the log no longer holds (kept by default); "
            "says what it drops first."
        ),
    ] = False,
) -> None:
    """Rebuild a projection from the log into a shadow table, keep the rows the log no
    longer holds, then swap it in atomically."""
    settings = load_settings()
    if projection not in projections(settings):
        raise fail(
            f"unknown projection {projection!r}; one of: {', '.join(projections(settings))}", 2
        )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(f"replaying {projection}", total=None)
        try:
            result = asyncio.run(
                replay(
                    settings,
                    projection,
                    lambda done, total: bar.update(task, completed=done, total=total),
                    discard_unreplayable=discard_unreplayable,
                    notice=lambda text: bar.console.print(
                        f"{projection}: {text}", markup=False, highlight=False, soft_wrap=True
                    ),
                )
            )
        except PhasestreamError as exc:
            raise fail(str(exc)) from None
    typer.echo(f"{projection}: {summary(result)} and swapped the rebuilt table in")


def summary(result: ReplayResult) -> str:
    done = f"replayed {result.replayed:,} events"
    if not result.unreplayable.rows:
        return done
    verb = "dropped" if result.discarded else "kept"
    return f"{done}, {verb} {result.unreplayable.rows:,} rows the log no longer holds"
