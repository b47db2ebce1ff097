"""`phasestream dlq ...`: what was rejected and why, and sending corrected events back.

Letters are read from the dead-letter topic by assignment (no consumer group, so nobody's
positions move), from the log start to the end the topic had when the command began.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer
from aiokafka.errors import KafkaError

from models.dead_letters import LetterFilter, StoredLetter
from models.dlq_summary import DlqSummary
from models.errors import PhasestreamError
from models.report_filters import InvalidFilterError, parse_time
from phasestream.cli_support import fail, load_settings
from phasestream.kafka_cluster import check_kafka, kafka_cluster
from phasestream.redrive import redrive
from phasestream.report_cli import FormatOpt, usage_error
from phasestream.report_output import Format, emit
from phasestream.settings import Settings
from projections.reports.core import Report, Scalar, Section, plain
from streams.dlq_scan import read_letters, summarise_letters

T = TypeVar("T")
dlq_app = typer.Typer(help="Dead letters: summary, list, show one, redrive.", no_args_is_help=True)

ReasonOpt = Annotated[
    str | None,
    typer.Option("--reason", help="Only letters whose reason contains this text (any case)."),
]
FieldOpt = Annotated[str | None, typer.Option("--field", help="Only letters for this field.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="Only letters dead-lettered since: 24h, 7d, 30m or an RFC 3339 time."
    ),
]
LimitOpt = Annotated[
    int, typer.Option("--limit", min=1, max=10_000, help="Most letters to list (newest first).")
]


def letter_filter(reason: str | None, field: str | None, since: str | None) -> LetterFilter:
    try:
        start = None if since is None else parse_time("since", since, datetime.now(UTC))
    except InvalidFilterError as exc:
        raise usage_error(exc) from None
    return LetterFilter(reason=reason, since=start, field=field)


async def letters(settings: Settings) -> AsyncIterator[StoredLetter]:
    await check_kafka(settings)
    async for letter in read_letters(kafka_cluster(settings), settings.dlq_topic):
        yield letter


def run_on_broker(settings: Settings, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main``; a broker or database that fails exits with one line naming it."""
    try:
        return asyncio.run(main())
    except KafkaError as exc:
        raise fail(
            f"Kafka at {settings.bootstrap_servers} did not answer "
            f"({type(exc).__name__}: {exc}); start it, or set "
            "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS"
        ) from None
    except PhasestreamError as exc:
        raise fail(str(exc)) from None


@dlq_app.command("summary")
def summary_cmd(fmt: FormatOpt = Format.TABLE) -> None:
    """Dead letters by reason, field and source topic, with the oldest and newest."""
    settings = load_settings()

    async def main() -> DlqSummary:
        await check_kafka(settings)
        return await summarise_letters(kafka_cluster(settings), settings.dlq_topic)

    report = summary_report(run_on_broker(settings, main), settings.dlq_topic)
    emit(report, fmt)
    if fmt is Format.TABLE:
        typer.echo(f"{report.meta['total']} dead letters in {settings.dlq_topic}")


def summary_report(summary: DlqSummary, topic: str) -> Report:
    """The summary as a report: the totals GET /api/dlq gives, then each source topic,
    field and reason on its own line."""
    lines = tuple(
        (c.source_topic, c.field, c.reason, c.count, plain(c.oldest), plain(c.newest))
        for c in summary.lines
    )
    topics = tuple((t.topic, t.count, plain(t.oldest), plain(t.newest)) for t in summary.topics())
    return Report(
        Section(
            "dead letters by reason",
            ("source_topic", "field", "reason", "count", "oldest", "newest"),
            lines,
        ),
        extra=(
            Section("by_reason", ("reason", "count"), tuple(summary.by_reason())),
            Section("by_field", ("field", "count"), tuple(summary.by_field())),
            Section("topics", ("topic", "count", "oldest", "newest"), topics),
        ),
        meta={
            "topic": topic,
            "total": summary.total,
            "scanned": summary.scanned,
            "truncated": summary.truncated,
        },
    )


LIST_COLUMNS = ("dlq_time", "source", "field", "reason", "key", "preview")


def _list_row(letter: StoredLetter) -> tuple[Scalar, ...]:
    key = None if letter.key is None else letter.key.decode("utf-8", errors="replace")
    return (
        plain(letter.dlq_time),
        letter.source,
        letter.field,
        letter.reason,
        key,
        letter.preview(),
    )


