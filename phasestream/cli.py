"""The `phasestream` command line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from models.errors import InvalidEventError, PhasestreamError
from phasestream import publishing
from phasestream.auth import mint_token
from phasestream.cli_support import fail, load_settings
from phasestream.consumers import ALL, run_consumers
from phasestream.db_cli import db_app
from phasestream.dlq_cli import dlq_app
from phasestream.kafka_cluster import check_kafka
from phasestream.replay import replay_command
from phasestream.report_cli import report_app
from phasestream.settings import Settings
from phasestream.sla_cli import sla_app
from phasestream.subscribe_cli import subscribe_command
from phasestream.wiring import Runtime, create_topics, on_signals, run_migrations

app = typer.Typer(
    help="phasestream: workflow phase events from Kafka into Postgres.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
run_app = typer.Typer(help="Run one consumer.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(run_app, name="run")
app.add_typer(report_app, name="report")
app.command("replay")(replay_command)
app.add_typer(sla_app, name="sla")
app.add_typer(dlq_app, name="dlq")
app.command("subscribe")(subscribe_command)
app.add_typer(db_app, name="db")
log = logging.getLogger("phasestream")
T = TypeVar("T")


@app.command()
def migrate() -> None:
    """Apply the pending database migrations (safe to run twice, or from two processes)."""
    try:
        asyncio.run(run_migrations(load_settings()))
    except PhasestreamError as exc:
        raise fail(str(exc)) from None


@topics_app.command("create")
def topics_create() -> None:
    """Create the phase-event, dead-letter and SLA-violation topics, if they do not exist."""
    settings = load_settings()

    async def checked_create() -> list[str]:
        await check_kafka(settings)
        return await create_topics(settings)

    created = _run_or_fail(checked_create())
    typer.echo(f"created: {', '.join(created) or 'nothing (all topics exist)'}")


def _run_or_fail(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; an error of ours (a refused Kafka login, ...) exits with one line."""
    try:
        return asyncio.run(work)
    except PhasestreamError as exc:
        raise fail(str(exc)) from None


def _run(names: list[str]) -> None:
    settings = load_settings()

    async def main() -> None:
        runtime = Runtime(settings)
        on_signals(runtime.stop.set)
        await run_consumers(runtime, names)

    try:
        asyncio.run(main())
    except* PhasestreamError as group:  # alone, or from inside the consumers' task group
        raise fail("; ".join(str(e) for e in group.exceptions)) from None


@run_app.command("audit")
def run_audit_cmd() -> None:
    """The audit projector: phase events into workflow_phase_logs, exactly once."""
    _run(["audit"])


@run_app.command("sla")
def run_sla_cmd() -> None:
    """The SLA monitor: late and overdue phases to workflow.sla-violations, projected."""
    _run(["sla"])


@run_app.command("metrics")
def run_metrics_cmd() -> None:
    """The metrics consumer: metrics_data rows and the phase metrics on /metrics."""
    _run(["metrics"])


@run_app.command("rollback")
def run_rollback_cmd() -> None:
    """The rollback commander: failed phase N > 1 rolls back to N-1; optional retries."""
    _run(["rollback"])


@run_app.command("notify")
def run_notify_cmd() -> None:
    """The notifier: commands and violations to users' WebSockets (/ws), Slack, e-mail."""
    _run(["notify"])


@run_app.command("all")
def run_all_cmd() -> None:
    """Every consumer in one process, with one HTTP server."""
    _run(list(ALL))


