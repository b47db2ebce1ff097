"""Benchmark: the audit projector against a naive consumer and the raw idempotent COPY limit.

Run: ``.venv/bin/python bench/audit_projection.py [--events N] [--database-url URL]``.

Everything is scratch: a Tansu broker on a free port, a ``phasestream_bench_<random>``
database (dropped at the end), migrations applied into it. Then, in this order:

1. publish N realistic events (``demo.workflow_events``, unique ids) to the phase topic;
2. baseline (b), raw COPY: the same bytes decoded into rows in memory, then COPY into a
   temp table + INSERT ... ON CONFLICT DO NOTHING, 5,000 per transaction, no Kafka; and
   (b2) the raw limit for the same guarantee as the sink: the ids COPYed into an id
   table with the id alone as key (so that an id reused across month partitions is
   caught), then the rows COPYed straight into the table, 5,000 per transaction, as the
   sink writes a batch of distinct ids;
3. baseline (a), naive: an aiokafka consumer, one autocommitted INSERT ... ON CONFLICT DO
   NOTHING per event, on a sample of the same topic;
4. phase 1: the audit projector (``wiring.audit_projector``) drains the N-event backlog;
5. phase 2: with the projector running, a separate process publishes at a steady rate and
   polls for a sample of the ids, recording when each becomes visible (committed);
6. scale-out (``--workers``, default 1 and 2): for each K, a fresh topic and consumer group,
   the same N events published, ``workflow_phase_logs`` and the event ids it claimed
   emptied (TRUNCATE), then K ``python -m phasestream run audit`` processes drain them,
   timed from the first committed row to N rows (the sum of the stored positions, every
   50 ms);
   SIGTERM stops them and each must exit with 0.

Baselines write into ``bench.*`` copies of ``workflow_phase_logs`` (LIKE ... INCLUDING ALL:
same columns, defaults, constraints and indexes; partitioned like it, by month, with the
events' months created before the clock starts) and conflict on its primary key. A
CHECKPOINT precedes each timed part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaConsumer
from msgspec.structs import replace

from models.event_codec import decode_event, encode_event
from models.events import PhaseEvent
from phasestream.consumers import audit_projector
from phasestream.demo import workflow_events
from phasestream.settings import Settings
from phasestream.wiring import create_topics, run_migrations
from projections.audit_sink import COLUMNS, audit_row
from streams.publisher import PhaseEventPublisher

if not __package__:  # run as a file (bench/audit_projection.py), not with -m: the shared
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # helpers are bench.*

from bench import measure, scratch
from bench.measure import CpuMeter, machine_and_postgres_facts

log = logging.getLogger("bench.audit_projection")

RAW_BATCH: Final = 5000
COLUMN_LIST: Final = ", ".join(f'"{c}"' for c in COLUMNS)
TARGET_VS_RAW: Final = 0.8
TARGET_VS_NAIVE: Final = 10.0
SCALE_OUT_POLL_S: Final = 0.05


# --------------------------------------------------------------------------------------
# Baselines


MONTHLY_RANGE: Final = 'RANGE ("timestamp")'


@dataclass(frozen=True)
class TableShape:
    """What the baselines copy from public.workflow_phase_logs: the conflict target (its
    primary key) and its partitioning (None, or monthly RANGE on "timestamp")."""

    key: tuple[str, ...]
    partition_by: str | None

    @property
    def on_conflict(self) -> str:
        columns = ", ".join('"' + c + '"' for c in self.key)
        return f"ON CONFLICT ({columns}) DO NOTHING"


async def audit_table_shape(conn: asyncpg.Connection[Any]) -> TableShape:
    key = [
        r["attname"]
        for r in await conn.fetch(
            "SELECT a.attname FROM pg_index AS i JOIN pg_attribute AS a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'public.workflow_phase_logs'::regclass"
            " AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)"
        )
    ]
    partition_by = await conn.fetchval(
        "SELECT pg_get_partkeydef('public.workflow_phase_logs'::regclass)"
    )
    if partition_by is not None and partition_by != MONTHLY_RANGE:
        raise RuntimeError(
            f"workflow_phase_logs is partitioned by {partition_by}; the bench "
            f"knows only {MONTHLY_RANGE} by month"
        )
    return TableShape(tuple(key), partition_by)


async def create_copies(
    conn: asyncpg.Connection[Any], shape: TableShape, months: Sequence[datetime]
) -> None:
    """bench.* copies of workflow_phase_logs: same columns, constraints and indexes, and,
    if it is partitioned, partitioned alike with the events' months created up front."""
    await conn.execute("CREATE SCHEMA bench")
    await conn.execute(
        'CREATE TABLE bench.raw_claim_ids (id UUID PRIMARY KEY, "timestamp" TIMESTAMPTZ NOT NULL)'
    )
    for table in ("raw_copy_logs", "raw_claim_logs", "naive_logs"):
        await conn.execute(
            f"CREATE TABLE bench.{table} (LIKE public.workflow_phase_logs INCLUDING ALL)"
            + (f" PARTITION BY {shape.partition_by}" if shape.partition_by else "")
        )
        for first in months if shape.partition_by else ():
            after = (
                first.replace(year=first.year + 1, month=1)
                if first.month == 12
                else first.replace(month=first.month + 1)
            )
            await conn.execute(
                f"CREATE TABLE bench.{table}_p{first:%Y%m} PARTITION OF bench.{table} "
                f"FOR VALUES FROM ('{first.isoformat()}') TO ('{after.isoformat()}')"
            )


