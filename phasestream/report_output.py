"""How a report is printed: JSON, CSV, or tables that fit the terminal.

A table is printed as it is when it fits the console's width (rich reads COLUMNS, and a
terminal's own width). When it does not: long values are shortened (ids to their first 8
characters, timestamps to month, day and time of day, whole floats without ``.0``) and
headers abbreviated; then ids a reader rarely needs are left out (the title says which);
if that still does not fit, every row is printed as a vertical block of ``column value``
lines. Output that is piped, with no COLUMNS, is never cut: scripts
should read ``--format json`` or ``csv``, but a table in a file stays whole too.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from enum import StrEnum
from typing import Final

import orjson
import typer
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from projections.reports.core import Report, Scalar, Section


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME: Final = re.compile(r"\d{4}-(\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z")
#: Shorter headers for a narrow console; a column not named here keeps its name.
_SHORT: Final = {
    "workflow_id": "workflow",
    "user_id": "user",
    "event_id": "event",
    "started_event_id": "event",
    "command_id": "command",
    "duration_ms": "dur_ms",
    "threshold_ms": "sla_ms",
    "excess_ms": "over_ms",
    "started": "start",
    "completed": "done",
    "failed": "fail",
    "rolled_back": "rb",
    "completion_rate": "done%",
    "failure_rate": "fail%",
    "rollback_rate": "rb%",
    "p50_ms": "p50",
    "p95_ms": "p95",
    "p99_ms": "p99",
    "over_sla": "over",
    "previous_phase": "prev",
    "rollback_to_phase": "to",
    "error_message": "error",
    "decided_at": "decided",
    "started_at": "started",
    "elapsed_ms": "elapsed",
    "last_event_at": "last_event",
    "updated_at": "updated",
    "loops_stopped": "loops",
    "violations": "viol",
    "violations_current": "viol_now",
    "violations_suggested": "viol_new",
    "percentile_ms": "pct_ms",
    "suggested_ms": "suggest",
    "current_ms": "current",
}


#: Columns a narrow table leaves out before it turns vertical: ids a reader rarely needs
#: beside the row's other values, and the second of two timestamps.
_DROPPABLE: Final = frozenset(
    {"user_id", "event_id", "started_event_id", "command_id", "issued_at", "previous_phase"}
)


def emit(report: Report, fmt: Format) -> None:
    if fmt is Format.JSON:
        sys.stdout.write(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    elif fmt is Format.CSV:
        write_csv(report.items)
    else:
        print_tables([*report.extra, report.items])
    more = remaining(report)
    if more:
        # On stderr beside JSON and CSV, so that what a script reads stays one document.
        typer.echo(more, err=fmt is not Format.TABLE)


def remaining(report: Report) -> str | None:
    """The line saying how many rows the next pages hold, and how to see them."""
    if report.next_offset is None:
        return None
    left = (report.items.total or report.next_offset + 1) - report.next_offset
    return (
        f"{left} more {report.items.name} not shown: --offset {report.next_offset} "
        "for the next page, --limit (up to 1000) for a longer one"
    )


def write_csv(section: Section) -> None:
    """The report's list, header first; empty cell for null, true/false for booleans."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(section.columns)
    writer.writerows([cell(v) for v in row] for row in section.rows)


def cell(value: Scalar) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def print_tables(sections: list[Section]) -> None:
    """Each section that has rows (the report's list always, saying when it is empty)."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=10_000)
    *extra, items = sections
    for part in [*(s for s in extra if s.rows), items]:
        if not part.rows:
            console.print(f"no {part.name}")
            continue
        console.print(fitted(part, console))


def fitted(part: Section, console: Console) -> RenderableType:
    """The section as it is, shortened, or vertical: the first that fits the console."""
    whole = _table(part.name, part.columns, [[cell(v) for v in r] for r in part.rows])
    if _natural_width(whole, console) <= console.width:
        return whole
    rows = [[short(v) for v in r] for r in part.rows]
    compact = _compact(part.name, part.columns, rows)
    if _natural_width(compact, console) <= console.width:
        return compact
    keep = [n for n, c in enumerate(part.columns) if c not in _DROPPABLE]
    if len(keep) < len(part.columns):
        dropped = [c for c in part.columns if c in _DROPPABLE]
        title = f"{part.name} (without {', '.join(dropped)}: --format json has them)"
        fewer = _compact(
            title, tuple(part.columns[n] for n in keep), [[r[n] for n in keep] for r in rows]
        )
        if _natural_width(fewer, console) <= console.width:
            return fewer
    return _vertical(part, rows)


def _compact(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> Table:
    # No outer edge, one space of padding and one of rule between columns.
    table = _table(title, tuple(_SHORT.get(c, c) for c in columns), rows, box.SIMPLE_HEAD)
    table.show_edge, table.padding = False, (0, 1, 0, 0)
    return table


def _natural_width(table: Table, console: Console) -> int:
    # rich clamps a measurement to the width it is offered: offer more than any screen.
    unbounded = console.options.update_width(1_000_000)
    return console.measure(table, options=unbounded).maximum


def short(value: Scalar) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = cell(value)
    if _UUID.fullmatch(text):
        return text[:8]
    time = _TIME.fullmatch(text)
    return time[1].replace("T", " ") if time else text


def _table(
    title: str, columns: tuple[str, ...], rows: list[list[str]], style: box.Box = box.HEAVY_HEAD
) -> Table:
    table = Table(title=title, title_justify="left", box=style)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _vertical(part: Section, rows: list[list[str]]) -> Table:
    """One block per row, ``column value``, values folded to the width that is left."""
    table = Table.grid(padding=(0, 1))
    table.title, table.title_justify = part.name, "left"
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for n, row in enumerate(rows):
        if n:
            table.add_row("", "")
        for column, value in zip(part.columns, row, strict=True):
            table.add_row(column, value)
    return table
