"""Rows a replay cannot rebuild, carried from the live table into its shadow unchanged.

The log is finite (retention deletes old records; the embedded broker restarts empty) and
the table is the long-term record, so a rebuild must not lose what only the table holds.
The rows carry no Kafka coordinates, so what the log holds is what the replay rebuilt: a
live row whose key is not in the shadow is not in the log. That holds for rows projected
before the replay began (``before``, Postgres' clock: their events lay below the ends the
replay read to). A row projected later may come from an event past those ends, which the
live consumer projects again after the swap; it is carried over too (a harmless no-op
then), and is never counted or dropped as unreplayable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from projections.database import Connection
from projections.shadow import shadow_name
from projections.sink_base import quote_ident


@dataclass(frozen=True, slots=True)
class RowKeys:
    """How one projection's rows are told apart and dated."""

    key: str  #: the column the replay rebuilds a row under (the event's or violation's id)
    time: str  #: the event-time column, for the report
    #: A companion keyed by ``key`` alone (the audit's event ids): looked up instead of the
    #: month-partitioned table, and given the carried rows' ids in its shadow.
    ids_table: str | None = None
    #: Month partitions of the shadow are made for the carried rows (the audit table).
    month_partitioned: bool = False


@dataclass(frozen=True, slots=True)
class Unreplayable:
    """Live rows whose events the log no longer holds."""

    rows: int
    oldest: datetime | None
    newest: datetime | None


def _missing(table: str, shadow: str, keys: RowKeys) -> str:
    """The live rows whose key the replay did not rebuild (alias ``l``)."""
    probe = shadow_name(keys.ids_table) if keys.ids_table else shadow
    key = quote_ident(keys.key)
    return (
        f"FROM {quote_ident(table)} AS l WHERE NOT EXISTS "
        f"(SELECT 1 FROM {quote_ident(probe)} AS s WHERE s.{key} = l.{key})"
    )


async def find_unreplayable(
    conn: Connection, *, table: str, shadow: str, keys: RowKeys, before: datetime
) -> Unreplayable:
    time = quote_ident(keys.time)
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, min(l.{time}) AS oldest, max(l.{time}) AS newest "
        f"{_missing(table, shadow, keys)} AND l.projected_at < $1",
        before,
    )
    assert row is not None  # an aggregate always returns a row
    return Unreplayable(int(row["n"]), row["oldest"], row["newest"])


async def carry_over(
    conn: Connection, *, table: str, shadow: str, keys: RowKeys, before: datetime, discard: bool
) -> int:
    """Copy the live rows the shadow lacks into it, in one transaction; how many.

    ``discard`` leaves out the unreplayable ones (projected before ``before``).
    """
    where = _missing(table, shadow, keys) + " AND (NOT $2::boolean OR l.projected_at >= $1)"
    async with conn.transaction():
        if keys.month_partitioned:
            await conn.execute(
                "SELECT phasestream_ensure_log_partition($3, m) FROM (SELECT DISTINCT "
                f"date_trunc('month', l.{quote_ident(keys.time)} AT TIME ZONE 'UTC')::date "
                f"AS m {where}) AS months",
                before,
                discard,
                shadow,
            )
        # One statement, one snapshot: the ids inserted do not hide the rows being copied.
        ids = ""
        if keys.ids_table:
            ids = (
                f", ids AS (INSERT INTO {quote_ident(shadow_name(keys.ids_table))} "
                f"({quote_ident(keys.key)}, {quote_ident(keys.time)}) SELECT "
                f"{quote_ident(keys.key)}, {quote_ident(keys.time)} FROM carried "
                f"ON CONFLICT DO NOTHING)"
            )
        copied = await conn.fetchval(
            f"WITH carried AS (SELECT l.* {where}), "
            f"copied AS (INSERT INTO {quote_ident(shadow)} SELECT * FROM carried RETURNING 1)"
            f"{ids} SELECT count(*) FROM copied",
            before,
            discard,
        )
    return int(copied)
