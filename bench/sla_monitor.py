"""Benchmark: the SLA monitor holding N open phases, its state in Postgres, not in memory.

Run: ``.venv/bin/python bench/sla_monitor.py [--open 1000000] [--database-url URL]
[--mixed 200000] [--json PATH]``.

Everything is scratch: a ``phasestream_bench_sla_<random>`` database (dropped at the end)
with the migrations applied, a Tansu broker on a free port, topics and consumer groups with
unique names. Then:

1. the thresholds are set to one day for every phase, so that no phase published now can
   become overdue during the run (the overdue timer still runs its query every second);
2. a child process publishes N ``started`` events (distinct workflow ids, phases 1-7,
   timestamp = now) with ``PhaseEventPublisher.publish_many``, 5,000 per call; this process
   never holds the events, so its memory is the monitor's alone;
3. the ``sla`` consumer runs in this process (``Runtime`` + ``run_consumers``, as
   ``phasestream run sla`` runs it) until its stored positions cover the N events and
   ``sla_open_phases`` holds N rows. Throughput is timed from the first committed batch to
   the last; RSS (``/proc/self/status`` VmRSS and ``getrusage`` ru_maxrss) is taken before
   and after and sampled while it runs;
4. the monitor stops; one ``SlaMonitor.report_overdue`` over the N open phases with
   watermarks of now and grace 0 (nothing is due), and one with a watermark a year ahead
   and limit 5,000 (claims 5,000 due phases), each repeated, with their query plans;
5. (``--mixed``, default 200,000) the monitor runs again, on a new topic and group, over a
   stream of started+completed pairs (each end 2,500 workflows after its start, so start
   and end usually land in different batches), with the N open phases still in the table.

The requirement demonstrated: "holds 1M open phases in under 1 GiB of memory".
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg

from models.events import PhaseEvent
from models.phases import LAST_PHASE, PhaseStatus
from phasestream.consumers import run_consumers
from phasestream.local_stack import embedded_broker
from phasestream.settings import Settings
from phasestream.wiring import Runtime, create_topics, run_migrations
from projections.sla.monitor import _DUE, SlaMonitor, due_query_args
from projections.sla.thresholds import load_thresholds
from streams.publisher import PhaseEventPublisher

if not __package__:  # run as a file (bench/sla_monitor.py), not with -m: the shared
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # helpers are bench.*

from bench import measure, scratch

log = logging.getLogger("bench.sla_monitor")

PUBLISH_CHUNK: Final = 5000
THRESHOLD_MS: Final = 86_400_000  # one day: nothing published now is due during the run
GIB: Final = 2**30
MIB: Final = 2**20
POLL_S: Final = 0.1
LOG_EVERY_S: Final = 5.0
DRAIN_TIMEOUT_S: Final = 1800.0
CHECK_REPEATS: Final = 3
CLAIM_LIMIT: Final = 5000
MIXED_BLOCK: Final = PUBLISH_CHUNK // 2  # workflows per block: their ends follow one block later
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
USER_IDS: Final = 1000


# --------------------------------------------------------------------------------------
# Memory and CPU (from /proc and getrusage, so no extra dependency)


def rss_bytes(pid: int | str = "self") -> int:
    """Current resident set size (VmRSS) of a process; 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(value: float) -> float:
    return round(value / MIB, 1)


# --------------------------------------------------------------------------------------
# Settings


def bench_settings(bootstrap: str, db_url: str, tag: str) -> Settings:
    """Settings with topics and consumer groups of their own (``tag`` makes them unique)."""
    return scratch.bench_settings(
        bootstrap,
        db_url,
        phase_events_topic=f"bench-sla-{tag}.phase-events",
        dlq_topic=f"bench-sla-{tag}.phase-events.dlq",
        sla_violations_topic=f"bench-sla-{tag}.sla-violations",
        sla_consumer_group=f"bench-sla-{tag}",
        sla_violations_consumer_group=f"bench-sla-{tag}-violations",
        log_level="INFO",
    )


# --------------------------------------------------------------------------------------
# Publishing, in a child process (the monitor's process never holds the events)


@dataclass(frozen=True)
class PublishJob:
    bootstrap: str
    topic: str
    linger_ms: int
    kind: str  # "started": N open phases; "mixed": N/2 started+completed pairs
    events: int
    tag: str


