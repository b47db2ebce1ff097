"""Benchmark: the whole pipeline at steady rates, `phasestream run all` against one process
per consumer.

Run: ``.venv/bin/python -m bench.pipeline [--broker tansu|kafka] [--rates 1000,2000,4000,8000]
[--seconds 60] [--batch-min-bytes N] [--json PATH]``; ``--quick``: rates 200,400 for 5 s each,
to check it runs.

Everything is scratch: the embedded Postgres in a scratch directory (or a server given by
``--database-url`` / ``PHASESTREAM_TEST_DATABASE_URL``) with a ``phasestream_bench_<random>``
database migrated into it, the broker on free ports. Two modes, one after the other, each on
its own topics and consumer groups:

- ``all``: one ``python -m phasestream run all`` process (audit, sla, metrics, rollback,
  notify);
- ``separate``: one ``python -m phasestream run <consumer>`` process per consumer.

The processes get their settings from ``PHASESTREAM_*`` variables, each its HTTP server on a
free port. Once every consumer reports its lag on ``/metrics``, a load generator (its own
process) publishes realistic workflows (``demo.workflow_events``, as bench/audit_projection.py
does) at a steady rate R for S seconds, for each R in turn. A step *held* when every
consumer's lag (``phasestream_consumer_lag_records`` summed over partitions) at the end of
the window is at most its lag after the first 10 s (or half the window, if shorter) plus
one second's worth of events (R). CPU (psutil user + sys) is taken over the window for each
consumer process, the load generator, the broker and the database's Postgres backends.
Between steps the lag drains; the stepping stops at the first rate that did not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import random
import re
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import measure, scratch
from phasestream.consumers import ALL
from phasestream.demo import workflow_events
from phasestream.settings import Settings
from phasestream.wiring import create_topics, run_migrations
from streams.publisher import PhaseEventPublisher

log = logging.getLogger("bench.pipeline")

MODES: Final = ("all", "separate")
LAG_LINE: Final = re.compile(
    r'^phasestream_consumer_lag_records\{[^}]*consumer="([^"]+)"[^}]*\} ([0-9.e+]+)$',
    re.MULTILINE,
)
SETTLE_S: Final = 10.0
READY_TIMEOUT_S: Final = 90.0
DRAIN_TIMEOUT_S: Final = 60.0
TICK_S: Final = 0.01
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


# --------------------------------------------------------------------------------------
# Settings and the consumer processes


def mode_settings(base: Settings, mode: str) -> Settings:
    """Topics and consumer groups of this mode's own (fresh positions, empty topics)."""
    tag = f"bench-pipeline-{mode}"
    return replace_settings(
        base,
        phase_events_topic=f"{tag}.phase-events",
        dlq_topic=f"{tag}.phase-events.dlq",
        sla_violations_topic=f"{tag}.sla-violations",
        rollback_commands_topic=f"{tag}.rollback-commands",
        audit_consumer_group=f"{tag}-audit",
        sla_consumer_group=f"{tag}-sla",
        sla_violations_consumer_group=f"{tag}-sla-violations",
        metrics_consumer_group=f"{tag}-metrics",
        rollback_consumer_group=f"{tag}-rollback",
        notify_consumer_group=f"{tag}-notify",
    )


def replace_settings(base: Settings, **changes: Any) -> Settings:
    return Settings(_env_file=None, **{**base.model_dump(), **changes})


def consumer_environment(settings: Settings, http_port: int) -> dict[str, str]:
    """scratch.phasestream_environment, with the other topics and groups and a port."""
    env = scratch.phasestream_environment(settings)
    for name in (
        "sla_violations_topic",
        "rollback_commands_topic",
        "sla_consumer_group",
        "sla_violations_consumer_group",
        "metrics_consumer_group",
        "rollback_consumer_group",
        "notify_consumer_group",
    ):
        env[f"PHASESTREAM_{name.upper()}"] = str(getattr(settings, name))
    env["PHASESTREAM_HTTP_HOST"] = scratch.HOST
    env["PHASESTREAM_HTTP_PORT"] = str(http_port)
    return env


def lag_groups(settings: Settings) -> set[str]:
    """The consumer labels the lag gauge must show (the SLA monitor runs two consumers)."""
    return {
        settings.audit_consumer_group,
        settings.sla_consumer_group,
        settings.sla_violations_consumer_group,
        settings.metrics_consumer_group,
        settings.rollback_consumer_group,
        settings.notify_consumer_group,
    }


