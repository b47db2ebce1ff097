"""What every report shares: its shape (sections of plain values), bound parameters, filters.

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
    #: Rows of the whole list when a page holds only some of them (None: all are here).
    total: int | None = None
    #: At most one row, which JSON gives as an object (null without it), not a list.
    single: bool = False

    def dicts(self) -> list[dict[str, Scalar]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def as_json(self) -> list[dict[str, Scalar]] | dict[str, Scalar] | None:
        if self.single:
            return self.dicts()[0] if self.rows else None
        return self.dicts()


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
        summaries = {s.name: s.as_json() for s in self.extra}
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


async def section(
    conn: Connection, name: str, sql: str, params: Params, page: Page | None = None
) -> tuple[Section, int | None]:
    """Run ``sql``; with a page, one row more than asked says whether another page exists,
    and only then is the whole list counted (so that a reader learns how many remain)."""
    whole = sql, list(params.values)
    if page is not None:
        sql = f"{sql} LIMIT {params.add(page.limit + 1)} OFFSET {params.add(page.offset)}"
    prepared = await conn.prepare(sql)
    columns = tuple(a.name for a in prepared.get_attributes())
    records = await prepared.fetch(*params.values)
    more = page is not None and len(records) > page.limit
    rows = records[: page.limit] if page is not None else records
    next_offset = page.offset + page.limit if page is not None and more else None
    total = await count_rows(conn, *whole) if more else None
    values = tuple(tuple(plain(v) for v in r) for r in rows)
    return Section(name, columns, values, total), next_offset


async def count_rows(conn: Connection, sql: str, values: Sequence[Any]) -> int:
    """How many rows ``sql`` returns, unpaged."""
    found: int = await conn.fetchval(f"SELECT count(*) FROM ({sql}) AS whole", *values)
    return found
