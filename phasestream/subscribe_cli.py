"""`phasestream subscribe TOPIC`: tail a topic for people, decoded with the contract.

Reads by assignment (no consumer group), so nobody's positions move.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import orjson
import typer
from aiokafka.errors import KafkaError

from models.commands import CommandKind, RollbackCommand
from models.events import PhaseEvent
from models.phases import STATUSES
from models.report_filters import InvalidFilterError, parse_time
from models.sla.violation import SlaViolation, ViolationKind
from phasestream.cli_support import fail, load_settings
from phasestream.kafka_cluster import kafka_cluster
from phasestream.settings import Settings
from streams.subscribe.contracts import COMMANDS, PHASE_EVENTS, VIOLATIONS, Contract
from streams.tail import Start, Tail, Tailed

COLUMNS = (
    ("position", 10),
    ("time", 24),
    ("workflow", 20),
    ("kind", 13),
    ("phase", 5),
    ("id", 36),
    ("detail", 0),
)
KINDS = {
    COMMANDS.name: {k.value for k in CommandKind},
    VIOLATIONS.name: {k.value for k in ViolationKind},
    PHASE_EVENTS.name: set(STATUSES),
}


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"


def subscribe_command(  # noqa: PLR0917  # typer maps each parameter to a flag
    topic: Annotated[
        str,
        typer.Argument(
            help="The phase-events, rollback-commands or sla-violations topic (as configured)."
        ),
    ],
    start: Annotated[
        str, typer.Option("--from", help="beginning, end, an RFC 3339 time, or 10m / 2h / 1d ago.")
    ] = "end",
    workflow: Annotated[str | None, typer.Option(help="Only this workflow id.")] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: an event's status, a command's or a violation's kind."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table or json (lines).")] = Format.TABLE,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after N records.")] = None,
) -> None:
    """Tail TOPIC: each record decoded with the contract (invalid ones shown as such)."""
    settings = load_settings()
    contract = contract_of(settings, topic)
    if kind is not None and kind not in KINDS[contract.name]:
        raise fail(
            f"--kind: {contract.name} kinds are {', '.join(sorted(KINDS[contract.name]))}"
            f", got {kind!r}",
            2,
        )
    try:
        where = parse_start(start)
    except InvalidFilterError as exc:
        raise fail(f"--from: {exc.reason}", 2) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _tail(
                settings,
                topic,
                contract=contract,
                where=where,
                shown=Shown(workflow, kind, count),
                fmt=fmt,
            )
        )


def contract_of(settings: Settings, topic: str) -> Contract[Any]:
    known: dict[str, Contract[Any]] = {
        settings.phase_events_topic: PHASE_EVENTS,
        settings.rollback_commands_topic: COMMANDS,
        settings.sla_violations_topic: VIOLATIONS,
    }
    if topic not in known:
        raise fail(
            f"TOPIC: {topic} is none of phasestream's topics ({', '.join(known)}); "
            "set PHASESTREAM_PHASE_EVENTS_TOPIC, ..._ROLLBACK_COMMANDS_TOPIC or "
            "..._SLA_VIOLATIONS_TOPIC if yours are named otherwise",
            2,
        )
    return known[topic]


def parse_start(text: str) -> Start:
    if text == "beginning":
        return Start("beginning")
    if text == "end":
        return Start("end")
    return Start("time", parse_time("from", text, datetime.now(UTC)))


class Shown:
    """The filters, and how many records are still to show."""

    def __init__(self, workflow: str | None, kind: str | None, count: int | None) -> None:
        self.workflow, self.kind, self.left = workflow, kind, count

    def wants(self, contract: Contract[Any], tailed: Tailed[Any]) -> bool:
        if tailed.value is None:  # invalid: its workflow is only the key, its kind unknown
            key = tailed.record.key
            return self.kind is None and (self.workflow is None or key == self.workflow.encode())
        return (self.workflow is None or contract.workflow_id(tailed.value) == self.workflow) and (
            self.kind is None or contract.kind(tailed.value) == self.kind
        )

    def done(self) -> bool:
        if self.left is None:
            return False
        self.left -= 1
        return self.left <= 0


async def _tail(
    settings: Settings,
    topic: str,
    *,
    contract: Contract[Any],
    where: Start,
    shown: Shown,
    fmt: Format,
) -> None:
    try:
        async with Tail(kafka_cluster(settings), topic, contract, where) as tail:
            typer.echo(
                f"reading {tail.topic} ({len(tail.partitions)} partitions) from "
                f"{_where(tail)}; Ctrl-C stops",
                err=True,
            )
            if fmt is Format.TABLE:
                typer.echo(_line({name: name for name, _ in COLUMNS}))
            async for tailed in tail.records():
                if not shown.wants(tail.contract, tailed):
                    continue
                typer.echo(
                    _line(table_row(tailed))
                    if fmt is Format.TABLE
                    else orjson.dumps(json_row(tailed)).decode()
                )
                if shown.done():
                    return
    except LookupError as exc:
        raise fail(f"TOPIC: {exc.args[0]} on {settings.bootstrap_servers}", 2) from None
    except KafkaError as exc:
        raise fail(
            f"the broker at {settings.bootstrap_servers} cannot be read "
            f"({type(exc).__name__}: {exc}); is it running? "
            "(PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS)"
        ) from None


def _where(tail: Tail[Any]) -> str:
    return tail.start.at.isoformat() if tail.start.at else f"the {tail.start.where}"


def _line(cells: dict[str, str]) -> str:
    return "  ".join(
        cells[name].ljust(width)[:width] if width else cells[name] for name, width in COLUMNS
    ).rstrip()


def _record_time(record: Any) -> str:
    moment = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def table_row(tailed: Tailed[Any]) -> dict[str, str]:
    record, value = tailed.record, tailed.value
    base = {"position": f"{record.partition}:{record.offset}", "time": _record_time(record)}
    if tailed.error is not None:
        key = (record.key or b"").decode(errors="replace")
        return base | {
            "workflow": key,
            "kind": "INVALID",
            "phase": "",
            "id": "",
            "detail": str(tailed.error),
        }
    if isinstance(value, RollbackCommand):
        return base | {
            "workflow": value.workflow_id,
            "kind": value.kind.value,
            "phase": f"{value.failed_phase}>{value.rollback_to_phase}",
            "id": str(value.command_id),
            "detail": f"attempt {value.attempt}; {value.reason or ''}",
        }
    if isinstance(value, SlaViolation):
        return base | {
            "workflow": value.workflow_id,
            "kind": value.kind.value,
            "phase": str(value.phase_number),
            "id": str(value.violation_id),
            "detail": f"{value.elapsed_ms} ms > {value.threshold_ms} ms",
        }
    assert isinstance(value, PhaseEvent)
    detail = value.error_message or ("" if value.duration_ms is None else f"{value.duration_ms} ms")
    return base | {
        "workflow": value.workflow_id,
        "kind": value.status.value,
        "phase": str(value.phase_number),
        "id": str(value.event_id),
        "detail": detail,
    }


def json_row(tailed: Tailed[Any]) -> dict[str, Any]:
    record = tailed.record
    row: dict[str, Any] = {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": _record_time(record),
        "key": None if record.key is None else record.key.decode(errors="replace"),
    }
    if tailed.error is not None:
        raw = None if record.value is None else record.value.decode(errors="replace")
        return row | {
            "invalid": {"field": tailed.error.field, "reason": tailed.error.reason},
            "raw": raw,
        }
    value = tailed.value
    # A phase event is a msgspec Struct, which orjson does not write; the commands and
    # verdicts are dataclasses, which it does.
    return row | {
        "value": msgspec.structs.asdict(value) if isinstance(value, msgspec.Struct) else value
    }
