"""The running report (`/api/running`, `report running`) on a month of audit log: read from
the audit log (its anti-join scan of every start in the lookback) and from the SLA
monitor's open phases (``sla_open_phases``, what it reads once the monitor has caught up).

Loads ``--rows`` synthetic rows spread evenly over the 30 days before now into a scratch
database (server-side INSERT ... SELECT): workflows of 7 phases, each phase a start and,
97 % of the time, an end (93 % completed, 4 % failed); the other 3 % get only a
rolled_back event, so they stay running. The monitor's state is filled from the log the way
the monitor folds it (every phase still open, however old), and both consumers get a
position, the monitor level with the audit projector. VACUUM ANALYZE; then for each
lookback and source it runs the statement of projections.reports.running (the first page,
as a dashboard polls it) under EXPLAIN (ANALYZE, BUFFERS) ``--repeat`` times and the
report function as often (which picks its source itself: once with the monitor caught up,
once with it one record behind), and prints the medians, the pages touched and the plan's
scans. It checks that both sources list the same phases.

    .venv/bin/python -m bench.running [--rows 1000000] [--json FILE]

Without --database-url (or PHASESTREAM_TEST_DATABASE_URL) it starts the embedded Postgres
in a scratch directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from bench import measure, scratch
from bench.timeseries import load, scans_of
from models.report_filters import Page
from models.running import RunningQuery
from phasestream.settings import Settings
from phasestream.wiring import run_migrations
from projections.reports import running

log = logging.getLogger("bench.running")
LOOKBACKS_H: Final = (24, 168, 720)
CONSUMERS: Final = {"source": "phasestream-audit", "sla_monitor": "phasestream-sla"}
LOG, MONITOR = "workflow_phase_logs", "sla_open_phases"

# Row i of n: execution i / 2, of workflow wf-<i / 14>, phase 1 + (i / 2) % 7, so a
# workflow runs its 7 phases one after the other; an even row is the start, the odd one
# after it its end (or, 3 % of the time, a rollback event only: that phase keeps running).
_LOAD: Final = """
INSERT INTO workflow_phase_logs (id, workflow_id, user_id, phase_number, status, "timestamp",
                                 duration_ms)
SELECT gen_random_uuid(), 'wf-' || (i / 14), '00000000-0000-4000-8000-000000000001'::uuid,
       1 + (i / 2) % 7,
       CASE WHEN i % 2 = 0 THEN 'started' WHEN i % 100 < 93 THEN 'completed'
            WHEN i % 100 < 97 THEN 'failed' ELSE 'rolled_back' END,
       $1::timestamptz + (i * $2::float8) * interval '1 second',
       CASE WHEN i % 2 = 1 AND i % 100 < 97 THEN ((i * 7919) % 1000) * 60 END
FROM generate_series($3::bigint, $4::bigint) AS i"""


# What the monitor's fold leaves open: per (workflow, phase) the latest start with no end
# at or after it, however old (the monitor has no lookback). One partition, level with the
# audit projector's position.
_MONITOR_STATE: Final = f"""
INSERT INTO sla_open_phases (workflow_id, phase_number, started_event_id, user_id,
                             started_at, source_partition)
SELECT workflow_id, phase_number, started_event_id, user_id, started_at, 0
FROM ({running.SOURCES[LOG].format(since="'-infinity'::timestamptz")}) AS s"""
_POSITIONS: Final = """
INSERT INTO phasestream_consumer_positions (consumer, topic, "partition", next_offset)
VALUES ($1, 'workflow.phase-events', 0, $3), ($2, 'workflow.phase-events', 0, $3)"""


async def fill_monitor_state(conn: asyncpg.Connection[Any], rows: int) -> int:
    await conn.execute(_MONITOR_STATE)
    await conn.execute(_POSITIONS, CONSUMERS["source"], CONSUMERS["sla_monitor"], rows)
    await conn.execute("VACUUM ANALYZE sla_open_phases")
    found: int = await conn.fetchval("SELECT count(*) FROM sla_open_phases")
    return found


async def explain(
    conn: asyncpg.Connection[Any], query: RunningQuery, source: str, repeat: int
) -> dict[str, Any]:
    """The first page from ``source``: server time, pages touched, the plan's scans."""
    sql, params = running.statement(query, Page(), source)
    explained, buffers, plan = [], 0, {}
    for _ in range(repeat):
        row = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params.values)
        result = json.loads(row)[0]
        explained.append(result["Execution Time"])
        plan = result["Plan"]
        buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    listed = await conn.fetch(sql.rsplit(" LIMIT ", 1)[0], *params.values[:-2])
    return {
        "explain_ms_median": round(statistics.median(explained), 1),
        "shared_buffers_touched": buffers,
        "scans": sorted(set(scans_of(plan))),
        "listed": [(r["workflow_id"], r["phase_number"]) for r in listed],
    }


