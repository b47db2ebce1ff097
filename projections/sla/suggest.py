"""SLA thresholds suggested from observed durations (``sla suggest``), set by hand (``sla set``).

The suggestion is computed in numeric, not float: percentile * (1 + headroom), rounded
up to a whole second (at least one), so 5000 ms with 20 % headroom is exactly 6000 ms.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from projections.database import Connection
from projections.reports.core import Params, Report, section, where

# Finished executions (with a duration) in the window; each phase of the threshold table
# appears even without executions, so the operator sees every current threshold.
_SUGGEST = """
WITH runs AS (
    SELECT l.phase_number, l.duration_ms
    FROM workflow_phase_logs AS l
    {where}
), stats AS (
    SELECT phase_number, count(*) AS executions,
           round(percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms)::numeric, 1) AS p50,
           round(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)::numeric, 1) AS p95,
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms)::numeric, 1) AS p99,
           percentile_cont({share}::float8) WITHIN GROUP (ORDER BY duration_ms)::numeric AS pct
    FROM runs GROUP BY phase_number
), suggested AS (
    SELECT t.phase_number, t.threshold_ms, coalesce(s.executions, 0) AS executions,
           s.p50, s.p95, s.p99, round(s.pct, 1) AS pct,
           -- greatest() ignores nulls: a phase without runs must get no suggestion.
           CASE WHEN s.pct IS NOT NULL THEN
               greatest(1000, ceil(s.pct * (1 + {headroom}::numeric) / 1000) * 1000)::bigint
           END AS suggested_ms
    FROM workflow_phase_sla_thresholds AS t
    LEFT JOIN stats AS s USING (phase_number)
)
SELECT g.phase_number AS phase, g.threshold_ms AS current_ms, g.executions,
       g.p50 AS p50_ms, g.p95 AS p95_ms, g.p99 AS p99_ms, g.pct AS percentile_ms,
       g.suggested_ms,
       (SELECT count(*) FROM runs AS r WHERE r.phase_number = g.phase_number
          AND r.duration_ms > g.threshold_ms) AS violations_current,
       CASE WHEN g.suggested_ms IS NOT NULL THEN
           (SELECT count(*) FROM runs AS r WHERE r.phase_number = g.phase_number
              AND r.duration_ms > g.suggested_ms)
       END AS violations_suggested
FROM suggested AS g
ORDER BY g.phase_number"""


async def suggest(
    conn: Connection, since: datetime | None, percentile: Decimal, headroom: Decimal
) -> Report:
    """Per phase: the current threshold, observed p50/p95/p99 and the chosen percentile,
    the suggested threshold, and how many executions exceed each (strictly, as the
    monitor judges). ``percentile`` is in (0, 100]; ``headroom`` a share (0.2 for 20 %)."""
    params = Params()
    found = ["l.status IN ('completed', 'failed')", "l.duration_ms IS NOT NULL"]
    if since is not None:
        found.append(f'l."timestamp" >= {params.add(since)}')
    sql = _SUGGEST.format(
        where=where(found), share=params.add(float(percentile / 100)), headroom=params.add(headroom)
    )
    items, _ = await section(conn, "phases", sql, params)
    return Report(items)


async def set_threshold(conn: Connection, phase: int, threshold_ms: int) -> int | None:
    """Set a phase's threshold; returns the previous one (None if the phase had no row).

    The views read the table directly; the SLA monitor re-reads it within
    PHASESTREAM_SLA_THRESHOLDS_RELOAD_S.
    """
    async with conn.transaction():
        previous: int | None = await conn.fetchval(
            "SELECT threshold_ms FROM workflow_phase_sla_thresholds "
            "WHERE phase_number = $1 FOR UPDATE",
            phase,
        )
        await conn.execute(
            "INSERT INTO workflow_phase_sla_thresholds (phase_number, threshold_ms) "
            "VALUES ($1, $2) ON CONFLICT (phase_number) "
            "DO UPDATE SET threshold_ms = EXCLUDED.threshold_ms, updated_at = now()",
            phase,
            threshold_ms,
        )
    return previous
