"""`phasestream report ...`: the analysts' reports in a terminal table, JSON or CSV."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer

from models.errors import PhasestreamError
from models.report_filters import (
    MAX_LIMIT,
    InvalidFilterError,
    Page,
    ReportFilters,
    parse_filters,
    parse_page,
    parse_workflow_id,
)
from models.running import parse_running
from models.timeseries import DEFAULT_STEP, parse_series
from phasestream.cli_support import fail, load_settings
from phasestream.report_output import Format, emit
from phasestream.settings import Settings
from projections.database import Connection, connection, translate_errors
from projections.reports import analytics, history, running, sla, timeseries
from projections.reports.core import Report

T = TypeVar("T")
report_app = typer.Typer(
    help="Reports for analysts: analytics, SLA, rollbacks, one workflow, "
    "running phases, time series.",
    no_args_is_help=True,
)


Since = Annotated[
    str | None,
    typer.Option(help="Window start: 24h, 7d, 30m (that long ago) or an RFC 3339 timestamp."),
]
Until = Annotated[str | None, typer.Option(help="Window end (exclusive), as --since.")]
PhaseOpt = Annotated[str | None, typer.Option("--phase", help="Only this phase, 1-7.")]
UserOpt = Annotated[str | None, typer.Option("--user", help="Only this user (UUID).")]
FormatOpt = Annotated[Format, typer.Option("--format", help="table, json or csv.")]
LimitOpt = Annotated[str, typer.Option(help=f"Most rows listed, 1-{MAX_LIMIT}.")]
OffsetOpt = Annotated[str, typer.Option(help="Rows skipped first (the next page's offset).")]
#: A screenful; the API's default (100) serves programs rather than a reader.
CLI_LIMIT = "50"


def usage_error(exc: InvalidFilterError) -> typer.Exit:
    """A bad flag value: exit code 2, like click's own usage errors."""
    return fail(f"--{exc.name}: {exc.reason}", 2)


def filters_or_exit(
    since: str | None, until: str | None, phase: str | None, user: str | None
) -> ReportFilters:
    try:
        return parse_filters(
            since=since, until=until, phase=phase, user=user, now=datetime.now(UTC)
        )
    except InvalidFilterError as exc:
        raise usage_error(exc) from None


def page_or_exit(limit: str, offset: str) -> Page:
    try:
        return parse_page(limit, offset)
    except InvalidFilterError as exc:
        raise usage_error(exc) from None


def query(
    settings: Settings, run: Callable[[Connection], Awaitable[T]], *, writes: bool = False
) -> T:
    """Run ``run`` on one connection (as the reader role unless it ``writes``); errors exit
    with code 1."""

    async def main() -> T:
        async with connection(
            settings.resolved_database_url if writes else settings.resolved_reader_url
        ) as conn:
            return await run(conn)

    try:
        return asyncio.run(translate_errors(main))
    except PhasestreamError as exc:
        raise fail(str(exc)) from None


#: A report over the filtered window, one page of it.
ListReport = Callable[[Connection, ReportFilters, Page], Awaitable[Report]]


def _list_report(name: str, report: ListReport, summary: str) -> None:
    """Register ``report`` as `phasestream report <name>`, with the window's flags."""

    def command(  # noqa: PLR0917  # typer maps each parameter to a flag
        since: Since = None,
        until: Until = None,
        phase: PhaseOpt = None,
        user: UserOpt = None,
        limit: LimitOpt = CLI_LIMIT,
        offset: OffsetOpt = "0",
        fmt: FormatOpt = Format.TABLE,
    ) -> None:
        filters, page = filters_or_exit(since, until, phase, user), page_or_exit(limit, offset)
        emit(query(load_settings(), lambda c: report(c, filters, page)), fmt)

    command.__doc__ = summary
    report_app.command(name)(command)


_list_report(
    "analytics",
    analytics.analytics,
    "Per phase: counts, completion/failure/rollback rates, p50/p95/p99 against the SLA.",
)
_list_report("sla", sla.sla, "SLA violations, newest first, and their count per kind.")
_list_report(
    "rollbacks",
    history.rollbacks,
    "Rollbacks per phase, and workflows rolled back more than once (chains).",
)


@report_app.command("workflow")
def workflow_cmd(  # noqa: PLR0917  # typer maps each parameter to a flag
    workflow_id: Annotated[str, typer.Argument(help="The workflow id.")],
    since: Since = None,
    until: Until = None,
    phase: PhaseOpt = None,
    user: UserOpt = None,
    limit: LimitOpt = CLI_LIMIT,
    offset: OffsetOpt = "0",
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """One workflow's summary and timeline: transitions, SLA violations, rollbacks."""
    filters, page = filters_or_exit(since, until, phase, user), page_or_exit(limit, offset)
    try:
        parse_workflow_id(workflow_id)
    except InvalidFilterError as exc:
        raise fail(str(exc), 2) from None
    emit(query(load_settings(), lambda c: history.workflow(c, workflow_id, filters, page)), fmt)


@report_app.command("running")
def running_cmd(  # noqa: PLR0917  # typer maps each parameter to a flag
    phase: PhaseOpt = None,
    user: UserOpt = None,
    at_risk: Annotated[
        bool, typer.Option("--at-risk", help="Only at_risk and overdue phases.")
    ] = False,
    limit: LimitOpt = CLI_LIMIT,
    offset: OffsetOpt = "0",
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Phases in flight now, least time left first: elapsed, threshold, time left, state."""
    settings = load_settings()
    try:
        asked = parse_running(
            phase=phase,
            user=user,
            at_risk=at_risk,
            now=datetime.now(UTC),
            lookback=timedelta(hours=settings.running_lookback_hours),
            share=settings.running_at_risk_share,
        )
        page = parse_page(limit, offset)
    except InvalidFilterError as exc:
        raise usage_error(exc) from None
    consumers = settings.consumer_roles
    emit(query(settings, lambda c: running.running(c, asked, page, consumers)), fmt)


@report_app.command("timeseries")
def timeseries_cmd(  # noqa: PLR0917  # typer maps each parameter to a flag
    metric: Annotated[
        str,
        typer.Option(help="started, completed, failed, rolled_back, violations or p95_duration."),
    ],
    step: Annotated[str, typer.Option(help="Bucket width: 1m, 5m or 1h.")] = DEFAULT_STEP,
    since: Since = None,
    until: Until = None,
    phase: PhaseOpt = None,
    user: UserOpt = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """One metric per time bucket from the audit log (default: the last 24 h), zero-filled."""
    try:
        asked = parse_series(
            metric=metric,
            step=step,
            since=since,
            until=until,
            phase=phase,
            user=user,
            now=datetime.now(UTC),
        )
    except InvalidFilterError as exc:
        raise usage_error(exc) from None
    emit(query(load_settings(), lambda c: timeseries.series(c, asked)), fmt)