async def raw_copy(
    url: str,
    rows: Sequence[tuple[Any, ...]],
    meter: CpuMeter,
    monitor: asyncpg.Connection[Any],
    shape: TableShape,
    *,
    claim: bool = False,
) -> dict[str, Any]:
    """(b) No Kafka, rows in memory: COPY into a temp table + INSERT ON CONFLICT, per batch;
    with ``claim``, (b2): the ids COPYed into the id table (its key refuses one claimed
    before), then the rows straight into the table, as the sink writes a batch of distinct
    ids."""
    table = "raw_claim_logs" if claim else "raw_copy_logs"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bench_stage (LIKE public.workflow_phase_logs "
            "INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        await scratch.checkpoint(monitor)
        await meter.start()
        began = time.perf_counter()
        for start in range(0, len(rows), RAW_BATCH):
            async with conn.transaction():
                await (_claim_and_copy if claim else _stage_and_insert)(
                    conn, rows[start : start + RAW_BATCH], table, shape
                )
        elapsed = time.perf_counter() - began
        cpu = await meter.stop()
        stored = await conn.fetchval(f"SELECT count(*) FROM bench.{table}")
    finally:
        await conn.close()
    if stored != len(rows):
        raise RuntimeError(f"raw COPY stored {stored} rows of {len(rows)}")
    return {
        "events": len(rows),
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(rows) / elapsed),
        "cpu": cpu,
    }


async def _stage_and_insert(
    conn: asyncpg.Connection[Any], rows: Sequence[tuple[Any, ...]], table: str, shape: TableShape
) -> None:
    await conn.copy_records_to_table("bench_stage", records=rows, columns=COLUMNS)
    await conn.execute(
        f"INSERT INTO bench.{table} ({COLUMN_LIST}) "
        f"SELECT {COLUMN_LIST} FROM bench_stage {shape.on_conflict}"
    )


async def _claim_and_copy(
    conn: asyncpg.Connection[Any], rows: Sequence[tuple[Any, ...]], table: str, _: TableShape
) -> None:
    at = COLUMNS.index("timestamp")
    await conn.copy_records_to_table(
        "raw_claim_ids", schema_name="bench", records=[(r[0], r[at]) for r in rows]
    )
    await conn.copy_records_to_table(table, schema_name="bench", records=rows, columns=COLUMNS)


async def naive_consumer(
    url: str,
    bootstrap: str,
    topic: str,
    sample: int,
    *,
    meter: CpuMeter,
    monitor: asyncpg.Connection[Any],
    shape: TableShape,
) -> dict[str, Any]:
    """(a) The naive consumer: ``async for`` each record, one autocommitted INSERT."""
    conn = await asyncpg.connect(url)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="bench-naive",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        session_timeout_ms=scratch.SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=scratch.SESSION_TIMEOUT_MS // 4,
    )
    insert = (
        f"INSERT INTO bench.naive_logs ({COLUMN_LIST}) VALUES "
        f"({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) "
        f"{shape.on_conflict}"
    )
    done = 0
    began = 0.0
    try:
        await scratch.checkpoint(monitor)
        await consumer.start()
        async for record in consumer:
            if done == 0:  # the clock starts at the first record: the group join is excluded
                await meter.start()
                began = time.perf_counter()
            await conn.execute(insert, *audit_row(decode_event(record.value)))
            done += 1
            if done % 5000 == 0:
                log.info("naive: %d / %d events", done, sample)
            if done >= sample:
                break
        elapsed = time.perf_counter() - began
        cpu = await meter.stop()
    finally:
        await consumer.stop()
        await conn.close()
    return {
        "events": done,
        "seconds": round(elapsed, 3),
        "events_per_s": round(done / elapsed),
        "cpu": cpu,
    }


# --------------------------------------------------------------------------------------
# Phase 2's load generator and visibility poller (a separate process)


@dataclass(frozen=True)
class SteadyLoad:
    bootstrap: str
    topic: str
    database_url: str
    rate: float
    seconds: float
    linger_ms: int
    sample_every: int
    poll_interval_s: float
    seed: int


def steady_load_process(
    load: SteadyLoad, results: multiprocessing.Queue[dict[str, Any]], ready: Any
) -> None:
    scratch.setup_logging(LOG_FORMAT)
    results.put(asyncio.run(_steady_load(load, ready)))


async def _steady_load(load: SteadyLoad, ready: Any) -> dict[str, Any]:
    watch: dict[uuid.UUID, float] = {}  # sampled ids not yet seen -> published_at
    publishing = asyncio.Event()
    publishing.set()
    # Made before the clock starts: the load process then spends its CPU on publishing
    # (stamp, validate, encode, send), as a producer would, not on inventing workflows.
    events = _steady_events(int(load.rate * load.seconds), load.seed)
    async with PhaseEventPublisher(
        load.bootstrap, load.topic, linger_ms=load.linger_ms, client_id="bench-steady"
    ) as publisher:
        poller = asyncio.create_task(_poll_visibility(load, watch, publishing))
        ready.set()  # the parent's CPU meter starts now
        began_cpu = time.process_time()
        published, elapsed = await _publish_steadily(load, publisher, events, watch)
        cpu_s = time.process_time() - began_cpu
    publishing.clear()
    seen = await poller
    seen["published"] = published
    seen["publish_seconds"] = round(elapsed, 3)
    seen["achieved_rate"] = round(published / elapsed)
    seen["process_cpu_pct"] = round(100 * cpu_s / elapsed)
    return seen


