"""Time series on a month of audit log: a day of 1-minute buckets, with and without the
finished rows' ("timestamp") INCLUDE (...) index of migration 0013.

Loads ``--rows`` synthetic rows spread evenly over the 30 days before now into a scratch
database (server-side INSERT ... SELECT, a realistic mix: 50 % started, 46.5 % completed,
2 % failed, 1.5 % rolled back, durations around each phase's SLA), VACUUM ANALYZE, then for
each request below runs the statement of projections.reports.timeseries under EXPLAIN (ANALYZE,
BUFFERS) ``--repeat`` times and the report function itself as often, and prints the medians
and the plan's scans. Then it drops the index and measures the same again. Before the
month, it loads ``--ingest-rows`` into the empty table with and without the index, to show
what the index costs writers.

    .venv/bin/python -m bench.timeseries [--rows 3000000] [--json FILE]

Without --database-url (or PHASESTREAM_TEST_DATABASE_URL) it starts the embedded Postgres
in a scratch directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from bench import measure, scratch
from models.report_filters import Page
from models.running import RunningQuery
from models.timeseries import SeriesQuery, parse_series
from phasestream.settings import Settings
from phasestream.wiring import run_migrations
from projections.reports import running, timeseries

log = logging.getLogger("bench.timeseries")
INDEX: Final = "workflow_phase_logs_finished_time_idx"
INDEX_DDL: Final = (
    f'CREATE INDEX {INDEX} ON workflow_phase_logs ("timestamp") '
    "INCLUDE (status, phase_number, duration_ms, user_id) "
    "WHERE status IN ('completed', 'failed')"
)
#: As migration 0013: the month partitions' copies of the index named after it.
NAME_PARTITION_INDEXES: Final = (
    "SELECT phasestream_name_partition_indexes(c.relname, 'workflow_phase_logs') "
    "FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = 'workflow_phase_logs'::regclass"
)
CHUNK: Final = 500_000
#: (name, metric, step, since, until, phase): what the dashboard asks. "mid-month" is a day
#: 15 days back, inside a month partition that holds ~4 weeks (the current month's
#: partition may hold only a few days, where scanning all of it is cheap).
REQUESTS: Final = (
    ("started, 1m, last day", "started", "1m", "24h", None, None),
    ("started, 1m, mid-month day", "started", "1m", "16d", "15d", None),
    ("failed, 1m, mid-month day", "failed", "1m", "16d", "15d", None),
    ("violations, 1m, last day", "violations", "1m", "24h", None, None),
    ("violations, 1m, mid-month day", "violations", "1m", "16d", "15d", None),
    ("p95_duration, 1m, last day", "p95_duration", "1m", "24h", None, None),
    ("p95_duration, 1m, mid-month day", "p95_duration", "1m", "16d", "15d", None),
    ("started, 1m, mid-month day, phase 3", "started", "1m", "16d", "15d", "3"),
    ("completed, 1h, 30 days", "completed", "1h", "30d", None, None),
)

# Row i of n: execution i / 2 of workflow wf-<i/2>, phase 1 + (i/2) % 7; its time spreads
# the rows evenly over the month. An even row is the start, the odd one after it the end:
# 93 % completed, 4 % failed, 3 % a rollback event only (the phase never ends: it stays
# running, which is what the running report must find). Durations around each SLA.
_LOAD: Final = """
INSERT INTO workflow_phase_logs (id, workflow_id, user_id, phase_number, status, "timestamp",
                                 duration_ms)
SELECT gen_random_uuid(), 'wf-' || (i / 2), '00000000-0000-4000-8000-000000000001'::uuid,
       1 + (i / 2) % 7,
       CASE WHEN i % 2 = 0 THEN 'started' WHEN i % 100 < 93 THEN 'completed'
            WHEN i % 100 < 97 THEN 'failed' ELSE 'rolled_back' END,
       $1::timestamptz + (i * $2::float8) * interval '1 second',
       CASE WHEN i % 2 = 1 AND i % 100 < 97
            THEN ((i * 7919) % 1000) * (ARRAY[60, 120, 240, 180, 20, 30, 120])[1 + (i / 2) % 7]
       END
