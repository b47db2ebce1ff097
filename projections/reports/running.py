"""The phases running now, from the audit log or the SLA monitor's state, and how fresh
that answer is.

The truth is the audit log: it is written by the audit projector in every deployment,
whether or not the monitor runs, and it is the long-term record that the monitor's state
is itself derived from. A phase is running when its latest start (per workflow and phase;
a retry's start replaces the earlier one, as in models.sla.state) has no ``completed`` or
``failed`` at or after it. ``rolled_back`` does not end an execution: the failure before
it already did. Only starts within ``lookback`` are considered; a start older than that
with no end is abandoned rather than running (docs/analytics.md).

That scan costs every start within the lookback (an anti-join each), which on a busy log is
the slowest query a dashboard polls (bench/running.py). The SLA monitor keeps the same set,
one row per open (workflow, phase), in ``sla_open_phases``: when the monitor has applied
at least every record the audit projector has, on every partition the projector stores a
position for, its state holds everything the log would give, so the list is read from it
(a primary-key-sized table, not the log); otherwise (monitor stopped, behind, replaying,
never run) from the log. ``source`` in the report says which. The answer is as fresh as
the consumers' positions (phasestream_projection_status): the report carries both.
"""

from __future__ import annotations

from typing import Any, Final

from models.report_filters import Page
from models.running import RunningQuery, RunningState, judge_running
from projections.database import Connection
from projections.reports.core import (
    Params,
    Report,
    Scalar,
    Section,
    count_rows,
    plain,
    section,
    where,
)

COLUMNS: Final = (
    "workflow_id",
    "user_id",
    "phase",
    "started_at",
    "elapsed_ms",
    "threshold_ms",
    "left_ms",
    "state",
    "started_event_id",
)


# The deadline is started_at + threshold, so ordering by it orders by time left.
_ORDER = """
ORDER BY s.started_at + t.threshold_ms * interval '1 millisecond', s.workflow_id,
         s.phase_number"""

_FROM_LOG = """
SELECT l.workflow_id, l.user_id, l.phase_number, l."timestamp" AS started_at,
       l.id AS started_event_id
FROM workflow_phase_logs AS l
WHERE l.status = 'started' AND l."timestamp" >= {since}
  AND NOT EXISTS (
      SELECT 1 FROM workflow_phase_logs AS e
      WHERE e.workflow_id = l.workflow_id AND e.phase_number = l.phase_number
        AND e."timestamp" >= l."timestamp"
        AND (e.status IN ('completed', 'failed')
             OR (e.status = 'started' AND (e."timestamp", e.id) > (l."timestamp", l.id))))"""

_FROM_MONITOR = """
SELECT o.workflow_id, o.user_id, o.phase_number, o.started_at, o.started_event_id
FROM sla_open_phases AS o WHERE o.started_at >= {since}"""

#: Either source as ``s``, with its phase's threshold (the table, as the views read it).
_RUNNING = """
SELECT s.workflow_id, s.user_id, s.phase_number, s.started_at, t.threshold_ms,
       s.started_event_id
FROM ({source}) AS s
JOIN workflow_phase_sla_thresholds AS t USING (phase_number)
{where}"""

#: Every partition the audit projector has a position on, the monitor has reached too.
_MONITOR_CAUGHT_UP = """
SELECT count(*) > 0 AND bool_and(m.next_offset IS NOT NULL AND m.next_offset >= a.next_offset)
FROM phasestream_consumer_positions AS a
LEFT JOIN phasestream_consumer_positions AS m
       ON m.consumer = $2 AND m.topic = a.topic AND m."partition" = a."partition"
WHERE a.consumer = $1"""

SOURCES: Final = {"workflow_phase_logs": _FROM_LOG, "sla_open_phases": _FROM_MONITOR}


def _conditions(query: RunningQuery, params: Params) -> list[str]:
    found = []
    if query.phase is not None:
        found.append(f"s.phase_number = {params.add(query.phase)}")
    if query.user is not None:
        found.append(f"s.user_id = {params.add(query.user)}")
    if query.at_risk:
        # The same boundary as models.running.at_risk_after, so that limit counts right.
        found.append(
            f"s.started_at + t.threshold_ms * {params.add(query.share)}::float8 "
            f"* interval '1 millisecond' <= {params.add(query.now)}"
        )
    return found