async def _publish_steadily(
    load: SteadyLoad,
    publisher: PhaseEventPublisher,
    events: Sequence[PhaseEvent],
    watch: dict[uuid.UUID, float],
) -> tuple[int, float]:
    total = len(events)
    inflight: set[asyncio.Task[Any]] = set()
    sent = 0
    began = time.monotonic()
    next_log = began + 5
    while sent < total:
        due = min(total, int((time.monotonic() - began) * load.rate) + 1)
        if due > sent:
            stamp = time.time()
            batch = []
            for seq in range(sent, due):
                event = events[seq]
                batch.append(
                    replace(
                        event, metadata={**event.metadata, "published_at": stamp, "bench_seq": seq}
                    )
                )
                if seq % load.sample_every == 0:
                    watch[event.event_id] = stamp
            sent = due
            task = asyncio.create_task(publisher.publish_many(batch))  # acks awaited below
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if time.monotonic() >= next_log:
            log.info("steady load: %d / %d events published", sent, total)
            next_log += 5
        await asyncio.sleep(0.005)
    await asyncio.gather(*inflight)
    return sent, time.monotonic() - began


def _steady_events(total: int, seed: int) -> list[PhaseEvent]:
    rng = random.Random(seed)
    events: list[PhaseEvent] = []
    while len(events) < total:
        events += workflow_events(rng, datetime.now(UTC))
    log.info("steady load: %d events made; publishing", total)
    return events[:total]


async def _poll_visibility(
    load: SteadyLoad, watch: dict[uuid.UUID, float], publishing: asyncio.Event
) -> dict[str, Any]:
    """Every poll_interval, ask which watched ids are visible. A row seen by a query that
    started at t was committed before t and after the previous query's start: the
    latency is bracketed by [previous start, t] minus its publish time."""
    conn = await asyncpg.connect(load.database_url)
    upper: list[float] = []
    lower: list[float] = []
    previous = time.time()
    queries = 0
    deadline: float | None = None
    try:
        while True:
            if not publishing.is_set():  # then wait for the last ids, at most 60 s
                deadline = deadline or time.time() + 60
                if not watch or time.time() > deadline:
                    break
            if watch:
                asked = time.time()
                rows = await conn.fetch(
                    "SELECT id FROM workflow_phase_logs WHERE id = ANY($1::uuid[])", list(watch)
                )
                queries += 1
                for row in rows:
                    published_at = watch.pop(row["id"])
                    upper.append(asked - published_at)
                    lower.append(max(0.0, previous - published_at))
                previous = asked
            await asyncio.sleep(load.poll_interval_s)
    finally:
        await conn.close()
    return {
        "visible_upper_s": upper,
        "visible_lower_s": lower,
        "never_seen": len(watch),
        "queries": queries,
    }


# --------------------------------------------------------------------------------------
# The projector phases


async def wait_applied(
    projector_task: asyncio.Task[None],
    applied: Callable[[], int],
    target: int,
    label: str,
    *,
    timeout_s: float = 900,
    on_first: Callable[[], Awaitable[None]] | None = None,
) -> tuple[float, float, int]:
    """Poll the projector's counter (it moves after each commit) until it reaches target.
    Return (first commit time, last commit time, events in the first batch)."""
    first_at, first_events = 0.0, 0
    deadline = time.monotonic() + timeout_s
    next_log = time.monotonic() + 5
    while (count := applied()) < target:
        if projector_task.done():
            projector_task.result()  # raises what stopped it
            raise RuntimeError("the projector stopped early")
        if count and not first_at:
            first_at, first_events = time.perf_counter(), count
            if on_first is not None:
                await on_first()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: {count} of {target} events after {timeout_s:.0f} s")
        if time.monotonic() >= next_log:
            log.info("%s: %d / %d events applied", label, count, target)
            next_log += 5
        await asyncio.sleep(0.002)
    done_at = time.perf_counter()
    return first_at or done_at, done_at, first_events or target


def percentiles_ms(values: Sequence[float]) -> dict[str, float | None]:
    if len(values) < 2:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


async def sql_latency(conn: asyncpg.Connection[Any]) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY d) AS p,"
        " max(d) AS mx FROM (SELECT extract(epoch FROM projected_at)"
        " - (metadata->>'published_at')::float8 AS d FROM workflow_phase_logs"
        " WHERE metadata ? 'published_at') AS t"
    )
    if row is None or not row["n"]:
        return {"events": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "events": row["n"],
        "p50_ms": round(row["p"][0] * 1000, 1),
        "p99_ms": round(row["p"][1] * 1000, 1),
        "max_ms": round(row["mx"] * 1000, 1),
    }


