"""Benchmark: phasestream's audit projector against a peer, Quix Streams with its PostgreSQL
sink, on the same published events, in one run.

Run: ``.venv/bin/python -m bench.quix_peer [--events N] [--order ps,quix,...] [--json F]``
(needs the ``bench`` extra, which ``make bench`` installs).

Everything is scratch: a Tansu broker on a free port, a ``phasestream_bench_<random>``
database (dropped at the end), migrations applied into it. N realistic events are published
ONCE to one topic (through the SDK, keyed by workflow id, 6 partitions); then each part in
``--order`` drains all N of them with a fresh consumer group into its emptied table:

- ``ps``: one ``python -m phasestream run audit`` process into ``workflow_phase_logs``:
  full validation of the contract (``models.event_codec.decode_record``: schema rules, calendar
  dates, NUL characters, key = workflow id, ...), rows COPYed to a temp table and INSERT
  ... ON CONFLICT DO NOTHING, the partition positions moved compare-and-set in the same
  transaction (exactly-once effect), decoding of the next batch pipelined with the write
  of the previous one;
- ``quix*``: one process running a Quix Streams ``Application`` (``bench/quix_worker.py``)
  at least once, no changelog topics, producer idempotence off (the local broker has
  no idempotent producer and no transactions), with ``PostgreSQLSink`` (``execute_values``,
  ``ON CONFLICT DO NOTHING``, one transaction per partition batch at each checkpoint,
  Kafka offsets committed after the sink's flush) into ``bench.quix_phase_logs``, a copy of
  ``workflow_phase_logs`` (LIKE ... INCLUDING ALL, partitioned by month alike, the events'
  months created beforehand). They differ in what they check:

  - ``quix``: orjson decode with a JSON Schema check against phasestream's own contract
    (``models/schemas/phase-event.schema.json``, jsonschema Draft 2020-12), the way Quix
    Streams' ``JSONDeserializer`` offers, then a field mapping to the audit columns;
  - ``quix-psdecoder``: phasestream's own decoder and row builder (``decode_record``,
    ``audit_row``) in a Quix ``apply``: the same validation as ``ps``;
  - ``quix-novalidate``: orjson decode and the field mapping only (an upper bound);
- ``ps-base``: ``ps`` run from another checkout (``--baseline DIR``, for example a git
  worktree of an earlier commit), to measure a change side by side in one run.

Before the first part and after the last, the raw COPY + event-id claim of
bench/audit_projection.py, (b2), writes the same rows on one connection without Kafka: the
most one writer with the sink's guarantee can reach, printed as a ratio to each peer.

Each part is timed the same way: from the first committed row to N rows, polling
``SELECT count(*)`` every 50 ms (and from spawning the process, "incl. start"). Before each
part the load guard waits (at most ``--quiet-timeout`` s) for the machine to be quiet; the
load is recorded with each figure. At the end, the two tables must hold the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg

from bench import measure, scratch
from bench.audit_projection import TableShape, audit_table_shape, create_copies, raw_copy
from phasestream.settings import Settings
from projections.audit_sink import audit_row

log = logging.getLogger("bench.quix_peer")

PEER_TABLE: Final = "bench.quix_phase_logs"
# part -> the peer's decoder (None: phasestream itself)
PEER_PARTS: Final = {
    "quix": "schema",
    "quix-psdecoder": "phasestream",
    "quix-novalidate": "none",
}
#: phasestream's parts: this checkout, and the one ``--baseline`` names.
PS_PARTS: Final = ("ps", "ps-base")
PARTS: Final = {**dict.fromkeys(PS_PARTS), **PEER_PARTS}
PEERS: Final = tuple(p for p in PARTS if p != "ps")
# Each part twice, the second time in reverse order (ABCD DCBA): drift cancels out.
DEFAULT_ORDER: Final = ["ps", *PEER_PARTS, *reversed(PEER_PARTS), "ps"]
SCHEMA_PATH: Final = scratch.REPO / "models/schemas/phase-event.schema.json"
# The audit columns that the peer compares with phasestream's rows (not projected_at).
COMPARED: Final = (
    'id, workflow_id, user_id, phase_number, status, "timestamp", duration_ms, '
    "previous_phase, error_message, error_stack, metadata, rollback_triggered, "
    "rollback_to_phase"
)


# --------------------------------------------------------------------------------------
# The coordinator


async def create_peer_table(conn: asyncpg.Connection[Any], months: Sequence[datetime]) -> None:
    """bench.quix_phase_logs: workflow_phase_logs' columns, constraints, indexes and
    monthly partitioning, with the events' months created up front."""
    partition_by = await conn.fetchval(
        "SELECT pg_get_partkeydef('public.workflow_phase_logs'::regclass)"
    )
    await conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
    await conn.execute(
        f"CREATE TABLE {PEER_TABLE} (LIKE public.workflow_phase_logs INCLUDING ALL)"
        + (f" PARTITION BY {partition_by}" if partition_by else "")
    )
    for first in months if partition_by else ():
        after = (
            first.replace(year=first.year + 1, month=1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        )
        await conn.execute(
            f"CREATE TABLE {PEER_TABLE}_p{first:%Y%m} PARTITION OF {PEER_TABLE} "
            f"FOR VALUES FROM ('{first.isoformat()}') TO ('{after.isoformat()}')"
        )


def part_command(
    part: str, settings: Settings, group: str, args: argparse.Namespace
) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, table) of one part's writer process."""
    env = scratch.phasestream_environment(
        settings.model_copy(update={"audit_consumer_group": group})
    )
    if part in PS_PARTS:
        if part == "ps-base":  # its packages before this checkout's (an editable install)
            env["PYTHONPATH"] = str(args.baseline)
        return scratch.phasestream_audit_argv(), env, "workflow_phase_logs"
    env["PYTHONPATH"] = str(scratch.REPO)  # the worker runs in workdir: find bench.*
    argv = [
        sys.executable,
        "-m",
        "bench.quix_worker",
        "--bootstrap",
        settings.bootstrap_servers,
        "--topic",
        settings.phase_events_topic,
        "--group",
        group,
        "--database-url",
        settings.database_url or "",
        "--commit-interval",
        str(args.commit_interval),
        "--decoder",
        str(PARTS[part]),
    ]
    return argv, env, PEER_TABLE