FROM generate_series($3::bigint, $4::bigint) AS i"""


async def load(
    conn: asyncpg.Connection[Any], rows: int, now: datetime, sql: str = _LOAD
) -> dict[str, Any]:
    """``rows`` synthetic rows over the 30 days before ``now``, by ``sql`` (an INSERT taking
    the start, the seconds between rows, and the first and last row number), in chunks."""
    start = now - timedelta(days=30)
    await conn.execute(
        "SELECT phasestream_ensure_log_partition('workflow_phase_logs', $1)", start.date()
    )
    began = time.monotonic()
    for first in range(0, rows, CHUNK):
        last = min(rows, first + CHUNK) - 1
        await conn.execute(sql, start, 30 * 86_400 / rows, first, last)
        log.info("loaded %d of %d rows", last + 1, rows)
    loaded_s = time.monotonic() - began
    await conn.execute("VACUUM ANALYZE workflow_phase_logs")
    size = await conn.fetchval(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits "
        "WHERE inhparent = 'workflow_phase_logs'::regclass"
    )
    return {"rows": rows, "load_s": round(loaded_s, 1), "table_and_indexes": size}


async def create_index(conn: asyncpg.Connection[Any]) -> None:
    await conn.execute(INDEX_DDL)
    await conn.execute(NAME_PARTITION_INDEXES)


async def measure_ingest(conn: asyncpg.Connection[Any], rows: int, now: datetime) -> dict[str, Any]:
    """What the index costs writers: ``rows`` loaded into the empty table without and with
    it, alternating twice (the same server-side INSERT as the month; not the projector's
    COPY path, but the same per-row index maintenance)."""
    timings: dict[str, list[float]] = {"without_index": [], "with_index": []}
    for _ in range(2):
        for case in ("without_index", "with_index"):
            await conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
            if case == "with_index":
                await create_index(conn)
            began = time.monotonic()
            await conn.execute(_LOAD, now - timedelta(days=1), 86_400 / rows, 0, rows - 1)
            timings[case].append(time.monotonic() - began)
            await conn.execute("TRUNCATE workflow_phase_logs")
    await conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
    await create_index(conn)
    return {
        case: {
            "rows_per_s": round(rows / statistics.median(seconds)),
            "seconds": [round(x, 1) for x in seconds],
        }
        for case, seconds in timings.items()
    } | {"rows": rows}


def scans_of(plan: dict[str, Any]) -> Iterator[str]:
    node = plan.get("Node Type", "")
    target = plan.get("Index Name") or plan.get("Relation Name")
    if "Scan" in node and target:
        # One name for all month partitions: workflow_phase_logs_p202611_x -> ..._x
        yield f"{node} on {re.sub(r'_p[0-9]{6}', '', str(target))}"
    for child in plan.get("Plans", []):
        yield from scans_of(child)


async def measure_request(
    conn: asyncpg.Connection[Any], query: SeriesQuery, repeat: int
) -> dict[str, Any]:
    sql, params = timeseries.statement(query)
    explained, walls, buffers, plan = [], [], 0, {}
    for _ in range(repeat):
        row = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params.values)
        result = json.loads(row)[0]
        explained.append(result["Execution Time"])
        plan = result["Plan"]
        buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    for _ in range(repeat):
        began = time.perf_counter()
        report = await timeseries.series(conn, query)
        walls.append((time.perf_counter() - began) * 1000)
    return {
        "buckets": len(report.items.rows),
        "explain_ms_median": round(statistics.median(explained), 1),
        "report_ms_median": round(statistics.median(walls), 1),
        "shared_buffers_touched": buffers,
        "scans": sorted(set(scans_of(plan))),
    }


async def measure_running(
    conn: asyncpg.Connection[Any], now: datetime, repeat: int
) -> dict[str, Any]:
    """The running report (not a time series, but the same log): its first page, at the
    default lookback (a day) and at a week."""
    found = {}
    consumers = {"source": "phasestream-audit", "sla_monitor": "phasestream-sla"}
    for hours in (168, 24):
        query = RunningQuery(now, timedelta(hours=hours))
        sql, params = running.statement(query, Page())
        explained, walls = [], []
        for _ in range(repeat):
            row = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *params.values)
            explained.append(json.loads(row)[0]["Execution Time"])
            began = time.perf_counter()
            report = await running.running(conn, query, Page(), consumers)
            walls.append((time.perf_counter() - began) * 1000)
        total = await conn.fetchval(
            f"SELECT count(*) FROM ({sql.rsplit(' LIMIT ', 1)[0]}) AS r", *params.values[:-2]
        )
        found[f"running, lookback {hours} h"] = {
            "running_phases": total,
            "page": len(report.items.rows),
            "explain_ms_median": round(statistics.median(explained), 1),
            "report_ms_median": round(statistics.median(walls), 1),
        }
        log.info("running, lookback %d h: %s", hours, found[f"running, lookback {hours} h"])
    return found


async def measure_all(conn: asyncpg.Connection[Any], now: datetime, repeat: int) -> dict[str, Any]:
    found = {}
    for name, metric, step, since, until, phase in REQUESTS:
        query = parse_series(
            metric=metric, step=step, since=since, until=until, phase=phase, user=None, now=now
        )
        found[name] = await measure_request(conn, query, repeat)
        log.info("%s: %s", name, found[name])
    return found


async def main(args: argparse.Namespace) -> dict[str, Any]:
    async with (
        scratch.scratch_database(args.database_url, prefix="phasestream_bench_ts") as (_, url),
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
            if args.ingest_rows:
                figures["ingest"] = await measure_ingest(conn, args.ingest_rows, now)
                log.info("ingest: %s", figures["ingest"])
            figures["data"] = await load(conn, args.rows, now)
            figures["load_before"] = measure.wait_until_quiet(
                args.quiet_pct, timeout_s=args.quiet_timeout
            )
            figures["with_index"] = await measure_all(conn, now, args.repeat)
            figures["running"] = await measure_running(conn, now, args.repeat)
            await conn.execute(f"DROP INDEX {INDEX}")
            await conn.execute("ANALYZE workflow_phase_logs")
            figures["without_index"] = await measure_all(conn, now, args.repeat)
            await create_index(conn)
        finally:
            await conn.close()
    return figures


def print_figures(figures: dict[str, Any]) -> None:
    data = figures["data"]
    print(
        f"\n{data['rows']:,} rows over 30 days ({data['table_and_indexes']}), "
        f"loaded in {data['load_s']} s; jit={figures['jit']}"
    )
    print(
        f"{'request':38} {'buckets':>7} {'with index ms':>14} {'without ms':>11}  "
        "scans with / without"
    )
    for name in figures["with_index"]:
        with_, without = figures["with_index"][name], figures["without_index"][name]
        print(
            f"{name:38} {with_['buckets']:>7} {with_['explain_ms_median']:>14} "
            f"{without['explain_ms_median']:>11}  {', '.join(with_['scans'])} / "
            f"{', '.join(without['scans'])}"
        )
    if "ingest" in figures:
        ingest = figures["ingest"]
        print(
            f"ingest of {ingest['rows']:,} rows: {ingest['without_index']['rows_per_s']:,} "
            f"rows/s without the index, {ingest['with_index']['rows_per_s']:,} with it"
        )
    for name, found in figures["running"].items():
        print(
            f"{name:38} {found['running_phases']:>7} running, first page "
            f"{found['explain_ms_median']} ms (report {found['report_ms_median']} ms)"
        )


def _ingest_rows(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ingest-rows",
        type=int,
        default=300_000,
        help="rows per load when measuring the index's cost on writes; 0 skips",
    )


def cli() -> None:
    scratch.log_bench_cli(
        __doc__ or "", main, print_figures, rows=3_000_000, logger=log, more_arguments=_ingest_rows
    )


if __name__ == "__main__":
    cli()