@app.command()
def token(
    subject: Annotated[
        str, typer.Argument(help="Who the token is for: a user id (for /ws) or an analyst's name.")
    ],
    role: Annotated[
        str | None,
        typer.Option(
            help="Role claim, e.g. analyst: /api and the dashboard accept the roles of "
            "PHASESTREAM_API_ROLES; without one the token is good for /ws only."
        ),
    ] = None,
    ttl: Annotated[int, typer.Option(min=1, help="Validity in seconds.")] = 3600,
) -> None:
    """Mint a token (HS256, PHASESTREAM_JWT_SECRET) whose subject is SUBJECT."""
    settings = load_settings()
    if settings.jwt_secret is None:
        raise fail("PHASESTREAM_JWT_SECRET is not set: there is no key to sign with", 2)
    if ttl > settings.jwt_max_lifetime_s:
        raise fail(
            f"--ttl: at most PHASESTREAM_JWT_MAX_LIFETIME_S "
            f"({settings.jwt_max_lifetime_s} s); a longer token would be refused",
            2,
        )
    typer.echo(
        mint_token(
            settings.jwt_secret.get_secret_value(),
            subject,
            ttl,
            role=role,
            role_claim=settings.jwt_role_claim,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )


@app.command()
def dev(
    demo: Annotated[bool, typer.Option(help="Also publish realistic demo workflows.")] = False,
    demo_rate: Annotated[
        float, typer.Option(min=0.1, max=100, help="Demo workflows started per second.")
    ] = 2.0,
) -> None:
    """Everything on one machine: embedded broker and Postgres where none is configured."""
    from phasestream.dev import run_dev  # noqa: PLC0415  # only `dev` needs the embedded stack

    try:
        run_dev(load_settings(), demo=demo, demo_rate=demo_rate)
    except PhasestreamError as exc:
        raise fail(str(exc)) from None


PathOption = Annotated[
    str | None,
    typer.Option("--file", "-f", help="JSON lines to publish; '-' reads standard input."),
]


@app.command()
def publish(  # noqa: PLR0917  # typer maps each parameter to a flag
    file: PathOption = None,
    workflow_id: Annotated[str | None, typer.Option(help="Workflow instance id.")] = None,
    user_id: Annotated[str | None, typer.Option(help="UUID of the user.")] = None,
    phase: Annotated[int | None, typer.Option(help="Phase number, 1-7.")] = None,
    status: Annotated[
        str | None, typer.Option(help="started, completed, failed, rolled_back.")
    ] = None,
    duration_ms: Annotated[int | None, typer.Option(help="Duration of the phase.")] = None,
    previous_phase: Annotated[int | None, typer.Option()] = None,
    error_message: Annotated[str | None, typer.Option()] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object.")] = None,
    event_id: Annotated[str | None, typer.Option(help="Default: a new UUID.")] = None,
    timestamp: Annotated[str | None, typer.Option(help="RFC 3339; default: now.")] = None,
    max_reported: Annotated[
        int,
        typer.Option(
            min=0, help="With --file: most invalid lines shown; a summary counts the rest."
        ),
    ] = 20,
) -> None:
    """Publish one event from flags, or many from JSON lines (invalid lines are not sent)."""
    settings = load_settings()
    if file is not None:
        _publish_file(settings, file, max_reported)
        return
    fields: dict[str, Any] = {
        "workflow_id": workflow_id,
        "user_id": user_id,
        "phase_number": phase,
        "status": status,
        "duration_ms": duration_ms,
        "previous_phase": previous_phase,
        "error_message": error_message,
        "event_id": event_id,
        "timestamp": timestamp,
        "metadata": _json_object(metadata),
    }
    try:
        event = publishing.event_from_flags(fields)
    except InvalidEventError as exc:
        raise fail(f"--{_flag(exc.field)}: {exc.reason}", 2) from None
    typer.echo(_run_or_fail(publishing.publish_one(settings, event)))


def _flag(field: str) -> str:
    return {"phase_number": "phase"}.get(field, field).replace("_", "-")


def _json_object(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise fail(f"--metadata: not valid JSON: {exc}", 2) from None


def _publish_file(settings: Settings, path: str, max_reported: int) -> None:
    if path != "-" and not Path(path).is_file():
        raise fail(f"--file: {path} does not exist", 2)
    reported = 0

    def report(line: publishing.BadLine) -> None:
        nonlocal reported
        reported += 1
        if reported <= max_reported:
            typer.echo(f"invalid: {line}", err=True)

    with publishing.open_source(path) as stream:
        sent, bad = _run_or_fail(
            publishing.publish_lines(
                settings, publishing.read_lines(stream, settings.max_event_bytes), report
            )
        )
    if bad > max_reported:
        typer.echo(
            f"invalid: {bad - max_reported} more invalid lines not shown "
            f"(--max-reported {max_reported})",
            err=True,
        )
    typer.echo(f"published {sent} events; {bad} invalid lines not sent")
    if bad:
        raise typer.Exit(1)


def main() -> None:
    app()
