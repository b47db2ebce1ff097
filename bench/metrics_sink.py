"""Benchmark: the metrics consumer's ``metrics_data`` writes, COPY against row by row.

Run: ``.venv/bin/python -m bench.metrics_sink [--events 100000] [--batch 500] [--rounds 3]``.

In one scratch database (an embedded Postgres unless ``--database-url``), each round
writes the same N realistic events through ``MetricsDataSink`` in batches of B, one
transaction a batch with its position move, as the consumer does, in three ways one after
the other, ``metrics_data`` emptied before the first two:

- ``copy``: the sink as it is (a batch of new ids COPYed, in a savepoint);
- ``row by row``: the sink with its COPY turned off (one INSERT ... ON CONFLICT DO NOTHING
  a row, pipelined by asyncpg: what the sink did before);
- ``copy, all redelivered``: the sink again over the rows it wrote just before (every COPY
  refused, every batch then row by row: the cost of a redelivery).

For each: events/s, and the CPU per event of the bench process and of its one Postgres
backend (from /proc). The ratio of the medians is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from bench import measure, scratch
from models.events import PhaseEvent
from models.ports import Batch, PartitionRef, PositionMove
from phasestream.settings import Settings
from phasestream.wiring import run_migrations
from projections.database import Connection
from projections.metrics_sink import MetricsDataSink

log = logging.getLogger("bench.metrics_sink")
REF: Final = PartitionRef("bench.phase-events", 0)
WAYS: Final = ("copy", "row by row", "copy, all redelivered")


class RowByRow(MetricsDataSink):
    """The sink as it was: every batch row by row."""

    async def _copied(self, conn: Connection, rows: list[tuple[Any, ...]]) -> bool:
        return False


async def write_all(
    sink: MetricsDataSink, events: Sequence[PhaseEvent], batch: int, consumer: str
) -> None:
    offset: int | None = None
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        end = start + len(chunk)
        await sink.apply(consumer, Batch.single(REF, chunk, PositionMove(offset, end)))
        offset = end


async def timed(
    sink: MetricsDataSink, backend: int, events: Sequence[PhaseEvent], batch: int, consumer: str
) -> dict[str, float]:
    cpu, pg, began = time.process_time(), measure.proc_cpu_s(backend), time.perf_counter()
    await write_all(sink, events, batch, consumer)
    wall = time.perf_counter() - began
    n = len(events)
    return {
        "events_per_s": round(n / wall),
        "process_us_per_event": round((time.process_time() - cpu) / n * 1e6, 2),
        "backend_us_per_event": round((measure.proc_cpu_s(backend) - pg) / n * 1e6, 2),
    }


async def one_round(
    pool: asyncpg.Pool[asyncpg.Record], backend: int, events: Sequence[PhaseEvent], batch: int
) -> dict[str, dict[str, float]]:
    figures = {}
    for way in WAYS:
        if way == "copy, all redelivered":  # the rows stay: every id is recorded
            await pool.execute("TRUNCATE phasestream_consumer_positions")
        else:
            await pool.execute("TRUNCATE metrics_data, phasestream_consumer_positions")
        await pool.execute("CHECKPOINT")
        sink = (RowByRow if way == "row by row" else MetricsDataSink)(pool)
        figures[way] = await timed(sink, backend, events, batch, "bench-metrics")
        log.info("%s: %s", way, figures[way])
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    events = scratch.make_events(args.events, args.seed)
    async with scratch.scratch_database(args.database_url) as (_, url):
        await run_migrations(Settings(database_url=url))
        # One connection: its backend is the one whose CPU is read.
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            backend = await pool.fetchval("SELECT pg_backend_pid()")
            rounds = []
            for _ in range(args.rounds):
                await asyncio.to_thread(
                    measure.wait_until_quiet,
                    args.quiet_pct,
                    window_s=3,
                    timeout_s=args.quiet_timeout,
                )
                rounds.append(await one_round(pool, backend, events, args.batch))
        finally:
            await pool.close()
        conn = await asyncpg.connect(url)
        try:
            facts = await measure.machine_and_postgres_facts(conn, ("asyncpg", "orjson"))
        finally:
            await conn.close()
    return {"events": args.events, "batch": args.batch, "rounds": rounds, **facts}


def medians(rounds: Sequence[dict[str, dict[str, float]]], way: str) -> dict[str, float]:
    keys = rounds[0][way].keys()
    return {k: statistics.median(r[way][k] for r in rounds) for k in keys}


def report(figures: dict[str, Any]) -> str:
    rounds = figures["rounds"]
    lines = [
        "== metrics_data writes: COPY against row by row ==",
        f"{figures['events']} events in batches of {figures['batch']}, {len(rounds)} rounds "
        "(medians; CPU in µs per event)",
        f"{'way':<24}{'events/s':>10}{'process':>10}{'backend':>10}",
    ]
    for way in WAYS:
        m = medians(rounds, way)
        lines.append(
            f"{way:<24}{m['events_per_s']:>10,.0f}{m['process_us_per_event']:>10}"
            f"{m['backend_us_per_event']:>10}"
        )
    copy, rows = medians(rounds, "copy"), medians(rounds, "row by row")
    lines.append(
        f"copy / row by row: {copy['events_per_s'] / rows['events_per_s']:.2f}x events/s, "
        f"backend CPU {copy['backend_us_per_event'] / rows['backend_us_per_event']:.2f}x"
    )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="events per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20_261_207)
    scratch.add_common_arguments(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    scratch.setup_logging()
    figures = scratch.run_timed(run(args))
    print(report(figures))
    scratch.write_figures(args.json, figures, logger=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
