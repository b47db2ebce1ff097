"""What the audit log's ("timestamp") index does for the reports: each report on a month
of log with that index as a btree (migration 0001), without it, and as BRIN (migration
0014).

Loads ``--rows`` synthetic rows as bench/timeseries.py does, VACUUM ANALYZE, runs every
report once to warm the cache, then per variant: each report once under auto_explain (sent
to this client as notices) to learn whether any of its plans reads the index, and
``--repeat`` times for its wall time, client included.

    .venv/bin/python -m bench.timestamp_index [--rows 3000000] [--json FILE]

Without --database-url (or PHASESTREAM_TEST_DATABASE_URL) it starts the embedded Postgres
in a scratch directory. auto_explain needs a superuser (the embedded one is).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeAlias

import asyncpg

from bench import measure, scratch
from bench.timeseries import NAME_PARTITION_INDEXES, REQUESTS, load
from models.report_filters import Page, ReportFilters
from models.running import RunningQuery
from models.timeseries import SeriesQuery, parse_series
from phasestream.settings import Settings
from phasestream.wiring import run_migrations
from projections.reports import analytics, history, running, sla, timeseries, workflows
from projections.sla import suggest

log = logging.getLogger("bench.timestamp_index")
INDEX: Final = "workflow_phase_logs_timestamp_idx"
VARIANTS: Final = {
    "btree": f'CREATE INDEX {INDEX} ON workflow_phase_logs ("timestamp")',
    "none": None,
    "brin": f'CREATE INDEX {INDEX} ON workflow_phase_logs USING brin ("timestamp")',
}
_EXPLAIN_ON: Final = (
    "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
    "SET auto_explain.log_format = 'json'; SET auto_explain.log_level = 'notice'"
)
_EXPLAIN_OFF: Final = "SET auto_explain.log_min_duration = -1"
# asyncpg is generic only in its stubs, hence the string.
Report: TypeAlias = "Callable[[asyncpg.Connection[Any]], Awaitable[object]]"
CONSUMERS: Final = {"source": "phasestream-audit", "sla_monitor": "phasestream-sla"}


def reports(now: datetime) -> dict[str, Report]:
    """What the API, the dashboard and the CLI ask of the log, over a day or a month."""
    day = ReportFilters(since=now - timedelta(days=1))
    mid = ReportFilters(since=now - timedelta(days=16), until=now - timedelta(days=15))
    last_day = RunningQuery(now, timedelta(hours=24))
    found: dict[str, Report] = {
        "analytics, last day": lambda c: analytics.analytics(c, day),
        "analytics, mid-month day": lambda c: analytics.analytics(c, mid),
        "sla, last day": lambda c: sla.sla(c, day),
        "rollbacks, last day": lambda c: history.rollbacks(c, day),
        "one workflow": lambda c: history.workflow(c, "wf-1234", ReportFilters()),
        "workflows, last day": lambda c: workflows.search(c, None, day, Page()),
        "workflows, id prefix": lambda c: workflows.search(c, "wf-12", ReportFilters(), Page()),
        "running, 24 h": lambda c: running.running(c, last_day, Page(), CONSUMERS),
        "sla suggest, 7 days": lambda c: suggest.suggest(
            c, now - timedelta(days=7), Decimal(95), Decimal("0.2")
        ),
    }
    for name, metric, step, since, until, phase in REQUESTS:
        query = parse_series(
            metric=metric, step=step, since=since, until=until, phase=phase, user=None, now=now
        )
        found[f"timeseries {name}"] = _series(query)
    return found


def _series(query: SeriesQuery) -> Report:
    return lambda c: timeseries.series(c, query)


async def reads_index(conn: asyncpg.Connection[Any], report: Report) -> bool:
    """Whether any statement of ``report`` plans a scan of the index (or a partition's)."""
    plans: list[str] = []

    def keep(_: object, message: asyncpg.PostgresLogMessage) -> None:
        plans.append(str(message.message))

    conn.add_log_listener(keep)
    try:
        await conn.execute(_EXPLAIN_ON)
        await report(conn)
        await conn.execute(_EXPLAIN_OFF)
    finally:
        conn.remove_log_listener(keep)
    return any('_timestamp_idx"' in plan for plan in plans)


async def measure_variant(
    conn: asyncpg.Connection[Any], found: dict[str, Report], repeat: int
) -> dict[str, Any]:
    figures = {}
    for name, report in found.items():
        walls = []
        for _ in range(repeat):
            began = time.perf_counter()
            await report(conn)
            walls.append((time.perf_counter() - began) * 1000)
        figures[name] = {
            "ms_median": round(statistics.median(walls), 1),
            "reads_index": await reads_index(conn, report),
        }
        log.info("%s: %s", name, figures[name])
    return figures


async def main(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch.scratch_database(args.database_url, prefix="phasestream_bench_tsi") as (
        _,
        url,
    ):
        await run_migrations(Settings(database_url=url))
        conn = await asyncpg.connect(url)
        try:
            now = datetime.now(UTC)
            figures: dict[str, Any] = {"machine": measure.machine_facts()}
            figures["postgres"] = await measure.postgres_facts(conn)
            figures["data"] = await load(conn, args.rows, now)
            found = reports(now)
            for report in found.values():  # warm the cache: the first variant pays no more
                await report(conn)
            for variant, ddl in VARIANTS.items():
                await conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
                if ddl is not None:  # named per month as the migrations name them
                    await conn.execute(ddl)
                    await conn.execute(NAME_PARTITION_INDEXES)
                await conn.execute("ANALYZE workflow_phase_logs")
                log.info("the index as %s", variant)
                figures[variant] = await measure_variant(conn, found, args.repeat)
        finally:
            await conn.close()
    return figures


def print_figures(figures: dict[str, Any]) -> None:
    data = figures["data"]
    print(f"\n{data['rows']:,} rows over 30 days ({data['table_and_indexes']})")
    print(f"{'report':48}" + "".join(f"{v + ' ms':>12}" for v in VARIANTS))
    for name in figures["btree"]:
        cells = [
            f"{figures[v][name]['ms_median']}{'*' if figures[v][name]['reads_index'] else ''}"
            for v in VARIANTS
        ]
        print(f"{name:48}" + "".join(f"{c:>12}" for c in cells))
    print('* a plan of the report reads the ("timestamp") index')


def cli() -> None:
    scratch.log_bench_cli(__doc__ or "", main, print_figures, rows=3_000_000, logger=log)


if __name__ == "__main__":
    cli()
