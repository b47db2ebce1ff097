"""`report sla`: the SLA violations recorded by the monitor, with a count per kind."""

from __future__ import annotations

from models.report_filters import Page, ReportFilters
from projections.database import Connection
from projections.reports.core import Columns, Params, Report, conditions, section, where

_VIOLATIONS = Columns('v."timestamp"', "v.phase_number", "v.user_id")


async def sla(conn: Connection, filters: ReportFilters, page: Page | None = None) -> Report:
    """SLA violations (late completions and failures, and still-open overdue phases), newest
    first, with a count per kind. ``at`` is the end event's time; for ``overdue``, the start.
    """
    params = Params()
    filtered = where(conditions(filters, _VIOLATIONS, params))
    by_kind, _ = await section(
        conn,
        "by_kind",
        f"""
        SELECT v.kind, count(*) AS violations, max(v."timestamp") AS latest
        FROM workflow_phase_sla_violations AS v {filtered}
        GROUP BY v.kind ORDER BY v.kind""",
        params,
    )
    items, next_offset = await section(
        conn,
        "violations",
        f"""
        SELECT v.kind, v."timestamp" AS at, v.workflow_id, v.user_id, v.phase_number AS phase,
               v.status, v.duration_ms, v.threshold_ms, v.excess_ms, v.event_id
        FROM workflow_phase_sla_violations AS v {filtered}
        ORDER BY v."timestamp" DESC, v.event_id""",
        params,
        page,
    )
    return Report(items, (by_kind,), next_offset)