def _user(i: int) -> uuid.UUID:
    return uuid.UUID(int=(i % USER_IDS) + 1, version=4)


def started_chunks(job: PublishJob) -> Iterator[list[PhaseEvent]]:
    """N ``started`` events, distinct workflows, phases 1-7, timestamp = now (per chunk)."""
    for start in range(0, job.events, PUBLISH_CHUNK):
        now = datetime.now(UTC)
        yield [
            PhaseEvent(
                event_id=uuid.uuid4(),
                workflow_id=f"bench-{job.tag}-{i:08d}",
                user_id=_user(i),
                phase_number=1 + i % LAST_PHASE,
                status=PhaseStatus.STARTED,
                timestamp=now,
                metadata={"bench": "sla"},
            )
            for i in range(start, min(start + PUBLISH_CHUNK, job.events))
        ]


def mixed_chunks(job: PublishJob) -> Iterator[list[PhaseEvent]]:
    """Started+completed pairs: each chunk holds the starts of one block of workflows and
    the ends of the block before, so an end follows its start by ~2,500-5,000 events."""
    pairs = job.events // 2
    previous: list[PhaseEvent] = []
    for start in range(0, pairs + MIXED_BLOCK, MIXED_BLOCK):
        now = datetime.now(UTC)
        began = now - timedelta(seconds=2)
        starts = [
            PhaseEvent(
                event_id=uuid.uuid4(),
                workflow_id=f"mixed-{job.tag}-{i:08d}",
                user_id=_user(i),
                phase_number=1 + i % LAST_PHASE,
                status=PhaseStatus.STARTED,
                timestamp=began,
                metadata={"bench": "sla-mixed"},
            )
            for i in range(start, min(start + MIXED_BLOCK, pairs))
        ]
        ends = [
            PhaseEvent(
                event_id=uuid.uuid4(),
                workflow_id=s.workflow_id,
                user_id=s.user_id,
                phase_number=s.phase_number,
                status=PhaseStatus.COMPLETED,
                timestamp=s.timestamp + timedelta(milliseconds=1500),
                duration_ms=1500,
                metadata={"bench": "sla-mixed"},
            )
            for s in previous
        ]
        if starts or ends:
            yield starts + ends
        previous = starts


def publish_job(job: PublishJob) -> dict[str, Any]:
    """Entry point of the publishing child process."""
    scratch.setup_logging(LOG_FORMAT)
    return asyncio.run(_publish(job))


async def _publish(job: PublishJob) -> dict[str, Any]:
    chunks = started_chunks(job) if job.kind == "started" else mixed_chunks(job)
    published = 0
    last_log = time.monotonic()
    async with PhaseEventPublisher(
        job.bootstrap, job.topic, linger_ms=job.linger_ms, client_id=f"bench-sla-{job.kind}"
    ) as publisher:
        began = time.perf_counter()
        for chunk in chunks:
            await publisher.publish_many(chunk)
            published += len(chunk)
            if time.monotonic() - last_log >= LOG_EVERY_S:
                last_log = time.monotonic()
                log.info("publish (%s): %d / %d events", job.kind, published, job.events)
        elapsed = time.perf_counter() - began
    log.info("publish (%s): %d events in %.1f s", job.kind, published, elapsed)
    return {
        "events": published,
        "seconds": round(elapsed, 2),
        "events_per_s": round(published / elapsed),
    }


async def publish_in_child(job: PublishJob) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(
            pool, publish_job, job
        )
    return result


# --------------------------------------------------------------------------------------
# The monitor, in this process


