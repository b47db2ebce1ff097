"""Benchmark: the whole ``phasestream dev --demo`` stack under the demo load, CPU and memory
per process.

Run: ``.venv/bin/python -m bench.dev_stack [--seconds 60] [--runs 2] [--demo-rate 5]``
(needs the ``bench`` extra for psutil, which ``make bench`` installs).

Each run starts ``python -m phasestream dev --demo`` as a child process, as a developer
would, with:

- the embedded Tansu broker on a free port (``dev`` starts it, as its own child process);
- ``PHASESTREAM_DATABASE_URL`` pointing at a scratch database ``phasestream_bench_<random>``
  on the local Postgres (created for the run, dropped after it), so nothing else is touched
  and no embedded Postgres starts;
- a scratch data directory, HTTP on a free port.

It waits until the stack serves and the first demo rows are projected, lets it warm up
(``--warmup``), then samples every process of the stack every ``--interval`` seconds
with psutil for ``--seconds``: the phasestream process (all consumers and the demo
publisher run in it), the broker, the Postgres backends connected to the scratch database
(found by their process title), and Postgres's own background processes (shared with
anything else using the server, so only indicative). Per process group it prints CPU %
(mean and max of the intervals, % of one core) and peak RSS and USS (private memory; a
backend's RSS counts the shared buffers it touched). The demo's event rate comes from the
rows projected into ``workflow_phase_logs`` and from each consumer's
``phasestream_consumer_events_total`` on ``/metrics``, both over the sampled window.
Ctrl-C (SIGINT) then stops the stack, which must exit with 0 and leave no broker behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import psutil  # type: ignore[import-untyped, unused-ignore]  # types-psutil: bench extra

from bench import measure, scratch

log = logging.getLogger("bench.dev_stack")

HTTP_LINE: Final = re.compile(r"HTTP server: http://([\d.]+):(\d+)/metrics")
EVENTS_METRIC: Final = re.compile(
    r'^phasestream_consumer_events_total\{consumer="([^"]+)"\} ([0-9.e+]+)$', re.MULTILINE
)
GROUPS: Final = ("phasestream", "broker", "postgres_backends", "postgres_background")


def dev_environment(database_url: str, data_dir: Path, kafka_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASESTREAM_")}
    env.update(
        {
            "PHASESTREAM_DATABASE_URL": database_url,
            "PHASESTREAM_DATA_DIR": str(data_dir),
            "PHASESTREAM_EMBEDDED_KAFKA_PORT": str(kafka_port),
            "PHASESTREAM_HTTP_PORT": "0",
            "PHASESTREAM_LOG_LEVEL": "INFO",
        }
    )
    return env


def consumer_events(metrics_url: str) -> dict[str, float]:
    """phasestream_consumer_events_total per consumer, from /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:  # our own server
        text = response.read().decode()
    return {m.group(1): float(m.group(2)) for m in EVENTS_METRIC.finditer(text)}


async def wait_for_log(
    child: scratch.Child, pattern: re.Pattern[str], timeout_s: float = 90
) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.exited() is not None:
            raise RuntimeError(f"phasestream dev exited with {child.exited()}:\n{child.log_tail()}")
        with contextlib.suppress(OSError):
            if found := pattern.search(child.log_path.read_text(errors="replace")):
                return found
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no line matching {pattern.pattern!r}:\n{child.log_tail()}")


async def audit_rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM workflow_phase_logs"))
    finally:
        await conn.close()


