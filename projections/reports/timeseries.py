"""Time series from the audit log: one value per bucket (date_bin), empty buckets zero.

Counts are of events by their event time; ``violations`` counts finished executions over
their phase's threshold (late completions and failures, by the end's time); ``p95_duration``
is the 95th percentile of finished executions' durations in ms, null in an empty bucket
(no duration is not a duration of 0). Every statement filters on status and time, so an
index answers it alone: (phase_number, status, "timestamp") the counts, and migration
0011's index of finished rows, which carries the duration, violations and p95_duration.
"""

from __future__ import annotations

from typing import Final

from models.report_filters import ReportFilters
from models.timeseries import EPOCH, SeriesMetric, SeriesQuery
from projections.database import Connection
from projections.reports.core import LOGS, Params, Report, Scalar, conditions, plain, section, where

_FINISHED: Final = "l.status IN ('completed', 'failed')"
_STATUS: Final = {
    SeriesMetric.STARTED: "l.status = 'started'",
    SeriesMetric.COMPLETED: "l.status = 'completed'",
    SeriesMetric.FAILED: "l.status = 'failed'",
    SeriesMetric.ROLLED_BACK: "l.status = 'rolled_back'",
    SeriesMetric.VIOLATIONS: _FINISHED,
    SeriesMetric.P95_DURATION: _FINISHED,
}
_VALUE: Final = {
    SeriesMetric.VIOLATIONS: "count(*) FILTER (WHERE l.duration_ms > t.threshold_ms)",
    SeriesMetric.P95_DURATION: "round((percentile_cont(0.95) WITHIN GROUP "
    "(ORDER BY l.duration_ms))::numeric, 1)",
}


def statement(query: SeriesQuery) -> tuple[str, Params]:
    """The SQL of ``query`` and its bound parameters (bench/timeseries.py explains it)."""
    params = Params()
    step = params.add(query.interval)
    start, last = params.add(query.start), params.add(query.last_bucket)
    window = [
        _STATUS[query.metric],
        f'l."timestamp" >= {start}',
        f'l."timestamp" < {params.add(query.until)}',
    ]
    # The window is the aligned one above, not the filters' since/until.
    filters = conditions(
        ReportFilters(phase=query.filters.phase, user=query.filters.user), LOGS, params
    )
    value = _VALUE.get(query.metric, "count(*)")
    empty = "NULL" if query.metric is SeriesMetric.P95_DURATION else "0"
    return (
        f"""
        WITH data AS (
            SELECT date_bin({step}::interval, l."timestamp", {params.add(EPOCH)}) AS bucket,
                   {value} AS value
            FROM workflow_phase_logs AS l
            LEFT JOIN workflow_phase_sla_thresholds AS t USING (phase_number)
            {where(window, filters)}
            GROUP BY 1)
        SELECT b.bucket, coalesce(d.value, {empty}) AS value
        FROM generate_series({start}::timestamptz, {last}::timestamptz, {step}::interval)
             AS b(bucket)
        LEFT JOIN data AS d USING (bucket)
        ORDER BY b.bucket""",
        params,
    )


async def series(conn: Connection, query: SeriesQuery) -> Report:
    """The buckets of ``query``, oldest first, with the window and step in the meta."""
    sql, params = statement(query)
    items, _ = await section(conn, "buckets", sql, params)
    meta: dict[str, Scalar] = {
        "metric": query.metric.value,
        "step": query.step,
        "since": plain(query.start),
        "until": plain(query.until),
        "phase": query.filters.phase,
        "sla_ms": await _threshold(conn, query.filters.phase),
    }
    return Report(items, meta=meta)


async def _threshold(conn: Connection, phase: int | None) -> int | None:
    """The phase's SLA (the line a p95 chart is drawn against); None for all phases."""
    if phase is None:
        return None
    value: int | None = await conn.fetchval(
        "SELECT threshold_ms FROM workflow_phase_sla_thresholds WHERE phase_number = $1", phase
    )
    return value