async def run_part(
    part: str,
    index: int,
    settings: Settings,
    *,
    db_name: str,
    monitor: asyncpg.Connection[Any],
    workdir: Path,
    args: argparse.Namespace,
    broker: Sequence[int],
) -> dict[str, Any]:
    argv, env, table = part_command(part, settings, f"bench-{part}-{index}", args)
    load = await asyncio.to_thread(
        measure.wait_until_quiet, args.quiet_pct, window_s=5, timeout_s=args.quiet_timeout
    )
    if part in PS_PARTS:
        await scratch.empty_audit_log(monitor)
    else:
        await monitor.execute(f"TRUNCATE {table}")
    await scratch.checkpoint(monitor)
    drain = await measure.timed_drain(
        f"{index}-{part}",
        argv,
        env,
        workdir=workdir,
        monitor=monitor,
        database=db_name,
        database_url=settings.database_url or "",
        table=table,
        target=args.events,
        broker=broker,
        timeout_s=args.timeout,
    )
    timing, cpu = drain.timing, drain.cpu
    consumer_pct = cpu["groups_pct"]["consumer"]
    result = {
        "part": part,
        "round": index,
        "table": table,
        "events": args.events,
        "stored": drain.stored,
        "exit_code": drain.exit_code,
        "events_per_s": timing.events_per_s,
        "events_per_s_incl_start": timing.events_per_s_incl_start,
        "first_commit_after_s": round(timing.first_at - timing.started_at, 2),
        "rows_at_first_commit": timing.first_rows,
        "seconds": round(timing.done_at - timing.first_at, 2),
        "cpu": cpu,
        "consumer_cpu_us_per_event": round(
            consumer_pct / 100 * 1e6 / max(1, timing.events_per_s), 1
        ),
        "backends": drain.postgres_backends,
        "load_before": load,
        "load_after": measure.load_snapshot(),
        "log": str(drain.log_path),
    }
    log.info(
        "%s (round %d): %d events/s (incl. start %d/s); consumer %.0f%%, postgres "
        "%.0f%%, machine %.0f%%, other %.0f%%; exit %s",
        part,
        index,
        result["events_per_s"],
        result["events_per_s_incl_start"],
        consumer_pct,
        cpu["groups_pct"]["postgres"],
        cpu["machine_pct"],
        cpu["other_pct"],
        drain.exit_code,
    )
    if drain.stored != args.events:
        raise RuntimeError(f"{part}: {drain.stored} rows stored of {args.events}")
    return result