async def projector_phases(
    args: argparse.Namespace,
    settings: Settings,
    events: int,
    meter: CpuMeter,
    monitor: asyncpg.Connection[Any],
) -> dict[str, Any]:
    applied_before = 0
    await scratch.checkpoint(monitor)
    async with audit_projector(settings) as projector:
        started = time.perf_counter()
        task = asyncio.create_task(projector.run())
        try:  # CPU is metered from the first commit on, like the rate
            first_at, done_at, first_events = await wait_applied(
                task,
                lambda: projector.stats.events_applied,
                events,
                "phase 1 (projector)",
                on_first=meter.start,
            )
            cpu = await meter.stop()
            batches = projector.stats.batches
            stored = await monitor.fetchval("SELECT count(*) FROM workflow_phase_logs")
            if stored != events:
                raise RuntimeError(f"the projector stored {stored} rows of {events}")
            drain = {
                "events": events,
                "batches": batches,
                "seconds_incl_group_join": round(done_at - started, 3),
                "events_per_s_incl_group_join": round(events / (done_at - started)),
                "first_batch_after_s": round(first_at - started, 3),
                "events_per_s": round((events - first_events) / max(1e-9, done_at - first_at)),
                "cpu": cpu,
            }
            log.info(
                "phase 1: %d events in %.2f s (%d/s after the first batch)",
                events,
                done_at - started,
                drain["events_per_s"],
            )
            applied_before = projector.stats.events_applied
            latency = await steady_phase(
                args,
                settings,
                projector_task=task,
                applied=lambda: projector.stats.events_applied,
                applied_before=applied_before,
                meter=meter,
            )
            latency["projector_batches"] = projector.stats.batches - batches
        finally:
            projector.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=30)
    latency["sql_projected_at"] = await sql_latency(monitor)
    return {"drain": drain, "latency": latency}


async def steady_phase(
    args: argparse.Namespace,
    settings: Settings,
    *,
    projector_task: asyncio.Task[None],
    applied: Callable[[], int],
    applied_before: int,
    meter: CpuMeter,
) -> dict[str, Any]:
    load = SteadyLoad(
        settings.bootstrap_servers,
        settings.phase_events_topic,
        settings.database_url or "",
        args.rate,
        args.seconds,
        settings.producer_linger_ms,
        args.sample_every,
        args.poll_ms / 1000,
        args.seed + 1,
    )
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[dict[str, Any]] = context.Queue()
    ready = context.Event()
    process = context.Process(
        target=steady_load_process, args=(load, results, ready), name="bench-steady-load"
    )
    log.info(
        "phase 2: %.0f events/s for %.0f s from a separate process; polling 1 id in %d every %d ms",
        args.rate,
        args.seconds,
        args.sample_every,
        args.poll_ms,
    )
    process.start()
    while not await asyncio.to_thread(ready.wait, 0.5):
        if not process.is_alive():
            raise RuntimeError(f"the load process exited with {process.exitcode}")
    await meter.start()
    try:
        outcome: dict[str, Any] | None = None
        next_log = time.monotonic() + 5
        while outcome is None:
            if projector_task.done():
                projector_task.result()
                raise RuntimeError("the projector stopped during phase 2")
            with contextlib.suppress(queue.Empty):
                outcome = await asyncio.to_thread(results.get, True, 0.5)
            if outcome is None and not process.is_alive():
                raise RuntimeError(f"the load process exited with {process.exitcode}")
            if time.monotonic() >= next_log:
                log.info(
                    "phase 2: projector has applied %d events since phase 1",
                    applied() - applied_before,
                )
                next_log += 5
    finally:
        await asyncio.to_thread(process.join, 30)
    cpu = await meter.stop()
    total = applied_before + int(outcome["published"])
    await wait_applied(projector_task, applied, total, "phase 2 (catching up)", timeout_s=120)
    upper = [float(v) for v in outcome.pop("visible_upper_s")]
    lower = [float(v) for v in outcome.pop("visible_lower_s")]
    outcome["visible_upper"] = percentiles_ms(upper)
    outcome["visible_lower"] = percentiles_ms(lower)
    outcome["visible_samples"] = len(upper)
    outcome["cpu_during_load"] = cpu
    outcome["rate_requested"] = args.rate
    outcome["poll_interval_ms"] = args.poll_ms
    return outcome


# --------------------------------------------------------------------------------------
# Scale-out: the projector as K separate OS processes in one consumer group


async def start_workers(settings: Settings, count: int, workdir: Path) -> list[scratch.Child]:
    """``count`` audit processes, their logs workdir/scaleout-<count>-worker-<i>.log, cwd the
    scratch directory (so that no .env file is read)."""
    env = scratch.phasestream_environment(settings)
    return [
        await scratch.spawn(
            f"scaleout-{count}-worker-{index}",
            scratch.phasestream_audit_argv(),
            env=env,
            workdir=workdir,
        )
        for index in range(1, count + 1)
    ]


async def stop_workers(workers: Sequence[scratch.Child], timeout_s: float = 30) -> list[int | None]:
    """SIGTERM every worker at once; their exit codes (None: it had to be killed)."""
    return list(await asyncio.gather(*(scratch.stop(w, timeout_s=timeout_s) for w in workers)))


ASSIGNED: Final = re.compile(r"(\d+) partitions at stored positions")


def worker_log_facts(worker: scratch.Child) -> dict[str, Any]:
    """Partition counts at each (re)assignment, and the writes refused as stale."""
    text = worker.log_path.read_text(errors="replace")
    return {
        "assignments": [int(m.group(1)) for m in ASSIGNED.finditer(text)],
        "stale_position_retries": text.count("re-reading stored positions"),
        "log": str(worker.log_path),
    }


