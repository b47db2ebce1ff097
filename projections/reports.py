"""The analysts' reports over the audit log and its projections: shapes, filters, analytics, SLA.

Every value an analyst supplies travels as a bound parameter; only column names spelled
out in this package are put into the SQL text. A filter that is not set adds no condition
at all (rather than ``$1 IS NULL OR ...``), so the planner can use the time index and,
on a table partitioned by time, prune partitions.

Rows come back as plain JSON values (str, int, float, bool, None; timestamps as ISO 8601
UTC strings with microseconds) in a fixed column order, so every output format (table,
JSON, CSV, the HTTP API) prints them unchanged and stably.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeAlias

from models.report_filters import Page, ReportFilters
from projections.database import Connection

Scalar: TypeAlias = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Section:
    """One table of a report: named columns and rows of plain values."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Scalar, ...], ...]

    def dicts(self) -> list[dict[str, Scalar]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True, slots=True)
class Report:
    """``items`` is the report's list (the one CSV prints and the API pages through);
    ``extra`` are small summaries beside it. ``next_offset`` is None on the last page."""

    items: Section
    extra: tuple[Section, ...] = ()
    next_offset: int | None = None
    meta: dict[str, Scalar] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The JSON shape shared by ``--format json`` and the HTTP API (which adds paging)."""
        summaries = {s.name: s.dicts() for s in self.extra}
        return {**self.meta, **summaries, "items": self.items.dicts()}


def plain(value: Any) -> Scalar:
    """A database value as a JSON value that prints the same in every format."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):  # asyncpg's own UUID subclass included
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Params:
    """Bound parameters of one statement; ``add`` returns the placeholder of a value."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


@dataclass(frozen=True, slots=True)
class Columns:
    """Which columns of a relation the filters apply to (spelled here, never by a caller)."""

    time: str
    phase: str
    user: str


LOGS = Columns('l."timestamp"', "l.phase_number", "l.user_id")


def conditions(filters: ReportFilters, columns: Columns, params: Params) -> list[str]:
    """SQL conditions for the filters that are set: since inclusive, until exclusive."""
    found = []
    if filters.since is not None:
        found.append(f"{columns.time} >= {params.add(filters.since)}")
    if filters.until is not None:
        found.append(f"{columns.time} < {params.add(filters.until)}")
    if filters.phase is not None:
        found.append(f"{columns.phase} = {params.add(filters.phase)}")
    if filters.user is not None:
        found.append(f"{columns.user} = {params.add(filters.user)}")
    return found


def where(*parts: str | Sequence[str]) -> str:
    flat = [p for part in parts for p in ([part] if isinstance(part, str) else part)]
    return f"WHERE {' AND '.join(flat)}" if flat else ""


async def section(conn: Connection, name: str, sql: str, params: Params,
                  page: Page | None = None) -> tuple[Section, int | None]:
    """Run ``sql``; with a page, one row more than asked says whether another page exists."""
    if page is not None:
        sql = f"{sql} LIMIT {params.add(page.limit + 1)} OFFSET {params.add(page.offset)}"
    prepared = await conn.prepare(sql)
    columns = tuple(a.name for a in prepared.get_attributes())
    records = await prepared.fetch(*params.values)
    more = page is not None and len(records) > page.limit
    rows = records[:page.limit] if page is not None else records
    next_offset = page.offset + page.limit if page is not None and more else None
    return Section(name, columns, tuple(tuple(plain(v) for v in r) for r in rows)), next_offset


_FINISHED = "l.status IN ('completed', 'failed')"


def _percentile(share: str) -> str:
    # Rounded in numeric: percentile_cont interpolates in float8 (127949.99999999994).
    return (f"round((percentile_cont({share}) WITHIN GROUP (ORDER BY l.duration_ms) "
            f"FILTER (WHERE {_FINISHED}))::numeric, 1)")


def _rate(part: str, whole: str) -> str:
    return (f"round(100.0 * count(*) FILTER (WHERE {part}) "
            f"/ nullif(count(*) FILTER (WHERE {whole}), 0), 2)")


# Rates as in the workflow_phase_analytics view: completion and failure per finished
# execution, rollback per started execution; percentages.
_ANALYTICS = f"""
SELECT l.phase_number AS phase,
       count(*) FILTER (WHERE l.status = 'started') AS started,
       count(*) FILTER (WHERE l.status = 'completed') AS completed,
       count(*) FILTER (WHERE l.status = 'failed') AS failed,
       count(*) FILTER (WHERE l.status = 'rolled_back') AS rolled_back,
       {_rate("l.status = 'completed'", _FINISHED)} AS completion_rate,
       {_rate("l.status = 'failed'", _FINISHED)} AS failure_rate,
       {_rate("l.status = 'rolled_back'", "l.status = 'started'")} AS rollback_rate,
       {_percentile("0.50")} AS p50_ms,
       {_percentile("0.95")} AS p95_ms,
       {_percentile("0.99")} AS p99_ms,
       t.threshold_ms AS sla_ms,
       count(*) FILTER (WHERE {_FINISHED} AND l.duration_ms > t.threshold_ms) AS over_sla
FROM workflow_phase_logs AS l
LEFT JOIN workflow_phase_sla_thresholds AS t USING (phase_number)
{{where}}
GROUP BY l.phase_number, t.threshold_ms
ORDER BY l.phase_number"""


async def analytics(conn: Connection, filters: ReportFilters,
                    page: Page | None = None) -> Report:
    """Per phase: counts by status, rates, duration percentiles against the SLA threshold."""
    params = Params()
    sql = _ANALYTICS.format(where=where(conditions(filters, LOGS, params)))
    items, next_offset = await section(conn, "phases", sql, params, page)
    return Report(items, next_offset=next_offset)


_VIOLATIONS = Columns('v."timestamp"', "v.phase_number", "v.user_id")


async def sla(conn: Connection, filters: ReportFilters, page: Page | None = None) -> Report:
    """SLA violations (late completions and failures, and still-open overdue phases), newest
    first, with a count per kind. ``at`` is the end event's time; for ``overdue``, the start.
    """
    params = Params()
    filtered = where(conditions(filters, _VIOLATIONS, params))
    by_kind, _ = await section(conn, "by_kind", f"""
        SELECT v.kind, count(*) AS violations, max(v."timestamp") AS latest
        FROM workflow_phase_sla_violations AS v {filtered}
        GROUP BY v.kind ORDER BY v.kind""", params)
    items, next_offset = await section(conn, "violations", f"""
        SELECT v.kind, v."timestamp" AS at, v.workflow_id, v.user_id, v.phase_number AS phase,
               v.status, v.duration_ms, v.threshold_ms, v.excess_ms, v.event_id
        FROM workflow_phase_sla_violations AS v {filtered}
        ORDER BY v."timestamp" DESC, v.event_id""", params, page)
    return Report(items, (by_kind,), next_offset)
