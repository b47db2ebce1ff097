"""The phases running now, from the audit log, and how fresh that answer is.

The truth is the audit log, not the SLA monitor's ``sla_open_phases``: the log is written
by the audit projector in every deployment, whether or not the monitor runs, and it is
the long-term record that the monitor's state is itself derived from. A phase is running
when its latest start (per workflow and phase; a retry's start replaces the earlier one,
as in models.sla.state) has no ``completed`` or ``failed`` at or after it. ``rolled_back``
does not end an execution: the failure before it already did.

Only starts within ``lookback`` are considered, which bounds the scan; a start older than
that with no end is abandoned rather than running (docs/analytics.md). The answer is as
fresh as the audit projector's positions (phasestream_projection_status): the report
carries them, and the SLA monitor's, so a reader sees a stalled consumer.
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

COLUMNS: Final = ("workflow_id", "user_id", "phase", "started_at", "elapsed_ms",
                  "threshold_ms", "left_ms", "state", "started_event_id")


# The deadline is started_at + threshold, so ordering by it orders by time left.
_RUNNING = """
SELECT s.workflow_id, s.user_id, s.phase_number, s."timestamp" AS started_at,
       t.threshold_ms, s.id AS started_event_id
FROM workflow_phase_logs AS s
JOIN workflow_phase_sla_thresholds AS t USING (phase_number)
{where}
  AND NOT EXISTS (
      SELECT 1 FROM workflow_phase_logs AS e
      WHERE e.workflow_id = s.workflow_id AND e.phase_number = s.phase_number
        AND e."timestamp" >= s."timestamp"
        AND (e.status IN ('completed', 'failed')
             OR (e.status = 'started' AND (e."timestamp", e.id) > (s."timestamp", s.id))))
ORDER BY s."timestamp" + t.threshold_ms * interval '1 millisecond', s.workflow_id,
         s.phase_number"""


def _conditions(query: RunningQuery, params: Params) -> list[str]:
    # No upper bound: a start stamped ahead of our clock (producer skew) is running too.
    found = ["s.status = 'started'",
             f's."timestamp" >= {params.add(query.now - query.lookback)}']
    if query.phase is not None:
        found.append(f"s.phase_number = {params.add(query.phase)}")
    if query.user is not None:
        found.append(f"s.user_id = {params.add(query.user)}")
    if query.at_risk:
        # The same boundary as models.running.at_risk_after, so that limit counts right.
        found.append(f"s.\"timestamp\" + t.threshold_ms * {params.add(query.share)}::float8 "
                     f"* interval '1 millisecond' <= {params.add(query.now)}")
    return found


def statement(query: RunningQuery, page: Page) -> tuple[str, Params]:
    """The SQL of one page (one row more: is there another?) and its parameters."""
    params = Params()
    sql = _RUNNING.format(where=where(_conditions(query, params)))
    return f"{sql} LIMIT {params.add(page.limit + 1)} OFFSET {params.add(page.offset)}", params


async def running(conn: Connection, query: RunningQuery, page: Page,
                  consumers: dict[str, str]) -> Report:
    """Running phases by time left (least first), and the freshness of ``consumers``
    (role -> consumer group, e.g. the audit projector as ``source``)."""
    sql, params = statement(query, page)
    records = await conn.fetch(sql, *params.values)
    rows = [_row(r, query) for r in records[:page.limit]]
    if query.at_risk:
        rows = [r for r in rows if r[7] != RunningState.OK.value]
    more = len(records) > page.limit
    items = Section("running", COLUMNS, tuple(rows), await _total(conn, query) if more else None)
    meta: dict[str, Scalar] = {"now": plain(query.now), "at_risk_share": query.share,
                               "lookback_s": query.lookback.total_seconds(),
                               "source": "workflow_phase_logs"}
    return Report(items, (await freshness(conn, consumers),),
                  page.offset + page.limit if more else None, meta)


async def _total(conn: Connection, query: RunningQuery) -> int:
    params = Params()
    return await count_rows(conn, _RUNNING.format(where=where(_conditions(query, params))),
                            params.values)


def _row(record: Any, query: RunningQuery) -> tuple[Scalar, ...]:
    progress = judge_running(record["started_at"], record["threshold_ms"], query.now,
                             query.share)
    return (record["workflow_id"], plain(record["user_id"]), record["phase_number"],
            plain(record["started_at"]), progress.elapsed_ms, record["threshold_ms"],
            progress.left_ms, progress.state.value, plain(record["started_event_id"]))


async def freshness(conn: Connection, consumers: dict[str, str]) -> Section:
    """Per role: its consumer's partitions, records behind (null: unknown), the newest
    event time applied and when it last moved (null: it has never run here)."""
    params = Params()
    roles, names = params.add(list(consumers)), params.add(list(consumers.values()))
    found, _ = await section(conn, "freshness", f"""
        SELECT c.role, c.consumer, count(p.consumer) AS partitions,
               CASE WHEN count(p.consumer) > 0 AND bool_and(p.lag IS NOT NULL)
                    THEN sum(p.lag)::bigint END AS lag,
               max(p.last_event_at) AS last_event_at, max(p.updated_at) AS updated_at
        FROM unnest({roles}::text[], {names}::text[]) WITH ORDINALITY AS c(role, consumer, n)
        LEFT JOIN phasestream_projection_status AS p ON p.consumer = c.consumer
        GROUP BY c.role, c.consumer, c.n ORDER BY c.n""", params)
    return found