async def scale_out(
    base: Settings,
    payloads: Sequence[bytes],
    count: int,
    *,
    db_name: str,
    workdir: Path,
    monitor: asyncpg.Connection[Any],
    writes_in_flight: int | None = None,
) -> dict[str, Any]:
    """Drain N events with `count` projector processes: a fresh topic and consumer group,
    and workflow_phase_logs emptied by TRUNCATE (same database, so the same schema).
    ``writes_in_flight``: each process's PHASESTREAM_WRITES_IN_FLIGHT (None: the default)."""
    name = f"{count}" if writes_in_flight is None else f"{count}-w{writes_in_flight}"
    settings = Settings(
        kafka_bootstrap_servers=base.bootstrap_servers,
        database_url=base.database_url,
        phase_events_topic=f"bench.scaleout-{name}",
        dlq_topic=f"bench.scaleout-{name}.dlq",
        audit_consumer_group=f"bench-scaleout-{name}",
        consumer_session_timeout_ms=scratch.SESSION_TIMEOUT_MS,
    )
    if writes_in_flight is not None:
        settings = settings.model_copy(update={"writes_in_flight": writes_in_flight})
    await create_topics(settings)
    events = [decode_event(p) for p in payloads]  # the same events as the backlog
    log.info(
        "scale-out (%d): publishing %d events to %s",
        count,
        len(events),
        settings.phase_events_topic,
    )
    await scratch.publish(settings, events, client_id="bench-backlog", progress=True)
    del events
    # The event ids the earlier parts claimed go too (workflow_phase_event_ids, migration
    # 0008): still claimed, they would send every batch through the sink's conflict check.
    ids = await monitor.fetchval("SELECT to_regclass('workflow_phase_event_ids') IS NOT NULL")
    await monitor.execute(
        "TRUNCATE workflow_phase_logs" + (", workflow_phase_event_ids" if ids else "")
    )
    poll = await asyncpg.connect(settings.database_url)
    try:
        await scratch.checkpoint(monitor)
        log.info("scale-out (%d): starting %d projector processes", count, count)
        started = time.perf_counter()
        workers = await start_workers(settings, count, workdir)
        meter = CpuMeter(
            monitor,
            db_name,
            scratch.broker_pids(),
            {
                **{f"worker_{i}": [w.process.pid] for i, w in enumerate(workers, 1)},
                "count_poll_backend": [poll.get_server_pid()],
            },
        )
        try:
            timing = await _drain_with_workers(
                poll, workers, len(payloads), meter, count, settings=settings
            )
            cpu = await meter.stop()
        finally:
            codes = await stop_workers(workers)
        stored = await poll.fetchval("SELECT count(*) FROM workflow_phase_logs")
    finally:
        await poll.close()
    first_at, done_at, first_rows, polls, poll_ms = timing
    if stored != len(payloads):
        raise RuntimeError(f"scale-out ({count}): {stored} rows stored of {len(payloads)}")
    if any(code != 0 for code in codes):
        log.error("scale-out (%d): worker exit codes %s (expected 0)", count, codes)
    rate = round((len(payloads) - first_rows) / max(1e-9, done_at - first_at))
    log.info(
        "scale-out (%d): %d events/s after the first commit; exit codes %s", count, rate, codes
    )
    return {
        "workers": count,
        "writes_in_flight": settings.writes_in_flight,
        "events": len(payloads),
        "events_per_s": rate,
        "seconds": round(done_at - first_at, 3),
        "first_commit_after_s": round(first_at - started, 3),
        "events_per_s_incl_startup": round(len(payloads) / (done_at - started)),
        "rows_at_first_commit": first_rows,
        "count_polls": polls,
        "count_query_ms_mean": round(poll_ms, 2),
        "exit_codes": codes,
        "cpu": cpu,
        "worker_logs": [worker_log_facts(w) for w in workers],
    }


def scale_out_runs(workers: Sequence[int], *, one_write: bool) -> list[tuple[int, int | None]]:
    """(processes, writes in flight) of each scale-out run (None: the default). With
    ``one_write``, one process writing one batch at a time right after the first 1: what
    the overlap of writes gives, measured beside it."""
    runs: list[tuple[int, int | None]] = [(count, None) for count in workers]
    if one_write:
        at = next((i + 1 for i, (count, _) in enumerate(runs) if count == 1), 0)
        runs.insert(at, (1, 1))
    return runs


async def _drain_with_workers(
    poll: asyncpg.Connection[Any],
    workers: Sequence[scratch.Child],
    target: int,
    meter: CpuMeter,
    count: int,
    *,
    settings: Settings,
    timeout_s: float = 900,
) -> tuple[float, float, int, int, float]:
    """Poll the workers' stored positions every SCALE_OUT_POLL_S until they add up to
    target. Return (first commit seen, target seen, rows at the first commit, polls, mean
    poll ms).

    A position moves in the transaction of its rows, and the topic is fresh and every event
    valid, so their sum is the rows committed. A count(*) of the growing table cost
    Postgres 7-22 % of a core at 100,000-300,000 rows, taken from the workers it measures.
    """
    first_at, first_rows, polls, poll_s = 0.0, 0, 0, 0.0
    deadline = time.monotonic() + timeout_s
    next_log = time.monotonic() + 5
    while True:
        for worker in workers:
            if worker.process.returncode is not None:
                raise RuntimeError(
                    f"scale-out ({count}): a worker exited with "
                    f"{worker.process.returncode}:\n{worker.log_tail()}"
                )
        asked = time.perf_counter()
        rows = int(
            await poll.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions "
                "WHERE consumer = $1 AND topic = $2",
                settings.audit_consumer_group,
                settings.phase_events_topic,
            )
        )
        now = time.perf_counter()
        polls, poll_s = polls + 1, poll_s + now - asked
        if rows and not first_at:  # CPU is metered from the first commit on, like the rate
            first_at, first_rows = now, rows
            await meter.start()
        if rows >= target:
            return first_at, now, first_rows, polls, 1000 * poll_s / polls
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"scale-out ({count}): {rows} of {target} rows after {timeout_s:.0f} s"
            )
        if time.monotonic() >= next_log:
            log.info("scale-out (%d): %d / %d rows", count, rows, target)
            next_log += 5
        await asyncio.sleep(SCALE_OUT_POLL_S)