@dataclass
class Consumer:
    """One consumer process of a mode and where its /metrics is."""

    name: str  # "all" or the consumer's name
    child: scratch.Child
    metrics_url: str


async def start_consumers(settings: Settings, mode: str, workdir: Path) -> list[Consumer]:
    names = [("all", "all")] if mode == "all" else [(n, n) for n in ALL]
    started = []
    for name, command in names:
        port = scratch.free_port()
        argv = [sys.executable, "-m", "phasestream", "run", command]
        env = consumer_environment(settings, port)
        child = await scratch.spawn(f"{mode}-{name}", argv, env=env, workdir=workdir)
        started.append(Consumer(name, child, f"http://{scratch.HOST}:{port}/metrics"))
    return started


# --------------------------------------------------------------------------------------
# Lag, from each process's /metrics


def _scrape_lag(url: str) -> dict[str, float] | None:
    """The lag gauge summed over partitions, per consumer label (None: not serving yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # our own child process
            text = response.read().decode()
    except OSError:
        return None
    lag: dict[str, float] = {}
    for match in LAG_LINE.finditer(text):
        lag[match.group(1)] = lag.get(match.group(1), 0.0) + float(match.group(2))
    return lag


async def read_lag(consumers: Sequence[Consumer]) -> dict[str, float]:
    """Every consumer's lag; a process that has died fails the run with its log's tail."""
    lag: dict[str, float] = {}
    for consumer in consumers:
        if (code := consumer.child.exited()) is not None:
            raise RuntimeError(
                f"{consumer.child.name} exited with {code}:\n{consumer.child.log_tail()}"
            )
        scraped = await asyncio.to_thread(_scrape_lag, consumer.metrics_url)
        lag.update(scraped or {})
    return lag


async def wait_until(
    consumers: Sequence[Consumer], done: Any, what: str, timeout_s: float
) -> dict[str, float]:
    """Poll the lag until ``done(lag)``; the last lag read (a warning if it timed out)."""
    deadline = time.monotonic() + timeout_s
    while not done(lag := await read_lag(consumers)):
        if time.monotonic() > deadline:
            log.warning("%s: not after %.0f s (lag %s)", what, timeout_s, lag)
            return lag
        await asyncio.sleep(0.5)
    return lag


# --------------------------------------------------------------------------------------
# The load generator, its own process


@dataclass(frozen=True)
class Load:
    bootstrap: str
    topic: str
    linger_ms: int
    rate: float
    seconds: float
    seed: int


def load_process(load: Load, results: multiprocessing.Queue[dict[str, Any]]) -> None:
    scratch.setup_logging(LOG_FORMAT)
    results.put(asyncio.run(_load(load, results)))


async def _load(load: Load, results: multiprocessing.Queue[dict[str, Any]]) -> dict[str, Any]:
    """Publish ``rate`` events/s for ``seconds``: each tick what is due since the start."""
    rng = random.Random(load.seed)
    spare: list[Any] = []
    inflight: set[asyncio.Task[Any]] = set()
    total, sent = int(load.rate * load.seconds), 0
    async with PhaseEventPublisher(
        load.bootstrap, load.topic, linger_ms=load.linger_ms, client_id="bench-pipeline-load"
    ) as publisher:
        results.put({"started": True})
        began = time.monotonic()
        while sent < total:
            due = min(total, int((time.monotonic() - began) * load.rate) + 1)
            batch = []
            for _ in range(sent, due):
                spare = spare or workflow_events(rng, datetime.now(UTC))
                batch.append(spare.pop(0))
            sent = due
            task = asyncio.create_task(publisher.publish_many(batch))  # acks awaited below
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            await asyncio.sleep(TICK_S)
        await asyncio.gather(*inflight)
        elapsed = time.monotonic() - began
    return {"published": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed)}


# --------------------------------------------------------------------------------------
# One step: rate R for S seconds


@dataclass(frozen=True)
class Mode:
    name: str
    settings: Settings
    consumers: Sequence[Consumer]
    db_name: str


def _pids(pids: Sequence[int]) -> measure.PidSource:
    return lambda: pids


def sampler_for(mode: Mode, load_pid: int) -> measure.Sampler:
    groups = {c.name: _pids([c.child.pid]) for c in mode.consumers}
    groups |= {
        "load_generator": _pids([load_pid]),
        "broker": _pids(scratch.broker_pids()),
        "postgres_backends": measure.postgres_backends(mode.db_name),
    }
    return measure.Sampler(groups, memory=False)


async def step(mode: Mode, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    load = Load(
        mode.settings.bootstrap_servers,
        mode.settings.phase_events_topic,
        mode.settings.producer_linger_ms,
        rate,
        seconds,
        seed,
    )
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[dict[str, Any]] = context.Queue()
    process = context.Process(target=load_process, args=(load, results), name="load")
    process.start()
    try:
        await asyncio.to_thread(results.get, True, 120)  # connected: the window starts
        assert process.pid is not None
        sampler = sampler_for(mode, process.pid)
        sampler.start()
        began = time.monotonic()
        await asyncio.sleep(min(SETTLE_S, seconds / 2))
        settled = await read_lag(mode.consumers)
        published = await asyncio.to_thread(results.get, True, seconds + 120)
        ended = await read_lag(mode.consumers)
        await asyncio.to_thread(sampler.sample)
        window = time.monotonic() - began
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
    return step_figures(
        rate,
        published=published,
        settled=settled,
        ended=ended,
        cpu=sampler.totals(),
        window_s=window,
    )


def step_figures(
    rate: float,
    *,
    published: Mapping[str, Any],
    settled: Mapping[str, float],
    ended: Mapping[str, float],
    cpu: Mapping[str, Any],
    window_s: float,
) -> dict[str, Any]:
    grew = {c: ended.get(c, 0) - settled.get(c, 0) for c in ended}
    held = all(ended.get(c, 0) <= settled.get(c, 0) + rate for c in ended)
    events = max(1, int(published["published"]))
    cpu_s = {name: pct / 100 * window_s for name, pct in cpu["groups_pct"].items()}
    return {
        "rate": rate,
        "held": held,
        "published": published,
        "lag_settled": dict(settled),
        "lag_end": dict(ended),
        "lag_growth": grew,
        "cpu_pct": cpu["groups_pct"],
        "machine_pct": cpu["machine_pct"],
        "cpu_us_per_event": {n: round(s * 1e6 / events, 1) for n, s in cpu_s.items()},
        "window_s": round(window_s, 2),
    }


# --------------------------------------------------------------------------------------
# A mode: start its processes, step the rate, stop them


def step_seed(seed: int, mode: str, index: int) -> int:
    """Each step of each mode publishes events of its own: the modes share the database, so
    with one seed the second mode would meet every event id as claimed before (a redelivery
    in every batch, not new events as in production)."""
    return seed + 1_000 * MODES.index(mode) + index


async def run_mode(
    args: argparse.Namespace, base: Settings, name: str, db_name: str, workdir: Path
) -> dict[str, Any]:
    settings = mode_settings(base, name)
    await create_topics(settings)
    consumers = await start_consumers(settings, name, workdir)
    mode = Mode(name, settings, consumers, db_name)
    steps: list[dict[str, Any]] = []
    try:
        expected = lag_groups(settings)
        await wait_until(consumers, lambda lag: expected <= lag.keys(), "ready", READY_TIMEOUT_S)
        for index, rate in enumerate(args.rates):
            log.info("%s: %g events/s for %g s", name, rate, args.seconds)
            steps.append(await step(mode, rate, args.seconds, step_seed(args.seed, name, index)))
            log.info("%s: %g events/s held: %s", name, rate, steps[-1]["held"])
            if not steps[-1]["held"]:
                break
            await wait_until(
                consumers, lambda lag: sum(lag.values()) == 0, "drained", DRAIN_TIMEOUT_S
            )
    finally:
        codes = [await scratch.stop(c.child) for c in consumers]
    return mode_figures(name, steps, codes, consumers)


def mode_figures(
    name: str, steps: list[dict[str, Any]], codes: list[int | None], consumers: Sequence[Consumer]
) -> dict[str, Any]:
    held = [s for s in steps if s["held"]]
    best = held[-1] if held else None
    processes = [c.name for c in consumers]
    return {
        "mode": name,
        "steps": steps,
        "highest_rate_held": best["rate"] if best else None,
        "cpu_us_per_event_at_highest": (
            {p: best["cpu_us_per_event"][p] for p in processes} if best else None
        ),
        "exit_codes": dict(zip(processes, codes, strict=True)),
        "logs": [str(c.child.log_path) for c in consumers],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with scratch.scratch_directory("phasestream-bench-pipeline-", keep=args.keep) as workdir:
        async with (
            scratch.scratch_database(args.database_url) as (db_name, db_url),
        ):
            with scratch.local_broker(workdir, args.broker) as bootstrap:
                base = scratch.bench_settings(
                    bootstrap,
                    db_url,
                    kafka_idempotent_producer=args.broker == "kafka",
                    batch_min_bytes=args.batch_min_bytes,
                )
                await run_migrations(base)
                load = await asyncio.to_thread(
                    measure.wait_until_quiet, args.quiet_pct, timeout_s=args.quiet_timeout
                )
                modes = [await run_mode(args, base, m, db_name, workdir) for m in MODES]
                return {
                    "machine": measure.machine_facts(("psutil",)),
                    "broker": args.broker,
                    "batch_min_bytes": args.batch_min_bytes,
                    "seconds": args.seconds,
                    "rates": args.rates,
                    "load_before": load,
                    "modes": modes,
                }


# --------------------------------------------------------------------------------------
# Report


def _mode_lines(mode: Mapping[str, Any]) -> list[str]:
    lines = [f"-- {mode['mode']} --"]
    for s in mode["steps"]:
        worst = max(s["lag_growth"].items(), key=lambda kv: kv[1], default=("-", 0))
        cpu = "  ".join(f"{n} {pct:g}%" for n, pct in s["cpu_pct"].items())
        lines.append(
            f"{s['rate']:>7g}/s  published {s['published']['rate']:>6}/s  "
            f"{'held' if s['held'] else 'FELL BEHIND'}  (largest lag growth {worst[1]:g}, "
            f"{worst[0]})  machine {s['machine_pct']:g}%"
        )
        lines.append(f"          CPU: {cpu}")
    at = mode["cpu_us_per_event_at_highest"]
    lines.append(
        f"highest rate held: {mode['highest_rate_held'] or 'none'}"
        + (
            "; CPU µs per event there: " + ", ".join(f"{n} {us:g}" for n, us in at.items())
            if at
            else ""
        )
    )
    lines.append(f"exit codes: {mode['exit_codes']}")
    return lines


def report(figures: Mapping[str, Any]) -> str:
    m = figures["machine"]
    lines = [
        "",
        "== the whole pipeline: run all vs one process per consumer ==",
        f"machine: {m['nproc']} cpus ({m['cpu_model']}), python {m['python']}; broker "
        f"{figures['broker']}; {figures['seconds']:g} s per rate; load before "
        f"{figures['load_before']['busy_pct']:g}% busy"
        + ("" if figures["load_before"]["quiet"] else " (NOT quiet)"),
        "(CPU in % of one core over the window; a rate held when no consumer's lag grew "
        "by more than one second of events after the settling time)",
    ]
    for mode in figures["modes"]:
        lines += ["", *_mode_lines(mode)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Main


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of rates: {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates are events/s > 0, e.g. 1000,2000")
    return rates


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--rates", type=_rates, default=[1000, 2000, 4000, 8000], help="events/s, in order"
    )
    parser.add_argument("--seconds", type=float, default=60, help="window per rate")
    parser.add_argument("--seed", type=int, default=20_261_202)
    parser.add_argument("--broker", choices=scratch.BROKERS, default="tansu")
    parser.add_argument(
        "--batch-min-bytes",
        type=int,
        default=1,
        help="the consumers' PHASESTREAM_BATCH_MIN_BYTES (default 1, the setting's default)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="rates 200,400 for 5 s each: a check that it runs"
    )
    scratch.add_common_arguments(parser)
    args = parser.parse_args(None if argv is None else list(argv))
    if args.quick:
        args.rates, args.seconds = [200.0, 400.0], 5.0
        args.quiet_timeout = min(args.quiet_timeout, 5.0)
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    return args


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    scratch.setup_logging(LOG_FORMAT)
    figures = scratch.run_timed(run(args))
    figures["finished_at"] = datetime.now(UTC).isoformat()
    print(report(figures))
    print(f"total run: {figures['total_run_seconds']} s")
    scratch.write_figures(args.json, figures, logger=log)
    codes = [c for mode in figures["modes"] for c in mode["exit_codes"].values()]
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