@dlq_app.command("list")
def list_cmd(
    reason: ReasonOpt = None,
    field: FieldOpt = None,
    since: SinceOpt = None,
    limit: LimitOpt = 50,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """The newest dead letters: where each came from, why, and a preview of its value."""
    settings = load_settings()
    wanted = letter_filter(reason, field, since)

    async def main() -> tuple[list[tuple[Scalar, ...]], int]:
        newest: list[tuple[datetime, int, int, tuple[Scalar, ...]]] = []
        matched = 0
        async for letter in letters(settings):
            if not wanted(letter):
                continue
            matched += 1
            item = (letter.dlq_time, letter.dlq_partition, letter.dlq_offset, _list_row(letter))
            # A bounded heap of the newest: memory stays at --limit rows, whatever the DLQ holds.
            (heapq.heappush if len(newest) < limit else heapq.heappushpop)(newest, item)
        return [row for *_, row in sorted(newest, reverse=True)], matched

    rows, matched = run_on_broker(settings, main)
    emit(
        Report(
            Section("dead letters", LIST_COLUMNS, tuple(rows)),
            meta={"matched": matched, "shown": len(rows)},
        ),
        fmt,
    )
    if fmt is Format.TABLE and matched > len(rows):
        typer.echo(f"{matched - len(rows)} more; raise --limit or narrow with --reason/--since")


@dlq_app.command("show")
def show_cmd(
    topic: Annotated[str, typer.Argument(help="The source topic (or the DLQ topic).")],
    partition: Annotated[int, typer.Argument(min=0)],
    offset: Annotated[int, typer.Argument(min=0)],
    raw: Annotated[bool, typer.Option(help="Write only the value's bytes.")] = False,
) -> None:
    """One dead letter whole: the original key, value bytes and headers, and why."""
    settings = load_settings()
    by_dlq = topic == settings.dlq_topic

    def is_it(letter: StoredLetter) -> bool:
        if by_dlq:
            return (letter.dlq_partition, letter.dlq_offset) == (partition, offset)
        return (letter.source_topic, letter.source_partition, letter.source_offset) == (
            topic,
            partition,
            offset,
        )

    async def main() -> StoredLetter | None:
        async for letter in letters(settings):
            if is_it(letter):
                return letter
        return None

    found = run_on_broker(settings, main)
    if found is None:
        raise fail(
            f"no dead letter for {topic}/{partition}/{offset} in {settings.dlq_topic}; "
            "`phasestream dlq list` shows where they came from"
        )
    if raw:
        sys.stdout.buffer.write(found.value or b"")
        return
    sys.stdout.write(orjson.dumps(_whole(found), option=orjson.OPT_INDENT_2).decode() + "\n")


def _whole(letter: StoredLetter) -> dict[str, Any]:
    def text(data: bytes | None) -> str | None:
        return None if data is None else data.decode("utf-8", errors="replace")

    return {
        "dlq": {
            "partition": letter.dlq_partition,
            "offset": letter.dlq_offset,
            "time": plain(letter.dlq_time),
        },
        "source": letter.source,
        "field": letter.field,
        "reason": letter.reason,
        "consumer": letter.consumer,
        "truncated": letter.truncated,
        "key": text(letter.key),
        "headers": [[k, text(v)] for k, v in letter.headers],
        "value": text(letter.value),
    }


@dlq_app.command("redrive")
def redrive_cmd(
    reason: ReasonOpt = None,
    field: FieldOpt = None,
    since: SinceOpt = None,
    fixes: Annotated[
        str | None,
        typer.Option(
            "--fixes",
            help='JSON lines {"source": "TOPIC/PARTITION/OFFSET", "event": {...}}: '
            "send these corrected events instead, for only the letters they name.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Validate and report; send nothing.")] = False,
) -> None:
    """Send selected dead letters (or their fixes) back to the phase-events topic, once each."""
    settings = load_settings()
    wanted = letter_filter(reason, field, since)
    selected = run_on_broker(settings, lambda: _selected(settings, wanted))
    outcome = run_on_broker(settings, lambda: redrive(settings, selected, fixes, dry_run=dry_run))
    for line in outcome.invalid[:20]:
        typer.echo(f"not sent: {line}", err=True)
    if len(outcome.invalid) > 20:
        typer.echo(f"not sent: {len(outcome.invalid) - 20} more invalid letters", err=True)
    typer.echo(outcome.summary(settings.phase_events_topic, dry_run=dry_run))
    if outcome.invalid:
        raise typer.Exit(1)


async def _selected(settings: Settings, wanted: LetterFilter) -> list[StoredLetter]:
    return [letter async for letter in letters(settings) if wanted(letter)]