# --------------------------------------------------------------------------------------
# Report


def _fmt(value: Any, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,}{unit}"


def report(figures: Mapping[str, Any]) -> str:
    machine = figures["machine"]
    drain = figures["projector"]["drain"]
    latency = figures["projector"]["latency"]
    raw, naive, ratios = figures["raw_copy"], figures["naive"], figures["ratios"]
    claim = figures["raw_copy_claim"]
    settings = machine["postgres_settings"]

    def cpu(part: Mapping[str, Any]) -> str:
        c = part["cpu"] if "cpu" in part else part["cpu_during_load"]
        extra = int(part.get("process_cpu_pct", 0))  # phase 2's load process
        other = (
            c["machine_busy_pct"]
            - c["bench_process_pct"]
            - c["postgres_backends_pct"]
            - c["broker_pct"]
            - extra
        )
        return (
            f"bench {c['bench_process_pct']:>3}%  pg backends {c['postgres_backends_pct']:>3}%"
            f"  broker {c['broker_pct']:>3}%"
            + (f"  load proc {extra:>3}%" if extra else "")
            + f"  | machine {c['machine_busy_pct']:>3}% of {100 * machine['nproc']}%,"
            f" other {other:>3}% (of it stolen by the host {c.get('steal_pct', 0):>3}%)"
        )

    lines = [
        "",
        "== phasestream audit projection benchmark ==",
        f"machine: {machine['nproc']} cpus ({machine['cpu_model']}), {machine['memory_gb']} GB, "
        f"Linux {machine['kernel']}",
        f"python {machine['python']}; {machine['postgres'].split(' on ')[0]} "
        f"(shared_buffers {settings.get('shared_buffers')}, synchronous_commit "
        f"{settings.get('synchronous_commit')}, fsync {settings.get('fsync')})",
        f"packages: {', '.join(f'{k} {v}' for k, v in machine['packages'].items())}",
        f"events: {figures['events']:,} (realistic demo workflows, unique ids); "
        f"projector batches <= {figures['settings']['batch_max_records']}, fetch wait "
        f"{figures['settings']['batch_max_wait_ms']} ms, producer linger "
        f"{figures['settings']['producer_linger_ms']} ms",
        "",
        f"{'method':<58}{'events':>9}{'events/s':>11}",
        f"{'(1) audit projector, backlog drain (after the 1st batch)':<58}"
        f"{drain['events']:>9,}{drain['events_per_s']:>11,}",
        f"{'    same, incl. consumer-group join (' + str(drain['first_batch_after_s']) + ' s)':<58}"
        f"{drain['events']:>9,}{drain['events_per_s_incl_group_join']:>11,}",
        f"{'(a) naive: aiokafka, 1 autocommit INSERT per event':<58}"
        f"{naive['events']:>9,}{naive['events_per_s']:>11,}",
        f"{'(b) raw limit: COPY temp + INSERT ON CONFLICT, 5k, no Kafka':<58}"
        f"{raw['events']:>9,}{raw['events_per_s']:>11,}",
        f"{'(b2) raw limit, same guarantee: id claim + COPY, 5k':<58}"
        f"{claim['events']:>9,}{claim['events_per_s']:>11,}",
        "",
        f"projector / raw COPY : {ratios['projector_vs_raw']:.2f}x  (target >= {TARGET_VS_RAW}: "
        f"{'met' if ratios['projector_vs_raw'] >= TARGET_VS_RAW else 'MISSED'})",
        f"projector / raw COPY + id claim : {ratios['projector_vs_raw_claim']:.2f}x  (target >= "
        f"{TARGET_VS_RAW}: "
        f"{'met' if ratios['projector_vs_raw_claim'] >= TARGET_VS_RAW else 'MISSED'})",
        f"projector / naive    : {ratios['projector_vs_naive']:.1f}x  (target >= "
        f"{TARGET_VS_NAIVE:.0f}: "
        f"{'met' if ratios['projector_vs_naive'] >= TARGET_VS_NAIVE else 'MISSED'})",
        "",
        "CPU while timed, % of one core ('other': Postgres background processes, time the host "
        "stole for other guests, and anything else on the machine,",
        f"  e.g. other users; machine busy before the run: {figures['machine_busy_before_pct']}%):",
        f"  projector drain : {cpu(drain)}",
        f"  naive           : {cpu(naive)}",
        f"  raw COPY        : {cpu(raw)}",
        f"  raw COPY + claim: {cpu(claim)}",
        f"  steady load     : {cpu(latency)}",
        "",
        *scale_out_report(figures),
        f"Latency at {latency['achieved_rate']:,} events/s for {latency['publish_seconds']} s "
        f"({latency['published']:,} events, {latency['projector_batches']:,} projector "
        "batches), projector running:",
        f"  publish -> committed & visible  p50 {_fmt(latency['visible_upper']['p50_ms'], ' ms')}"
        f"  p99 {_fmt(latency['visible_upper']['p99_ms'], ' ms')}"
        f"  max {_fmt(latency['visible_upper']['max_ms'], ' ms')}"
        f"   ({latency['visible_samples']:,} sampled ids, {latency['never_seen']} never seen)",
        f"    (lower bracket: p50 {_fmt(latency['visible_lower']['p50_ms'], ' ms')}"
        f"  p99 {_fmt(latency['visible_lower']['p99_ms'], ' ms')})",
        f"  publish -> projected_at (txn start) p50 "
        f"{_fmt(latency['sql_projected_at']['p50_ms'], ' ms')}"
        f"  p99 {_fmt(latency['sql_projected_at']['p99_ms'], ' ms')}"
        f"  max {_fmt(latency['sql_projected_at']['max_ms'], ' ms')}"
        f"   (all {latency['sql_projected_at']['events']:,} events)",
        "",
        "How latency is measured: the load process stamps each event's metadata.published_at "
        "with time.time() just before handing the batch to PhaseEventPublisher.publish_many "
        "(so the producer's linger is included). The same process polls Postgres every "
        f"{latency['poll_interval_ms']} ms for 1 in {figures['settings']['sample_every']} ids: "
        "a row found by a query that started at t was committed before t, so "
        "'committed & visible' is t - published_at, an upper bound; the lower bracket uses the "
        "previous poll's start. 'projected_at' is now() in the projector's transaction, i.e. "
        "its START (before COPY, INSERT and COMMIT), so that figure understates the time to "
        "visibility by the transaction's duration. All clocks are this machine's.",
        "",
    ]
    return "\n".join(lines)