def _listing(query: RunningQuery, source: str, params: Params) -> str:
    # No upper bound on the start: one stamped ahead of our clock (producer skew) runs too.
    inner = SOURCES[source].format(since=params.add(query.now - query.lookback))
    return _RUNNING.format(source=inner, where=where(_conditions(query, params))) + _ORDER


def statement(
    query: RunningQuery, page: Page, source: str = "workflow_phase_logs"
) -> tuple[str, Params]:
    """The SQL of one page (one row more: is there another?) from ``source`` (a key of
    SOURCES), and its parameters."""
    params = Params()
    sql = _listing(query, source, params)
    return f"{sql} LIMIT {params.add(page.limit + 1)} OFFSET {params.add(page.offset)}", params


async def source_for(conn: Connection, consumers: dict[str, str]) -> str:
    """``sla_open_phases`` when the SLA monitor has caught up with the audit projector
    (both named in ``consumers``, as ``source`` and ``sla_monitor``), else the log."""
    audit, monitor = consumers.get("source"), consumers.get("sla_monitor")
    if audit is None or monitor is None:
        return "workflow_phase_logs"
    caught_up = await conn.fetchval(_MONITOR_CAUGHT_UP, audit, monitor)
    return "sla_open_phases" if caught_up else "workflow_phase_logs"


async def running(
    conn: Connection, query: RunningQuery, page: Page, consumers: dict[str, str]
) -> Report:
    """Running phases by time left (least first), and the freshness of ``consumers``
    (role -> consumer group: the audit projector as ``source``, the SLA monitor as
    ``sla_monitor``)."""
    source = await source_for(conn, consumers)
    sql, params = statement(query, page, source)
    records = await conn.fetch(sql, *params.values)
    rows = [_row(r, query) for r in records[: page.limit]]
    if query.at_risk:
        rows = [r for r in rows if r[7] != RunningState.OK.value]
    more = len(records) > page.limit
    total = await _total(conn, query, source) if more else None
    items = Section("running", COLUMNS, tuple(rows), total)
    meta: dict[str, Scalar] = {
        "now": plain(query.now),
        "at_risk_share": query.share,
        "lookback_s": query.lookback.total_seconds(),
        "source": source,
    }
    return Report(
        items, (await freshness(conn, consumers),), page.offset + page.limit if more else None, meta
    )


async def _total(conn: Connection, query: RunningQuery, source: str) -> int:
    params = Params()
    return await count_rows(conn, _listing(query, source, params), params.values)


def _row(record: Any, query: RunningQuery) -> tuple[Scalar, ...]:
    progress = judge_running(record["started_at"], record["threshold_ms"], query.now, query.share)
    return (
        record["workflow_id"],
        plain(record["user_id"]),
        record["phase_number"],
        plain(record["started_at"]),
        progress.elapsed_ms,
        record["threshold_ms"],
        progress.left_ms,
        progress.state.value,
        plain(record["started_event_id"]),
    )


async def freshness(conn: Connection, consumers: dict[str, str]) -> Section:
    """Per role: its consumer's partitions, records behind (null: unknown), the newest
    event time applied and when it last moved (null: it has never run here)."""
    params = Params()
    roles, names = params.add(list(consumers)), params.add(list(consumers.values()))
    found, _ = await section(
        conn,
        "freshness",
        f"""
        SELECT c.role, c.consumer, count(p.consumer) AS partitions,
               CASE WHEN count(p.consumer) > 0 AND bool_and(p.lag IS NOT NULL)
                    THEN sum(p.lag)::bigint END AS lag,
               max(p.last_event_at) AS last_event_at, max(p.updated_at) AS updated_at
        FROM unnest({roles}::text[], {names}::text[]) WITH ORDINALITY AS c(role, consumer, n)
        LEFT JOIN phasestream_projection_status AS p ON p.consumer = c.consumer
        GROUP BY c.role, c.consumer, c.n ORDER BY c.n""",
        params,
    )
    return found
