"""`report analytics`: per phase, counts by status, rates and duration percentiles."""

from __future__ import annotations

from models.report_filters import Page, ReportFilters
from projections.database import Connection
from projections.reports.core import LOGS, Params, Report, conditions, section, where

_FINISHED = "l.status IN ('completed', 'failed')"


def _percentile(share: str) -> str:
    # Rounded in numeric: percentile_cont interpolates in float8 (127949.99999999994).
    return (
        f"round((percentile_cont({share}) WITHIN GROUP (ORDER BY l.duration_ms) "
        f"FILTER (WHERE {_FINISHED}))::numeric, 1)"
    )


def _rate(part: str, whole: str) -> str:
    return (
        f"round(100.0 * count(*) FILTER (WHERE {part}) "
        f"/ nullif(count(*) FILTER (WHERE {whole}), 0), 2)"
    )


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


async def analytics(conn: Connection, filters: ReportFilters, page: Page | None = None) -> Report:
    """Per phase: counts by status, rates, duration percentiles against the SLA threshold."""
    params = Params()
    sql = _ANALYTICS.format(where=where(conditions(filters, LOGS, params)))
    items, next_offset = await section(conn, "phases", sql, params, page)
    return Report(items, next_offset=next_offset)