async def applied_events(conn: asyncpg.Connection[Any], settings: Settings) -> int:
    """Events the monitor has committed: the sum of its stored positions (cheap to poll)."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions "
        "WHERE consumer = $1 AND topic = $2",
        settings.sla_consumer_group,
        settings.phase_events_topic,
    )
    return int(value)


async def open_phases(conn: asyncpg.Connection[Any]) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM sla_open_phases"))


async def run_monitor(
    settings: Settings,
    poll: asyncpg.Connection[Any],
    meter: measure.CpuMeter,
    expected_events: int,
    label: str,
) -> dict[str, Any]:
    """Run the ``sla`` consumer in this process until it has applied ``expected_events``."""
    rss_before, peak_before = rss_bytes(), peak_rss_bytes()
    log.info(
        "%s: monitor starts; RSS %.1f MiB, peak so far %.1f MiB",
        label,
        mib(rss_before),
        mib(peak_before),
    )
    runtime = Runtime(settings)
    task = asyncio.create_task(run_consumers(runtime, ["sla"]), name=f"sla-{label}")
    started = time.monotonic()
    first_at: float | None = None
    first_count = 0
    sampled_max = rss_before
    samples: list[tuple[float, int, float]] = []  # (seconds since first row, events, MiB)
    last_log = 0.0
    try:
        while True:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("the sla consumer stopped on its own")
            applied = await applied_events(poll, settings)
            now = time.monotonic()
            rss = rss_bytes()
            sampled_max = max(sampled_max, rss)
            if applied and first_at is None:
                first_at, first_count, last_log = now, applied, now
                await meter.start()
                log.info(
                    "%s: first batch committed after %.1f s (group join included)",
                    label,
                    now - started,
                )
            if first_at is not None and now - last_log >= LOG_EVERY_S:
                last_log = now
                rate = (applied - first_count) / max(1e-9, now - first_at)
                samples.append((round(now - first_at, 1), applied, mib(rss)))
                log.info(
                    "%s: %d / %d events applied, %.0f events/s, RSS %.1f MiB",
                    label,
                    applied,
                    expected_events,
                    rate,
                    mib(rss),
                )
            if applied >= expected_events:
                break
            if now - started > DRAIN_TIMEOUT_S:
                raise RuntimeError(
                    f"{label}: only {applied} of {expected_events} events "
                    f"applied in {DRAIN_TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(POLL_S)
        finished = time.monotonic()
        cpu = await meter.stop()
        rss_after, peak_after = rss_bytes(), peak_rss_bytes()
        assert first_at is not None
    finally:
        runtime.stop.set()
        await asyncio.wait_for(task, timeout=60)
    seconds = finished - first_at
    # The first batch's events were applied before the clock started: they are not counted.
    drain_rate = (applied - first_count) / seconds if applied > first_count else None
    log.info(
        "%s: %d events, %.1f s from the first committed batch to the last: %s "
        "events/s; RSS %.1f MiB (peak %.1f MiB)",
        label,
        applied,
        seconds,
        "n/a" if drain_rate is None else f"{drain_rate:.0f}",
        mib(rss_after),
        mib(peak_after),
    )
    return {
        "events": applied,
        "first_batch_events": first_count,
        "seconds_first_to_last_batch": round(seconds, 2),
        "events_per_s": None if drain_rate is None else round(drain_rate),
        "events_per_s_including_group_join": round(applied / (finished - started)),
        "seconds_to_first_batch": round(first_at - started, 2),
        "cpu": cpu,
        "rss_mib": {
            "before": mib(rss_before),
            "after": mib(rss_after),
            "sampled_max": mib(sampled_max),
        },
        "peak_rss_mib": {"before": mib(peak_before), "after": mib(peak_after)},
        "progress": samples,
    }


# --------------------------------------------------------------------------------------
# Sizes and the overdue check


async def table_sizes(conn: asyncpg.Connection[Any]) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT pg_total_relation_size('sla_open_phases') AS total, "
        "pg_relation_size('sla_open_phases') AS heap, "
        "pg_indexes_size('sla_open_phases') AS indexes, "
        "(SELECT count(*) FROM sla_open_phases) AS rows"
    )
    assert row is not None
    rows = int(row["rows"])
    return {
        "rows": rows,
        "total_mib": mib(row["total"]),
        "heap_mib": mib(row["heap"]),
        "indexes_mib": mib(row["indexes"]),
        "bytes_per_row": round(row["total"] / rows) if rows else None,
    }


async def explain_due(
    conn: asyncpg.Connection[Any], marks: Mapping[int, datetime], grace_ms: int, limit: int
) -> list[str]:
    """The overdue query's plan with timings (in a transaction that is rolled back)."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("SET LOCAL jit = off")
        thresholds = await load_thresholds(conn)
        rows = await conn.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS) {_DUE}",
            *due_query_args(marks, thresholds, grace_ms, limit),
        )
    finally:
        await tx.rollback()
    return [r[0] for r in rows]