async def report_wall(
    conn: asyncpg.Connection[Any], query: RunningQuery, repeat: int
) -> dict[str, Any]:
    """The report function as the API calls it: it picks its source, then pages."""
    walls, source = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        report = await running.running(conn, query, Page(), CONSUMERS)
        walls.append((time.perf_counter() - began) * 1000)
        source = report.meta["source"]
    return {
        "source": source,
        "report_ms_median": round(statistics.median(walls), 1),
        "running_phases": report.items.total or len(report.items.rows),
    }


async def measure_lookback(
    conn: asyncpg.Connection[Any], now: datetime, hours: int, repeat: int, rows: int
) -> dict[str, Any]:
    query = RunningQuery(now, timedelta(hours=hours))
    found = {source: await explain(conn, query, source, repeat) for source in (LOG, MONITOR)}
    same = found[LOG].pop("listed") == found[MONITOR].pop("listed")
    caught_up = await report_wall(conn, query, repeat)
    await conn.execute(
        "UPDATE phasestream_consumer_positions SET next_offset = $2 WHERE consumer = $1",
        CONSUMERS["sla_monitor"],
        rows - 1,
    )
    behind = await report_wall(conn, query, repeat)
    await conn.execute(
        "UPDATE phasestream_consumer_positions SET next_offset = $2 WHERE consumer = $1",
        CONSUMERS["sla_monitor"],
        rows,
    )
    return {
        "same_list": same,
        **found,
        "report_monitor_caught_up": caught_up,
        "report_monitor_behind": behind,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    async with (
        scratch.scratch_database(args.database_url, prefix="phasestream_bench_run") as (_, url),
    ):
        await run_migrations(Settings(database_url=url))
        conn = await asyncpg.connect(url)
        try:
            now = datetime.now(UTC)
            figures: dict[str, Any] = {
                "machine": measure.machine_facts(),
                "postgres": await measure.postgres_facts(conn),
                "jit": await conn.fetchval("SHOW jit"),
            }
            figures["data"] = await load(conn, args.rows, now, _LOAD)
            figures["data"]["open_phases"] = await fill_monitor_state(conn, args.rows)
            figures["load_before"] = measure.wait_until_quiet(
                args.quiet_pct, timeout_s=args.quiet_timeout
            )
            for hours in LOOKBACKS_H:
                figures[f"{hours} h"] = await measure_lookback(
                    conn, now, hours, args.repeat, args.rows
                )
                log.info("lookback %d h: %s", hours, figures[f"{hours} h"])
        finally:
            await conn.close()
    return figures


def print_figures(figures: dict[str, Any]) -> None:
    data = figures["data"]
    print(
        f"\n{data['rows']:,} rows over 30 days ({data['table_and_indexes']}), "
        f"loaded in {data['load_s']} s; {data['open_phases']:,} open phases in the "
        f"monitor's state; jit={figures['jit']}"
    )
    print(
        f"{'lookback':9} {'running':>8} {'same':>5} {'log ms':>7} {'pages':>6} "
        f"{'monitor ms':>10} {'pages':>6} {'report ms (up / behind)':>24}"
    )
    for hours in LOOKBACKS_H:
        found = figures[f"{hours} h"]
        log_, monitor = found[LOG], found[MONITOR]
        up, behind = found["report_monitor_caught_up"], found["report_monitor_behind"]
        print(
            f"{hours:>6} h {up['running_phases']:>8} {found['same_list']!s:>5} "
            f"{log_['explain_ms_median']:>7} {log_['shared_buffers_touched']:>6} "
            f"{monitor['explain_ms_median']:>10} {monitor['shared_buffers_touched']:>6} "
            f"{up['report_ms_median']:>11} / {behind['report_ms_median']:>10}"
        )
        print(f"{'':9} log: {', '.join(log_['scans'])}; monitor: {', '.join(monitor['scans'])}")


def cli() -> None:
    scratch.log_bench_cli(__doc__ or "", main, print_figures, rows=1_000_000, logger=log)


if __name__ == "__main__":
    cli()