def scale_out_report(figures: Mapping[str, Any]) -> list[str]:
    runs = figures.get("scale_out") or []
    if not runs:
        return []
    cores = 100 * figures["machine"]["nproc"]
    lines = [
        "Scale-out: the projector as K OS processes (python -m phasestream run audit, GC tuned "
        "by run_audit), one consumer",
        "  group; each K on a fresh topic + group, workflow_phase_logs and its event ids "
        "truncated, the N events published before the processes start;",
        f"  timed from the first committed row to N rows (the sum of stored positions every "
        f"{SCALE_OUT_POLL_S * 1000:.0f} ms):",
        f"  {'processes':<10}{'events/s':>10}{'vs raw':>8}{'vs raw+claim':>14}{'vs naive':>10}"
        f"{'1st commit':>12}{'incl. start':>13}  exit codes  partitions per process",
    ]
    for run in runs:
        parts = " + ".join(
            "->".join(str(n) for n in w["assignments"]) or "?" for w in run["worker_logs"]
        )
        stale = sum(w["stale_position_retries"] for w in run["worker_logs"])
        lines.append(
            f"  {run['workers']:<10}{run['writes_in_flight']:>7}{run['events_per_s']:>10,}"
            f"{run['vs_raw']:>7.2f}x"
            f"{run['vs_raw_claim']:>13.2f}x"
            f"{run['vs_naive']:>9.1f}x{run['first_commit_after_s']:>10.1f} s"
            f"{run['events_per_s_incl_startup']:>11,}/s  "
            f"{','.join(str(c) for c in run['exit_codes']):<10}  {parts}"
            + (f"  ({stale} stale-position retries)" if stale else "")
        )
    ones = {r["writes_in_flight"]: r["events_per_s"] for r in runs if r["workers"] == 1}
    if 1 in ones and len(ones) > 1:
        most = max(ones)
        lines.append(
            f"  one process, {most} writes at once / one at a time: {ones[most] / ones[1]:.2f}x"
        )
    lines.append("  CPU while timed, % of one core:")
    for run in runs:
        c = run["cpu"]
        workers = [c[f"worker_{i}_pct"] for i in range(1, run["workers"] + 1)]
        listed = (
            sum(workers)
            + c["postgres_backends_pct"]
            + c["count_poll_backend_pct"]
            + c["broker_pct"]
            + c["bench_process_pct"]
        )
        lines.append(
            f"  {run['workers']} process(es), {run['writes_in_flight']} writes:"
            f" projector {' + '.join(f'{w}%' for w in workers)}"
            f"  pg backends {c['postgres_backends_pct']}%"
            f"  poll {c['count_poll_backend_pct']}%"
            f"  broker {c['broker_pct']}%  bench {c['bench_process_pct']}%"
            f"  | machine {c['machine_busy_pct']}% of {cores}%,"
            f" other {c['machine_busy_pct'] - listed}% (stolen {c.get('steal_pct', 0)}%)"
        )
    lines.append("")
    return lines


# --------------------------------------------------------------------------------------
# Main


LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of process counts: {text!r}") from None
    if any(c < 0 for c in counts):
        raise argparse.ArgumentTypeError("process counts are >= 0")
    return [c for c in counts if c]


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="backlog size N")
    parser.add_argument(
        "--database-url", default=scratch.default_database_url(), help=scratch.DATABASE_URL_HELP
    )
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=20_000,
        help="events the naive consumer writes (at most N)",
    )
    parser.add_argument("--rate", type=float, default=5000, help="phase 2 events/s")
    parser.add_argument("--seconds", type=float, default=20, help="phase 2 duration")
    parser.add_argument(
        "--sample-every", type=int, default=10, help="phase 2: poll for 1 id in this many"
    )
    parser.add_argument("--poll-ms", type=int, default=10, help="phase 2 poll interval")
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=[1, 2],
        help="scale-out: projector process counts to measure, e.g. 2 or 1,2 (default 1,2; 0 skips)",
    )
    parser.add_argument(
        "--one-write",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scale-out: also one process writing one batch at a time "
        "(PHASESTREAM_WRITES_IN_FLIGHT=1), before the --workers runs (default: on)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--broker",
        choices=scratch.BROKERS,
        default="tansu",
        help="the scratch broker: the embedded Tansu or Apache Kafka",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few seconds' regression check (make bench-quick): N = 20,000, "
        "a naive sample of 2,000, 2,000 events/s for 3 s, no scale-out",
    )
    args = parser.parse_args(None if argv is None else list(argv))
    if args.quick:
        args.events, args.naive_sample, args.rate, args.seconds = 20_000, 2_000, 2_000, 3
        args.workers, args.one_write = [], False
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="phasestream-bench-"))
    async with scratch.scratch_database(args.database_url) as (db_name, db_url):
        with scratch.local_broker(workdir, args.broker) as bootstrap:
            settings = Settings(
                kafka_bootstrap_servers=bootstrap,
                database_url=db_url,
                consumer_session_timeout_ms=scratch.SESSION_TIMEOUT_MS,
                kafka_idempotent_producer=args.broker == "kafka",
            )
            await run_migrations(settings)
            await create_topics(settings)
            monitor = await asyncpg.connect(db_url)
            try:
                return await _measure(args, settings, monitor, db_name, db_url, workdir=workdir)
            finally:
                await monitor.close()