async def timed_checks(
    sink: SlaMonitor,
    nothing_due: Mapping[int, datetime],
    all_due: Mapping[int, datetime],
    open_rows: int,
    label: str,
) -> dict[str, Any]:
    """``report_overdue`` as the timer calls it: nothing due, then claiming 5,000 due."""
    nothing_s: list[float] = []
    claim_s: list[float] = []
    claimed: list[int] = []
    for attempt in range(CHECK_REPEATS):
        began = time.perf_counter()
        found = await sink.report_overdue(nothing_due, grace_ms=0)
        nothing_s.append(time.perf_counter() - began)
        if found:
            raise RuntimeError(f"{len(found)} phases due with watermarks of now")
        log.info(
            "overdue check (%s) %d, nothing due, %d open phases: %.0f ms",
            label,
            attempt + 1,
            open_rows,
            1000 * nothing_s[-1],
        )
    for attempt in range(CHECK_REPEATS):
        began = time.perf_counter()
        found = await sink.report_overdue(all_due, grace_ms=0, limit=CLAIM_LIMIT)
        claim_s.append(time.perf_counter() - began)
        claimed.append(len(found))
        log.info(
            "overdue check (%s) %d, all due, claim up to %d: %d claimed in %.0f ms",
            label,
            attempt + 1,
            CLAIM_LIMIT,
            len(found),
            1000 * claim_s[-1],
        )
    wanted = [min(CLAIM_LIMIT, max(0, open_rows - CLAIM_LIMIT * i)) for i in range(CHECK_REPEATS)]
    if claimed != wanted:
        raise RuntimeError(f"expected {wanted} claimed, got {claimed}")
    return {
        "nothing_due_ms": [round(1000 * s, 1) for s in nothing_s],
        "nothing_due_median_ms": round(1000 * statistics.median(nothing_s), 1),
        "claim_5000_ms": [round(1000 * s, 1) for s in claim_s],
        "claim_5000_median_ms": round(1000 * statistics.median(claim_s), 1),
        "claimed": claimed,
    }


async def overdue_checks(db_url: str, partitions: int, open_rows: int) -> dict[str, Any]:
    """Timed right after the load (statistics as autovacuum left them), then after
    VACUUM ANALYZE with the claimed phases unclaimed again."""
    now = datetime.now(UTC)
    nothing_due = dict.fromkeys(range(partitions), now)
    all_due = dict.fromkeys(range(partitions), now + timedelta(days=365))
    result: dict[str, Any] = {"open_phases": open_rows}
    conn = await asyncpg.connect(db_url)
    try:
        async with await SlaMonitor.connect(db_url) as sink:
            for label in ("fresh", "after_vacuum_analyze"):
                if label == "after_vacuum_analyze":
                    # The same starting state as the first set, as autovacuum would leave it.
                    await conn.execute(
                        "UPDATE sla_open_phases SET overdue_reported = FALSE WHERE overdue_reported"
                    )
                    await conn.execute("VACUUM ANALYZE sla_open_phases")
                result[label] = await timed_checks(sink, nothing_due, all_due, open_rows, label)
                result[label]["plan_nothing_due"] = await explain_due(
                    conn, nothing_due, 0, CLAIM_LIMIT
                )
                result[label]["plan_claim_5000"] = await explain_due(conn, all_due, 0, CLAIM_LIMIT)
        result["violations_put_in_outbox"] = int(
            await conn.fetchval("SELECT count(*) FROM sla_violation_outbox")
        )
        # The claimed phases' violations are not part of the next measurement.
        await conn.execute("DELETE FROM sla_violation_outbox")
    finally:
        await conn.close()
    return result


# --------------------------------------------------------------------------------------
# The run


async def set_thresholds(conn: asyncpg.Connection[Any], threshold_ms: int) -> None:
    await conn.execute(
        "UPDATE workflow_phase_sla_thresholds SET threshold_ms = $1, updated_at = now()",
        threshold_ms,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="phasestream-bench-sla-"))
    tag = uuid.uuid4().hex[:8]
    async with scratch.scratch_database(args.database_url, prefix="phasestream_bench_sla") as (
        db_name,
        db_url,
    ):
        with embedded_broker(scratch.HOST, scratch.free_port(), workdir / "tansu.log") as bootstrap:
            settings = bench_settings(bootstrap, db_url, f"{tag}-open")
            await run_migrations(settings)
            await create_topics(settings)
            conn = await asyncpg.connect(db_url)
            try:
                return await _measure(args, settings, conn, db_name=db_name, db_url=db_url, tag=tag)
            finally:
                await conn.close()


