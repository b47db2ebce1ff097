"""Reports on what happened to workflows: rollbacks (per phase, chains) and one timeline.

Rollbacks are counted from the ``rolled_back`` rows of the audit log (the event-sourced
record, whoever published them); the rollback commander's ledger (rollback_commands)
adds what followed: retries, give-ups and stopped loops.
"""

from __future__ import annotations

import dataclasses

from models.errors import PhasestreamError
from models.report_filters import Page, ReportFilters
from projections.database import Connection
from projections.reports.core import (
    LOGS,
    Columns,
    Params,
    Report,
    Section,
    conditions,
    section,
    where,
)

_COMMANDS = Columns("c.decided_at", "c.failed_phase", "c.user_id")
_VIOLATIONS = Columns('v."timestamp"', "v.phase_number", "v.user_id")
_ROLLED_BACK = "l.status = 'rolled_back'"
# Within one instant and phase: a start before its end, an end before its rollback.
_STATUS_ORDER = (
    "CASE l.status WHEN 'started' THEN 0 WHEN 'completed' THEN 1 WHEN 'failed' THEN 1 ELSE 2 END"
)


class UnknownWorkflowError(PhasestreamError):
    """No event of this workflow was ever recorded."""


async def rollbacks(conn: Connection, filters: ReportFilters, page: Page | None = None) -> Report:
    """Per phase: rollbacks and what followed; items: workflows rolled back more than once."""
    params = Params()
    logs = where(_ROLLED_BACK, conditions(filters, LOGS, params))
    commands = where(conditions(filters, _COMMANDS, params))
    by_phase, _ = await section(
        conn,
        "by_phase",
        f"""
        WITH events AS (
            SELECT l.phase_number AS phase, count(*) AS rollbacks,
                   count(DISTINCT l.workflow_id) AS workflows
            FROM workflow_phase_logs AS l {logs} GROUP BY l.phase_number),
        commands AS (
            SELECT c.failed_phase AS phase,
                   count(*) FILTER (WHERE c.kind = 'retry') AS retries,
                   count(*) FILTER (WHERE c.kind = 'gave_up') AS gave_up,
                   count(*) FILTER (WHERE c.kind = 'loop_stopped') AS loops_stopped
            FROM rollback_commands AS c {commands} GROUP BY c.failed_phase)
        SELECT phase, coalesce(e.rollbacks, 0) AS rollbacks,
               coalesce(e.workflows, 0) AS workflows, coalesce(c.retries, 0) AS retries,
               coalesce(c.gave_up, 0) AS gave_up, coalesce(c.loops_stopped, 0) AS loops_stopped
        FROM events AS e FULL JOIN commands AS c USING (phase)
        ORDER BY phase""",
        params,
    )
    chain_params = Params()
    chain_logs = where(_ROLLED_BACK, conditions(filters, LOGS, chain_params))
    # A chain reads "3->2 2->1": each rollback of the workflow, in event time order.
    chains, next_offset = await section(
        conn,
        "chains",
        f"""
        SELECT l.workflow_id, min(l.user_id::text) AS user_id, count(*) AS rollbacks,
               string_agg(l.phase_number || '->' || coalesce(l.rollback_to_phase::text, '?'),
                          ' ' ORDER BY l."timestamp", l.id) AS chain,
               min(l."timestamp") AS first_at, max(l."timestamp") AS last_at
        FROM workflow_phase_logs AS l {chain_logs}
        GROUP BY l.workflow_id HAVING count(*) > 1
        ORDER BY rollbacks DESC, last_at DESC, l.workflow_id""",
        chain_params,
        page,
    )
    return Report(chains, (by_phase,), next_offset)