async def one_run(
    args: argparse.Namespace, index: int, db_name: str, db_url: str, workdir: Path
) -> dict[str, Any]:
    load = await asyncio.to_thread(
        measure.wait_until_quiet, args.quiet_pct, window_s=5, timeout_s=args.quiet_timeout
    )
    env = dev_environment(db_url, workdir / f"data-{index}", scratch.free_port())
    demo = ["--demo", "--demo-rate", str(args.demo_rate)] if args.demo_rate > 0 else []
    argv = [sys.executable, "-m", "phasestream", "dev", *demo]
    child = await scratch.spawn(f"dev-{index}", argv, env=env, workdir=workdir)
    try:
        http = await wait_for_log(child, HTTP_LINE)
        metrics_url = f"http://{http.group(1)}:{http.group(2)}/metrics"
        while demo and await audit_rows(db_url) == 0:
            if child.exited() is not None:
                raise RuntimeError(f"phasestream dev exited:\n{child.log_tail()}")
            await asyncio.sleep(0.5)
        log.info(
            "run %d: the stack runs%s; warming up for %.0f s",
            index,
            " and projects demo rows" if demo else " (no demo)",
            args.warmup,
        )
        await asyncio.sleep(args.warmup)
        stack = psutil.Process(child.pid)
        sampler = measure.Sampler(
            {
                "phasestream": lambda: [child.pid],
                "broker": lambda: [p.pid for p in stack.children(recursive=True)],
                "postgres_backends": measure.postgres_backends(db_name),
                "postgres_background": measure.postgres_background,
            }
        )
        rows0, events0 = await audit_rows(db_url), consumer_events(metrics_url)
        began = time.perf_counter()
        stop_sampling = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(args.interval, stop_sampling))
        await asyncio.sleep(args.seconds)
        stop_sampling.set()
        await sampling
        wall = time.perf_counter() - began
        rows1, events1 = await audit_rows(db_url), consumer_events(metrics_url)
        threads = stack.num_threads()
    finally:
        code = await scratch.stop(child, sig=signal.SIGINT, timeout_s=60)
    text = child.log_path.read_text(errors="replace")
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(workdir) in " ".join(p.info["cmdline"] or [])
    ]
    result: dict[str, Any] = {
        "run": index,
        "seconds": round(wall, 1),
        "exit_code": code,
        "audit_rows_per_s": round((rows1 - rows0) / wall, 1),
        "consumer_events_per_s": {
            name: round((events1.get(name, 0) - n) / wall, 1) for name, n in events0.items()
        },
        "processes": {name: sampler.stats[name].summary() for name in GROUPS},
        "machine_cpu_mean_pct": round(
            sum(sampler.machine_pct) / max(1, len(sampler.machine_pct)), 1
        ),
        "phasestream_threads": threads,
        "tracebacks": text.count("Traceback"),
        "stopped_cleanly": "dev stack stopped" in text,
        "leftover_processes": leftovers,
        "load_before": load,
        "load_after": measure.load_snapshot(),
        "log": str(child.log_path),
    }
    log.info(
        "run %d: %.1f audit rows/s; phasestream %.1f%% CPU (max %.1f%%), %s MiB RSS; exit %s",
        index,
        result["audit_rows_per_s"],
        result["processes"]["phasestream"]["cpu_mean_pct"],
        result["processes"]["phasestream"]["cpu_max_pct"],
        result["processes"]["phasestream"]["rss_peak_mib"],
        code,
    )
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with scratch.scratch_directory("phasestream-bench-dev-", keep=args.keep) as workdir:
        return await run_in(args, workdir)


