"""`phasestream sla ...`: suggest thresholds from observed durations, and set them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from models.report_filters import (
    InvalidFilterError,
    parse_duration_ms,
    parse_headroom,
    parse_percentile,
    parse_phase,
    parse_time,
)
from phasestream.cli_support import fail, load_settings
from phasestream.report_cli import FormatOpt, query, usage_error
from phasestream.report_output import Format, emit
from projections.sla import suggest as thresholds_suggest

sla_app = typer.Typer(
    help="SLA thresholds: suggest them from observed durations, set them.", no_args_is_help=True
)


@sla_app.command("suggest")
def suggest_cmd(
    since: Annotated[
        str, typer.Option(help="Observe executions since: 30d, 24h or an RFC 3339 timestamp.")
    ] = "30d",
    percentile: Annotated[
        str, typer.Option(help="The percentile the threshold should cover, in (0, 100].")
    ] = "95",
    headroom: Annotated[str, typer.Option(help="Added on top of the percentile.")] = "20%",
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Per phase: current threshold, observed p50/p95/p99, a suggestion (percentile times
    1 + headroom, rounded up to a whole second) and how many executions exceed each."""
    try:
        start = parse_time("since", since, datetime.now(UTC))
        share, extra = parse_percentile(percentile), parse_headroom(headroom)
    except InvalidFilterError as exc:
        raise usage_error(exc) from None
    emit(query(load_settings(), lambda c: thresholds_suggest.suggest(c, start, share, extra)), fmt)


@sla_app.command("set")
def set_cmd(
    phase: Annotated[str, typer.Argument(help="The phase, 1-7.")],
    duration: Annotated[str, typer.Argument(help="e.g. 90s, 2m, 1500ms.")],
) -> None:
    """Set a phase's SLA threshold; the views follow at once, the monitor on its next reload."""
    try:
        number, threshold_ms = parse_phase(phase), parse_duration_ms("duration", duration)
    except InvalidFilterError as exc:  # arguments, not flags: name them without dashes
        raise fail(str(exc), 2) from None
    previous = query(
        load_settings(),
        lambda c: thresholds_suggest.set_threshold(c, number, threshold_ms),
        writes=True,
    )
    before = "unset" if previous is None else f"{previous} ms"
    typer.echo(f"phase {number}: SLA threshold {before} -> {threshold_ms} ms")