async def _measure(
    args: argparse.Namespace,
    settings: Settings,
    monitor: asyncpg.Connection[Any],
    db_name: str,
    db_url: str,
    *,
    workdir: Path,
) -> dict[str, Any]:
    facts = await machine_and_postgres_facts(monitor)
    busy_before = round(await asyncio.to_thread(measure.machine_busy_pct))
    log.info(
        "machine busy before the run: %.0f%% of one core (of %d%%)",
        busy_before,
        100 * (os.cpu_count() or 1),
    )
    meter = CpuMeter(monitor, db_name, scratch.broker_pids())
    log.info("generating %d events", args.events)
    events = scratch.make_events(args.events, args.seed)
    shape = await audit_table_shape(monitor)
    await create_copies(monitor, shape, scratch.months_of(events))
    # publish_many sends encode_event(e): these are the published bytes, byte for byte.
    payloads = [encode_event(e) for e in events]
    log.info("publishing the backlog of %d events", len(events))
    publish_rate = await scratch.publish(settings, events, client_id="bench-backlog", progress=True)
    del events[:]  # from here on the baselines use only the bytes

    began = time.perf_counter()
    rows = [audit_row(decode_event(p)) for p in payloads]
    decode_us = (time.perf_counter() - began) / len(rows) * 1e6
    log.info("baseline (b): raw COPY of %d rows decoded from the same bytes", len(rows))
    raw = await raw_copy(db_url, rows, meter, monitor, shape)
    log.info("raw COPY: %d events/s", raw["events_per_s"])
    log.info("baseline (b2): raw COPY with the event-id claim, the same rows")
    raw_claim = await raw_copy(db_url, rows, meter, monitor, shape, claim=True)
    log.info("raw COPY + id claim: %d events/s", raw_claim["events_per_s"])
    del rows

    sample = min(args.naive_sample, args.events)
    log.info("baseline (a): naive consumer, %d events from the same topic", sample)
    naive = await naive_consumer(
        db_url,
        settings.bootstrap_servers,
        settings.phase_events_topic,
        sample,
        meter=meter,
        monitor=monitor,
        shape=shape,
    )
    log.info("naive: %d events/s", naive["events_per_s"])

    log.info("phase 1: the audit projector drains the %d-event backlog", args.events)
    projector = await projector_phases(args, settings, args.events, meter, monitor)
    drain_rate = projector["drain"]["events_per_s"]

    scaled = []
    for count, in_flight in scale_out_runs(args.workers, one_write=args.one_write):
        log.info("scale-out: %d projector process(es) drain %d events", count, args.events)
        result = await scale_out(
            settings,
            payloads,
            count,
            db_name=db_name,
            workdir=workdir,
            monitor=monitor,
            writes_in_flight=in_flight,
        )
        result["vs_raw"] = round(result["events_per_s"] / raw["events_per_s"], 3)
        result["vs_raw_claim"] = round(result["events_per_s"] / raw_claim["events_per_s"], 3)
        result["vs_naive"] = round(result["events_per_s"] / naive["events_per_s"], 2)
        scaled.append(result)
    return {
        "events": args.events,
        "machine": facts,
        "settings": {
            "batch_max_records": settings.batch_max_records,
            "batch_max_wait_ms": settings.batch_max_wait_ms,
            "producer_linger_ms": settings.producer_linger_ms,
            "topic_partitions": settings.topic_partitions,
            "consumer_session_timeout_ms": settings.consumer_session_timeout_ms,
            "sample_every": args.sample_every,
        },
        "machine_busy_before_pct": busy_before,
        "backlog_publish_events_per_s": round(publish_rate),
        "decode_and_row_us_per_event": round(decode_us, 1),
        "projector": projector,
        "naive": naive,
        "raw_copy": raw,
        "raw_copy_claim": raw_claim,
        "scale_out": scaled,
        "ratios": {
            "projector_vs_raw": round(drain_rate / raw["events_per_s"], 3),
            "projector_vs_raw_claim": round(drain_rate / raw_claim["events_per_s"], 3),
            "projector_vs_naive": round(drain_rate / naive["events_per_s"], 2),
        },
    }


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    scratch.setup_logging(LOG_FORMAT)
    figures = scratch.run_timed(run(args))
    print(report(figures))
    print(f"total run: {figures['total_run_seconds']} s")
    scratch.write_figures(args.json, figures, logger=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