async def workflow(
    conn: Connection, workflow_id: str, filters: ReportFilters, page: Page | None = None
) -> Report:
    """Every transition of one workflow in event-time order, then by phase and status
    (started before its end, the end before the rollback; paged), with its summary (over
    all its events, whatever the filters), its SLA violations and the rollback commands
    decided for it. Raises UnknownWorkflowError."""
    known = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM workflow_phase_logs WHERE workflow_id = $1)", workflow_id
    )
    if not known:
        raise UnknownWorkflowError(f"no events of workflow {workflow_id!r}")
    summary = await workflow_summary(conn, workflow_id)
    violations = await _violations(conn, workflow_id, filters)
    commands = await _commands(conn, workflow_id, filters)
    params = Params()
    own = f"l.workflow_id = {params.add(workflow_id)}"
    transitions, next_offset = await section(
        conn,
        "transitions",
        f"""
        SELECT l."timestamp" AS at, l.phase_number AS phase, l.status, l.duration_ms,
               t.threshold_ms,
               coalesce(l.status IN ('completed', 'failed') AND l.duration_ms > t.threshold_ms,
                        false) AS over_sla,
               l.previous_phase, l.rollback_to_phase, l.error_message, l.user_id,
               l.id AS event_id
        FROM workflow_phase_logs AS l
        LEFT JOIN workflow_phase_sla_thresholds AS t USING (phase_number)
        {where(own, conditions(filters, LOGS, params))}
        ORDER BY l."timestamp", l.phase_number, {_STATUS_ORDER}, l.id""",
        params,
        page,
    )
    return Report(
        transitions, (summary, violations, commands), next_offset, {"workflow_id": workflow_id}
    )


async def workflow_summary(conn: Connection, workflow_id: str) -> Section:
    """One row over the whole workflow: the phases it reached, where it stands now (its
    latest transition), first and last event, the span between them, rollbacks and SLA
    violations. No row for a workflow without events."""
    params = Params()
    own = params.add(workflow_id)
    found, _ = await section(
        conn,
        "summary",
        f"""
        SELECT string_agg(DISTINCT l.phase_number::text, ',') AS phases,
               (array_agg('phase ' || l.phase_number || ' ' || l.status
                          ORDER BY l."timestamp" DESC, l.phase_number DESC,
                                   {_STATUS_ORDER} DESC, l.id DESC))[1] AS status,
               min(l."timestamp") AS first_at, max(l."timestamp") AS last_at,
               (extract(epoch FROM max(l."timestamp") - min(l."timestamp")) * 1000)::bigint
                   AS duration_ms,
               count(*) FILTER (WHERE {_ROLLED_BACK}) AS rollbacks,
               (SELECT count(*) FROM workflow_phase_sla_violations AS v
                WHERE v.workflow_id = {own}) AS violations
        FROM workflow_phase_logs AS l WHERE l.workflow_id = {own}
        HAVING count(*) > 0""",
        params,
    )
    return dataclasses.replace(found, single=True)


async def _violations(conn: Connection, workflow_id: str, filters: ReportFilters) -> Section:
    params = Params()
    own = f"v.workflow_id = {params.add(workflow_id)}"
    found, _ = await section(
        conn,
        "violations",
        f"""
        SELECT v.kind, v."timestamp" AS at, v.phase_number AS phase, v.duration_ms,
               v.threshold_ms, v.excess_ms, v.event_id
        FROM workflow_phase_sla_violations AS v
        {where(own, conditions(filters, _VIOLATIONS, params))}
        ORDER BY v."timestamp", v.event_id""",
        params,
    )
    return found


async def _commands(conn: Connection, workflow_id: str, filters: ReportFilters) -> Section:
    params = Params()
    own = f"c.workflow_id = {params.add(workflow_id)}"
    found, _ = await section(
        conn,
        "commands",
        f"""
        SELECT c.kind, c.decided_at, c.failed_phase, c.rollback_to_phase, c.attempt, c.reason,
               c.due_at, c.issued_at, c.command_id
        FROM rollback_commands AS c
        {where(own, conditions(filters, _COMMANDS, params))}
        ORDER BY c.decided_at, c.attempt, c.command_id""",
        params,
    )
    return found