async def same_rows(conn: asyncpg.Connection[Any]) -> dict[str, int]:
    """Rows of each table that the other lacks (compared on every audit column)."""
    only_ps = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT {COMPARED} FROM workflow_phase_logs EXCEPT "
        f"SELECT {COMPARED} FROM {PEER_TABLE}) AS d"
    )
    only_peer = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT {COMPARED} FROM {PEER_TABLE} EXCEPT "
        f"SELECT {COMPARED} FROM workflow_phase_logs) AS d"
    )
    return {"only_in_phasestream": int(only_ps), "only_in_peer": int(only_peer)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch.bench_stack(
        args.database_url,
        prefix="phasestream-bench-peer-",
        keep=args.keep,
        phase_events_topic="bench.peer-events",
        dlq_topic="bench.peer-events.dlq",
    ) as stack:
        return await _measure(args, stack.settings, stack.monitor, stack.db_name, stack.workdir)


async def _measure(
    args: argparse.Namespace,
    settings: Settings,
    monitor: asyncpg.Connection[Any],
    db_name: str,
    workdir: Path,
) -> dict[str, Any]:
    facts = {
        **measure.machine_facts(
            ("quixstreams", "confluent-kafka", "psycopg2-binary", "jsonschema", "psutil")
        ),
        "postgres": await measure.postgres_facts(monitor),
    }
    events = scratch.make_events(args.events, args.seed)
    shape = await audit_table_shape(monitor)
    await create_copies(monitor, shape, scratch.months_of(events))  # creates schema bench
    await create_peer_table(monitor, scratch.months_of(events))
    publish_rate = await scratch.publish(settings, events)
    rows = [audit_row(e) for e in events]
    del events
    broker = scratch.broker_pids()
    meter = measure.CpuMeter(monitor, db_name, broker)
    ceiling = [await _raw_claim(settings, rows, meter, monitor, shape)]
    parts = []
    for index, part in enumerate(args.order, 1):
        log.info("part %d of %d: %s drains %d events", index, len(args.order), part, args.events)
        parts.append(
            await run_part(
                part,
                index,
                settings,
                db_name=db_name,
                monitor=monitor,
                workdir=workdir,
                args=args,
                broker=broker,
            )
        )
    ceiling.append(await _raw_claim(settings, rows, meter, monitor, shape))
    # Each table holds its last part's rows: phasestream's and the last peer's.
    peer_ran = any(p in PEER_PARTS for p in args.order)
    compared = await same_rows(monitor) if "ps" in args.order and peer_ran else None
    if compared and any(compared.values()):
        raise RuntimeError(f"the two tables differ: {compared}")
    return {
        "events": args.events,
        "machine": facts,
        "order": args.order,
        "commit_interval_s": args.commit_interval,
        "publish_events_per_s": round(publish_rate),
        "parts": parts,
        "raw_claim_events_per_s": ceiling,
        "tables_compared": compared,
        "workdir": str(workdir),
    }


async def _raw_claim(
    settings: Settings,
    rows: Sequence[tuple[Any, ...]],
    meter: measure.CpuMeter,
    monitor: asyncpg.Connection[Any],
    shape: TableShape,
) -> int:
    """(b2) of bench/audit_projection.py: COPY + the event-id claim on one connection, no
    Kafka, the same rows; what one writer with the sink's guarantee can reach at most."""
    await monitor.execute("TRUNCATE bench.raw_claim_logs, bench.raw_claim_ids")
    found = await raw_copy(settings.database_url or "", rows, meter, monitor, shape, claim=True)
    log.info("raw COPY + id claim, one connection: %d events/s", found["events_per_s"])
    return int(found["events_per_s"])


# --------------------------------------------------------------------------------------
# Report


def cpu_us_per_event(part: Mapping[str, Any]) -> tuple[float, float]:
    """(writer process, its Postgres backends) CPU microseconds per event while timed."""
    groups, rate = part["cpu"]["groups_pct"], max(1, part["events_per_s"])
    return (groups["consumer"] / 100 * 1e6 / rate, groups["postgres"] / 100 * 1e6 / rate)


def summary(figures: Mapping[str, Any]) -> dict[str, Any]:
    by_part: dict[str, list[int]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    for p in figures["parts"]:
        by_part.setdefault(p["part"], []).append(p["events_per_s"])
        cpu.setdefault(p["part"], []).append(cpu_us_per_event(p))
    out: dict[str, Any] = {
        part: {
            "runs": rates,
            "min": min(rates),
            "max": max(rates),
            "process_us_per_event": [round(c[0], 1) for c in cpu[part]],
            "postgres_us_per_event": [round(c[1], 1) for c in cpu[part]],
            "cpu_us_per_event_median": round(statistics.median(sum(c) for c in cpu[part]), 1),
        }
        for part, rates in by_part.items()
    }
    ps = by_part.get("ps")
    ceiling = figures.get("raw_claim_events_per_s") or []
    for peer in PEERS:
        if ceiling and peer in by_part:
            out[f"raw_claim_vs_{peer}"] = round(
                statistics.median(ceiling) / statistics.median(by_part[peer]), 2
            )
        if ps and peer in by_part:
            out[f"ps_vs_{peer}"] = {
                "min": round(min(ps) / max(by_part[peer]), 2),
                "max": round(max(ps) / min(by_part[peer]), 2),
                "median_ratio": round(statistics.median(ps) / statistics.median(by_part[peer]), 2),
            }
    return out


def report(figures: Mapping[str, Any]) -> str:
    m = figures["machine"]
    lines = [
        "",
        "== phasestream audit projector vs Quix Streams + PostgreSQLSink ==",
        f"machine: {m['nproc']} cpus ({m['cpu_model']}), {m['memory_gb']} GB, Linux "
        f"{m['kernel']}; python {m['python']}; {m['postgres']['version']}",
        f"packages: {', '.join(f'{k} {v}' for k, v in m['packages'].items())}",
        f"events: {figures['events']:,} published once ({figures['publish_events_per_s']:,}/s),"
        f" drained by each part with a fresh consumer group; quix commit interval "
        f"{figures['commit_interval_s']} s",
        "",
        f"{'#':<3}{'part':<17}{'events/s':>9}{'incl.start':>11}{'1st commit':>11}"
        f"{'consumer':>9}{'us/ev':>7}{'pg':>6}{'poll':>6}{'pg bg':>6}{'broker':>7}"
        f"{'machine':>8}{'other':>6}  load before (1/5/15 min, busy%)",
    ]
    for p in figures["parts"]:
        c = p["cpu"]
        g = c["groups_pct"]
        lb = p["load_before"]
        lines.append(
            f"{p['round']:<3}{p['part']:<17}{p['events_per_s']:>9,}"
            f"{p['events_per_s_incl_start']:>11,}{p['first_commit_after_s']:>10.1f}s"
            f"{g['consumer']:>8.0f}%{p['consumer_cpu_us_per_event']:>7.1f}"
            f"{g['postgres']:>5.0f}%{g['count_poll']:>5.0f}%{g['pg_background']:>5.0f}%"
            f"{g['broker']:>6.0f}%{c['machine_pct']:>7.0f}%"
            f"{c['other_pct']:>5.0f}%  {'/'.join(str(v) for v in lb['loadavg'])}, "
            f"{lb['busy_pct']:.0f}%{'' if lb['quiet'] else ' (NOT quiet)'}"
        )
    s = summary(figures)
    lines += ["", "events/s (first commit to N rows), range over the runs:"]
    lines += [
        f"  {part:<17}{v['min']:>9,} - {v['max']:,}" for part, v in s.items() if part in PARTS
    ]
    if ceiling := figures.get("raw_claim_events_per_s"):
        lines.append(
            f"  {'raw COPY + claim':<17}{min(ceiling):>9,} - {max(ceiling):,}"
            "  (one connection, no Kafka: before the first part and after the last)"
        )
    for peer in PEERS:
        if (r := s.get(f"ps_vs_{peer}")) is not None:
            lines.append(
                f"  phasestream / {peer}: {r['min']:.2f}x - {r['max']:.2f}x "
                f"(ratio of the medians {r['median_ratio']:.2f}x)"
            )
        if (c := s.get(f"raw_claim_vs_{peer}")) is not None:
            lines.append(
                f"  raw COPY + claim / {peer}: {c:.2f}x (the most one writer with the "
                "sink's guarantee could reach)"
            )
    lines += [
        "CPU per event while timed (us; writer process + its Postgres backends, per run; "
        "less sensitive to other load than events/s):"
    ]
    lines += [
        f"  {part:<17}"
        + ", ".join(
            f"{c:.0f} + {b:.0f}"
            for c, b in zip(v["process_us_per_event"], v["postgres_us_per_event"], strict=True)
        )
        + f"  (median total {v['cpu_us_per_event_median']:.0f})"
        for part, v in s.items()
        if part in PARTS
    ]
    if figures["tables_compared"] is not None:
        lines.append(f"rows compared on every audit column: {figures['tables_compared']}")
    lines.append(
        "CPU columns: % of one core while timed (the machine has "
        f"{100 * m['nproc']}%); 'pg' = the writer's Postgres backends, 'poll' = the "
        "count(*) poll's backend, 'pg bg' = Postgres background processes (WAL writer,"
        " checkpointer, autovacuum); 'other' = anything else on the machine."
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Main


def _order(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}; got {text!r}")
    return parts


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="events N")
    parser.add_argument(
        "--order",
        type=_order,
        default=DEFAULT_ORDER,
        help=f"parts in order, comma-separated, of {', '.join(PARTS)} "
        f"(default {','.join(DEFAULT_ORDER)})",
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=1.0,
        help="the peer's checkpoint interval, seconds (its batch)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of phasestream (e.g. a git worktree of an earlier commit) "
        "that part ps-base runs, to measure a change side by side",
    )
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--timeout", type=float, default=600, help="per part, seconds")
    scratch.add_common_arguments(parser)
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    if "ps-base" in args.order and not (args.baseline and (args.baseline / "phasestream").is_dir()):
        print("part ps-base needs --baseline DIR, a checkout of phasestream", file=sys.stderr)
        return 2
    scratch.setup_logging()
    figures = scratch.run_timed(run(args))
    figures["finished_at"] = datetime.now(UTC).isoformat()
    figures["summary"] = summary(figures)
    print(report(figures))
    print(f"total run: {figures['total_run_seconds']} s")
    scratch.write_figures(args.json, figures, logger=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