async def run_in(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    runs = []
    postgres: dict[str, Any] = {}
    for index in range(1, args.runs + 1):  # each run on a fresh database
        async with scratch.scratch_database(args.database_url) as (db_name, db_url):
            conn = await asyncpg.connect(db_url)
            try:
                postgres = await measure.postgres_facts(conn)
            finally:
                await conn.close()
            runs.append(await one_run(args, index, db_name, db_url, workdir))
    return {
        "machine": {**measure.machine_facts(("psutil",)), "postgres": postgres},
        "demo_rate_workflows_per_s": args.demo_rate,
        "warmup_s": args.warmup,
        "interval_s": args.interval,
        "runs": runs,
        "workdir": str(workdir),
    }


# --------------------------------------------------------------------------------------
# Report


def _range(values: Iterable[float], unit: str = "") -> str:
    vs = sorted(values)
    return f"{vs[0]:g}{unit}" if vs[0] == vs[-1] else f"{vs[0]:g}-{vs[-1]:g}{unit}"


def _growth(stats: Mapping[str, Any]) -> str:
    return f"{stats['rss_first_mib']:g}->{stats['rss_last_mib']:g}"


def report(figures: Mapping[str, Any]) -> str:
    m, runs = figures["machine"], figures["runs"]
    lines = [
        "",
        "== phasestream dev --demo: CPU and memory per process ==",
        f"machine: {m['nproc']} cpus ({m['cpu_model']}), {m['memory_gb']} GB, Linux "
        f"{m['kernel']}; python {m['python']}; {m['postgres']['version']}",
        (
            f"demo rate {figures['demo_rate_workflows_per_s']} workflows/s; "
            if figures["demo_rate_workflows_per_s"]
            else "no demo (the idle stack); "
        )
        + f"{len(runs)} run(s) of "
        f"{runs[0]['seconds']} s after {figures['warmup_s']} s warm-up, sampled every "
        f"{figures['interval_s']} s",
        "",
        f"{'process group':<21}{'n':>6}{'CPU mean':>12}{'CPU max':>13}{'RSS peak MiB':>15}"
        f"{'USS peak MiB':>14}  RSS first->last MiB",
    ]
    for name in GROUPS:
        stats = [r["processes"][name] for r in runs]
        lines.append(
            f"{name:<21}{_range(s['processes'] for s in stats):>6}"
            f"{_range((s['cpu_mean_pct'] for s in stats), '%'):>12}"
            f"{_range((s['cpu_max_pct'] for s in stats), '%'):>13}"
            f"{_range(s['rss_peak_mib'] for s in stats):>15}"
            f"{_range(s['uss_peak_mib'] for s in stats):>14}"
            f"  {' / '.join(_growth(s) for s in stats)}"
        )
    lines += [
        f"{'whole machine':<21}{'':>6}{_range((r['machine_cpu_mean_pct'] for r in runs), '%'):>12}",
        "(ranges over the runs; CPU in % of one core, the machine has "
        f"{100 * m['nproc']}%; n = processes seen)",
        "",
        f"audit rows projected: {_range(r['audit_rows_per_s'] for r in runs)} events/s",
    ]
    consumers = sorted({c for r in runs for c in r["consumer_events_per_s"]})
    for name in consumers:
        lines.append(
            f"  {name:<28} {_range(r['consumer_events_per_s'].get(name, 0) for r in runs)}"
            " events/s applied"
        )
    for r in runs:
        lb = r["load_before"]
        lines.append(
            f"run {r['run']}: exit {r['exit_code']}, stopped cleanly {r['stopped_cleanly']}, "
            f"tracebacks {r['tracebacks']}, leftover processes {len(r['leftover_processes'])},"
            f" {r['phasestream_threads']} threads; load before {'/'.join(map(str, lb['loadavg']))}"
            f" ({lb['busy_pct']:.0f}% busy{'' if lb['quiet'] else ', NOT quiet'}), after "
            f"{'/'.join(map(str, r['load_after']['loadavg']))}"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Main


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60, help="sampled window per run")
    parser.add_argument("--runs", type=int, default=2, help="runs (each a fresh stack)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=15,
        help="seconds between the first projected rows and sampling",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval, s")
    parser.add_argument(
        "--demo-rate",
        type=float,
        default=5.0,
        help="demo workflows per second (phasestream dev's default: 5); 0 "
        "runs `phasestream dev` without --demo (the idle stack)",
    )
    scratch.add_common_arguments(parser)
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    scratch.setup_logging()
    figures = asyncio.run(run(args))
    figures["finished_at"] = datetime.now(UTC).isoformat()
    print(report(figures))
    scratch.write_figures(args.json, figures, logger=log)
    bad = [r["run"] for r in figures["runs"] if r["exit_code"] != 0 or r["leftover_processes"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