async def _measure(
    args: argparse.Namespace,
    settings: Settings,
    conn: asyncpg.Connection[Any],
    *,
    db_name: str,
    db_url: str,
    tag: str,
) -> dict[str, Any]:
    facts = await measure.machine_and_postgres_facts(conn)
    busy_before = round(await asyncio.to_thread(measure.machine_busy_pct))
    log.info(
        "machine busy before the run: %.0f%% of one core (of %d%%)",
        busy_before,
        100 * (os.cpu_count() or 1),
    )
    await set_thresholds(conn, THRESHOLD_MS)
    brokers = scratch.broker_pids()
    meter = measure.CpuMeter(conn, db_name, brokers, own="monitor_process")

    log.info(
        "publishing %d started events (child process, %d per publish_many)",
        args.open,
        PUBLISH_CHUNK,
    )
    published = await publish_in_child(
        PublishJob(
            settings.bootstrap_servers,
            settings.phase_events_topic,
            settings.producer_linger_ms,
            "started",
            args.open,
            tag,
        )
    )
    log.info("the sla monitor drains %d started events", args.open)
    monitor = await run_monitor(settings, conn, meter, args.open, "open phases")
    rows = await open_phases(conn)
    if rows != args.open:
        raise RuntimeError(f"sla_open_phases holds {rows} rows, expected {args.open}")
    sizes = await table_sizes(conn)
    broker_rss = sum(rss_bytes(p) for p in brokers)
    log.info(
        "sla_open_phases: %d rows, %.1f MiB in Postgres (heap %.1f, indexes %.1f)",
        sizes["rows"],
        sizes["total_mib"],
        sizes["heap_mib"],
        sizes["indexes_mib"],
    )

    log.info("overdue checks over %d open phases", rows)
    overdue = await overdue_checks(db_url, settings.topic_partitions, rows)

    mixed: dict[str, Any] | None = None
    if args.mixed:
        mixed_settings = bench_settings(settings.bootstrap_servers, db_url, f"{tag}-mixed")
        await create_topics(mixed_settings)
        log.info("publishing a mixed stream of %d events (started+completed pairs)", args.mixed)
        mixed_published = await publish_in_child(
            PublishJob(
                mixed_settings.bootstrap_servers,
                mixed_settings.phase_events_topic,
                mixed_settings.producer_linger_ms,
                "mixed",
                args.mixed,
                tag,
            )
        )
        log.info("the sla monitor drains the mixed stream, %d open phases in the table", rows)
        mixed = await run_monitor(mixed_settings, conn, meter, mixed_published["events"], "mixed")
        mixed["publish"] = mixed_published
        mixed["open_phases_in_table_during"] = rows
        mixed["open_phases_after"] = await open_phases(conn)
        mixed["violations_decided"] = int(
            await conn.fetchval("SELECT count(*) FROM sla_violation_outbox")
        ) + int(await conn.fetchval("SELECT count(*) FROM workflow_phase_sla_violation_events"))

    peak = peak_rss_bytes()
    peak_at_1m = monitor["peak_rss_mib"]["after"] * MIB
    return {
        "open_phases": args.open,
        "machine": facts,
        "machine_busy_before_pct": busy_before,
        "settings": {
            "batch_max_records": settings.batch_max_records,
            "batch_max_wait_ms": settings.batch_max_wait_ms,
            "producer_linger_ms": settings.producer_linger_ms,
            "topic_partitions": settings.topic_partitions,
            "consumer_session_timeout_ms": settings.consumer_session_timeout_ms,
            "sla_check_interval_ms": settings.sla_check_interval_ms,
            "thresholds_ms_during_run": THRESHOLD_MS,
        },
        "publish": published,
        "monitor": monitor,
        "sla_open_phases": sizes,
        "broker_rss_mib": mib(broker_rss),
        "overdue_check": overdue,
        "mixed": mixed,
        "peak_rss_mib_end_of_run": mib(peak),
        "requirement": {
            "text": "holds 1M open phases in under 1 GiB of memory",
            "limit_mib": GIB // MIB,
            "monitor_peak_rss_mib": mib(peak_at_1m),
            "open_phases": args.open,
            "pass": peak_at_1m < GIB and args.open >= 1_000_000,
            "memory_pass": peak_at_1m < GIB,
        },
    }


