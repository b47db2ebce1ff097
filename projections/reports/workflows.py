"""Finding workflows: by a prefix of their id and by user, newest activity first.

One row per workflow from the audit log (the long-term record): its user, how many
events, the phase and status of its latest event and when it started and last moved.
The answer is paged (``limit`` is bounded by models.report_filters.MAX_LIMIT); the
window filters (since/until/phase) narrow the scan as in every report.
"""

from __future__ import annotations

from models.report_filters import Page, ReportFilters
from projections.database import Connection
from projections.reports.core import LOGS, Params, Report, conditions, section, where


async def search(
    conn: Connection, prefix: str | None, filters: ReportFilters, page: Page
) -> Report:
    """Workflows whose id starts with ``prefix`` (any, when None), most recent first."""
    params = Params()
    own = [] if prefix is None else [f"starts_with(l.workflow_id, {params.add(prefix)})"]
    # The latest event's phase and status: one ordered array per workflow, first element.
    items, next_offset = await section(
        conn,
        "workflows",
        f"""
        SELECT l.workflow_id, min(l.user_id::text) AS user_id, count(*) AS events,
               (array_agg(l.phase_number ORDER BY l."timestamp" DESC, l.id DESC))[1]
                   AS last_phase,
               (array_agg(l.status ORDER BY l."timestamp" DESC, l.id DESC))[1] AS last_status,
               min(l."timestamp") AS first_at, max(l."timestamp") AS last_at
        FROM workflow_phase_logs AS l
        {where(own, conditions(filters, LOGS, params))}
        GROUP BY l.workflow_id
        ORDER BY last_at DESC, l.workflow_id""",
        params,
        page,
    )
    return Report(items, next_offset=next_offset, meta={"prefix": prefix})