# --------------------------------------------------------------------------------------
# Report


def _rate(part: Mapping[str, Any]) -> str:
    if part["events_per_s"] is None:
        return f"n/a (one batch; {part['events_per_s_including_group_join']:,} with the group join)"
    return f"{part['events_per_s']:,}"


def report(f: Mapping[str, Any]) -> str:
    m, s, o, req = f["monitor"], f["sla_open_phases"], f["overdue_check"], f["requirement"]
    cpu = m["cpu"]
    verdict = "PASS" if req["pass"] else "FAIL"
    if req["memory_pass"] and not req["pass"]:
        verdict = f"FAIL (memory under 1 GiB, but only {req['open_phases']} phases held)"
    lines = [
        "",
        f"SLA monitor with {f['open_phases']:,} open phases "
        f"({f['machine']['nproc']} cores, {f['machine']['cpu_model']}; "
        f"machine busy before: {f['machine_busy_before_pct']:.0f}% of a core)",
        f"  publish (child process, publish_many x {PUBLISH_CHUNK}): "
        f"{f['publish']['events_per_s']:,} events/s",
        f"  monitor: {m['events']:,} started events applied in "
        f"{m['seconds_first_to_last_batch']} s = {_rate(m)} events/s "
        f"(first to last committed batch; group join {m['seconds_to_first_batch']} s before)",
        f"    CPU, % of one core: monitor process {cpu['monitor_process_pct']}, Postgres "
        f"{cpu['postgres_backends_pct']}, broker {cpu['broker_pct']}, machine "
        f"{cpu['machine_busy_pct']}",
        f"  monitor process RSS: before {m['rss_mib']['before']} MiB, after "
        f"{m['rss_mib']['after']} MiB, sampled max {m['rss_mib']['sampled_max']} MiB; "
        f"peak (ru_maxrss) before {m['peak_rss_mib']['before']} MiB, after "
        f"{m['peak_rss_mib']['after']} MiB",
        f"  state in Postgres: sla_open_phases {s['rows']:,} rows, {s['total_mib']} MiB "
        f"(heap {s['heap_mib']}, indexes {s['indexes_mib']}; {s['bytes_per_row']} B/row)",
        f"  (the broker, a separate process, holds the log in memory: {f['broker_rss_mib']} "
        "MiB RSS)",
    ]
    for label in ("fresh", "after_vacuum_analyze"):
        c = o[label]
        lines += [
            f"  overdue check ({label}) over {o['open_phases']:,} open phases, nothing due: "
            f"{c['nothing_due_median_ms']} ms median (runs {c['nothing_due_ms']})",
            f"  overdue check ({label}) claiming {CLAIM_LIMIT:,} due phases: "
            f"{c['claim_5000_median_ms']} ms median (runs {c['claim_5000_ms']})",
        ]
    if f["mixed"]:
        x = f["mixed"]
        lines += [
            f"  mixed stream ({x['events']:,} events, started+completed pairs, "
            f"{x['open_phases_in_table_during']:,} open phases in the table): "
            f"{_rate(x)} events/s; RSS after {x['rss_mib']['after']} MiB; "
            f"open phases after {x['open_phases_after']:,}; violations "
            f"{x['violations_decided']}",
        ]
    lines += [
        f'  requirement "{req["text"]}": monitor peak RSS {req["monitor_peak_rss_mib"]} MiB '
        f"vs {req['limit_mib']} MiB: {verdict}",
    ]
    return "\n".join(lines)


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--open", type=int, default=1_000_000, help="open phases to hold (started events published)"
    )
    parser.add_argument(
        "--mixed",
        type=int,
        default=200_000,
        help="events of the mixed started+completed stream (0 skips it)",
    )
    parser.add_argument(
        "--database-url", default=scratch.default_database_url(), help=scratch.DATABASE_URL_HELP
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    scratch.setup_logging(LOG_FORMAT)
    figures = scratch.run_timed(run(args))
    print(report(figures))
    print(f"total run: {figures['total_run_seconds']} s")
    scratch.write_figures(args.json, figures, logger=log)
    return 0 if figures["requirement"]["memory_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
