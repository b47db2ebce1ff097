"""Profile: where the audit projector's time goes while it drains a benchmark backlog.

Run: ``.venv/bin/python -m bench.profile_audit [--events N] [--rate HZ] [--target ps]``
(needs the ``bench`` extra for py-spy and psutil, which ``make bench`` installs; py-spy
attaches with ptrace, so run it as root or with CAP_SYS_PTRACE).

Everything is scratch, as in ``audit_projection.py``: a Tansu broker on a free port and a
``phasestream_bench_<random>`` database. N events are published, then one ``python -m
phasestream run audit`` process (``--target ps``; or a Quix Streams peer process of
``quix_peer.py``, ``--target quix|quix-psdecoder|quix-novalidate``) drains them. From the
first committed row until N rows, ``py-spy record --format raw`` samples its Python
threads at ``--rate`` Hz, keeping only the samples in which a thread was active (py-spy
pauses the process briefly for each sample: the drain rate while profiled is printed,
compare it with the unprofiled figures), and psutil meters the CPU of the process and of
its Postgres backends.

The printout aggregates the sampled stacks: the share of wall time the process was active
(py-spy's non-idle samples / ticks: running or runnable, so on a busy machine this includes
waiting for a core; the rest it waited for Postgres or Kafka), then, over the active
samples, self time by package (the innermost non-stdlib frame decides, so
``uuid.UUID()`` called by the validator counts as validation), the top functions by self
time and by total (inclusive) time. ``--raw-out`` keeps the raw stacks (one "frame;...;leaf
count" line per stack, flamegraph.pl's input).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg

from bench import measure, scratch
from phasestream.settings import Settings

log = logging.getLogger("bench.profile_audit")

TARGETS: Final = ("ps", "quix", "quix-psdecoder", "quix-novalidate")
FRAME: Final = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Self time by package: the innermost frame that is not plain stdlib (uuid, datetime,
# re, ...) or generated code (a dataclass __init__) decides, so that UUID() called by
# the validator counts as validation. The first matching pattern of its file names it.
PACKAGES: Final = (
    ("phasestream validation + decode (models/)", re.compile(r"^models/")),
    ("phasestream projector (streams/)", re.compile(r"^streams/")),
    ("phasestream sink (projections/)", re.compile(r"^projections/")),
    ("phasestream shell (phasestream/)", re.compile(r"^phasestream/")),
    ("asyncpg", re.compile(r"^asyncpg/")),
    ("aiokafka / kafka-python", re.compile(r"^(aiokafka|kafka)/")),
    ("asyncio event loop", re.compile(r"^(asyncio/|selectors\.py)")),
    ("quixstreams", re.compile(r"^quixstreams/")),
    ("jsonschema / referencing", re.compile(r"^(jsonschema|referencing|rpds)/")),
    ("psycopg2", re.compile(r"^psycopg2/")),
    ("confluent_kafka", re.compile(r"^confluent_kafka/")),
)
PLAIN: Final = re.compile(
    r"^(<.*>|[A-Za-z_]\w*\.py|(json|re|logging|collections|"
    r"concurrent|importlib|email|encodings)/.*)$"
)
OWN_CODE: Final = re.compile(r"^(models|streams|projections|bench)/")
TRUNK_SHARE: Final = 0.98  # frames in this share of samples (main, run, ...) are not listed


# --------------------------------------------------------------------------------------
# Aggregating py-spy's raw (collapsed) stacks


def short_frame(frame: str) -> str:
    """'func (path/file.py:123)' -> 'func (path/file.py)'; paths are already short."""
    found = FRAME.match(frame)
    return f"{found['func']} ({found['file']})" if found else frame


def frame_file(frame: str) -> str:
    found = FRAME.match(frame)
    return found["file"] if found else ""


def package_of(frames: Sequence[str]) -> str:
    """The package that a sample's self time counts for (see PACKAGES)."""
    for frame in reversed(frames):
        path = frame_file(frame)
        for name, pattern in PACKAGES:
            if pattern.search(path):
                return name
        if not PLAIN.match(path):
            return f"other ({path.split('/', 1)[0]})"
    return "python stdlib"


@dataclass
class Profile:
    """Sampled (active) stacks aggregated: self and total time per function, per package."""

    samples: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    total_time: Counter[str] = field(default_factory=Counter)
    packages: Counter[str] = field(default_factory=Counter)

    def add(self, stack: Sequence[str], count: int) -> None:
        frames = [short_frame(f) for f in stack]
        if not frames:
            return
        self.samples += count
        self.self_time[frames[-1]] += count
        self.packages[package_of(frames)] += count
        for frame in set(frames):
            self.total_time[frame] += count

    def top(self, counter: Counter[str], n: int) -> list[dict[str, Any]]:
        trunk = TRUNK_SHARE * self.samples
        rows = [
            (name, count)
            for name, count in counter.most_common()
            if counter is not self.total_time or count < trunk
        ]
        return [
            {"function": name, "pct": round(100 * count / max(1, self.samples), 1)}
            for name, count in rows[:n]
        ]

    def summary(self, n: int = 20) -> dict[str, Any]:
        own = Counter(
            {
                name: count
                for name, count in self.total_time.items()
                if OWN_CODE.match(frame_file(name))
            }
        )
        return {
            "samples": self.samples,
            "self": self.top(self.self_time, n),
            "total": self.top(self.total_time, n),
            "own_total": self.top(own, n),
            "packages": self.top(self.packages, len(self.packages)),
        }


def parse_raw(text: str) -> Profile:
    """py-spy's ``--format raw``: one 'frame;frame;...;leaf count' line per stack."""
    profile = Profile()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            if frames and frames[0].startswith(("process ", "thread ")):
                frames = frames[1:]  # --threads / --subprocesses prefixes
            profile.add(frames, int(count))
    return profile


# --------------------------------------------------------------------------------------
# Running and recording


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is missing: install the bench extra (make bench)")
    return found


class Spy:
    """``py-spy record --format raw`` of one process, from start() until stop()."""

    def __init__(self, rate_hz: int, output: Path, workdir: Path, max_s: float) -> None:
        self.rate_hz, self.output, self.workdir, self.max_s = rate_hz, output, workdir, max_s
        self.child: scratch.Child | None = None
        self.window: list[float] = []  # when it started, when it was stopped
        self.exit_code: int | None = None

    async def start(self, target: scratch.Child) -> None:
        self.child = await scratch.spawn(
            "py-spy",
            [
                py_spy(),
                "record",
                "--pid",
                str(target.pid),
                "--rate",
                str(self.rate_hz),
                "--format",
                "raw",
                "--output",
                str(self.output),
                "--duration",
                str(int(self.max_s)),
            ],
            env={},
            workdir=self.workdir,
        )
        self.window.append(time.perf_counter())

    async def stop(self) -> None:
        """SIGINT makes py-spy stop and write what it recorded."""
        if self.child is not None and len(self.window) == 1:
            self.window.append(time.perf_counter())
            self.exit_code = await scratch.stop(self.child, sig=signal.SIGINT, timeout_s=60)

    def kill(self) -> None:
        if self.child is not None and self.child.exited() is None:
            self.child.process.kill()

    @property
    def seconds(self) -> float:
        return self.window[1] - self.window[0] if len(self.window) == 2 else 0.0

    def recorded(self) -> str:
        if self.child is None or not self.output.exists():
            tail = self.child.log_tail() if self.child else "py-spy never started"
            raise RuntimeError(f"py-spy wrote nothing (exit {self.exit_code}):\n{tail}")
        return self.output.read_text()


def target_command(
    args: argparse.Namespace, settings: Settings
) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, table) of the process to profile."""
    if args.target == "ps":
        return (
            scratch.phasestream_audit_argv(),
            scratch.phasestream_environment(settings),
            "workflow_phase_logs",
        )
    from bench import quix_peer  # noqa: PLC0415  # only the peer targets need it

    peer_args = argparse.Namespace(commit_interval=args.commit_interval)
    return quix_peer.part_command(args.target, settings, "bench-profile-peer", peer_args)


async def profile_drain(
    args: argparse.Namespace,
    settings: Settings,
    db_name: str,
    monitor: asyncpg.Connection[Any],
    workdir: Path,
) -> dict[str, Any]:
    argv, env, table = target_command(args, settings)
    load = await asyncio.to_thread(
        measure.wait_until_quiet, args.quiet_pct, window_s=5, timeout_s=args.quiet_timeout
    )
    await scratch.checkpoint(monitor)
    spy = Spy(args.rate, workdir / f"{args.target}.raw", workdir, args.timeout)
    try:
        drain = await measure.timed_drain(
            args.target,
            argv,
            env,
            workdir=workdir,
            monitor=monitor,
            database=db_name,
            database_url=settings.database_url or "",
            table=table,
            target=args.events,
            broker=scratch.broker_pids(),
            timeout_s=args.timeout,
            on_first=spy.start,
            before_stop=spy.stop,
        )
    finally:
        spy.kill()
    text = spy.recorded()
    if args.raw_out:
        args.raw_out.write_text(text)
    cpu, rate, profile = drain.cpu, drain.timing.events_per_s, parse_raw(text)
    # py-spy keeps only samples in which a thread was active, running or runnable (no
    # --idle): in the rest of its ticks it waited (for Postgres or Kafka). py-spy's start
    # eats a little of the window, so this share is a lower bound.
    ticks = args.rate * spy.seconds
    return {
        "target": args.target,
        "events": args.events,
        "events_per_s_while_profiled": rate,
        "first_commit_after_s": round(drain.timing.first_at - drain.timing.started_at, 2),
        "exit_code": drain.exit_code,
        "py_spy_exit_code": spy.exit_code,
        "py_spy_rate_hz": args.rate,
        "cpu": cpu,
        "process_cpu_us_per_event": round(
            cpu["groups_pct"]["consumer"] / 100 * 1e6 / max(1, rate), 1
        ),
        "postgres_cpu_us_per_event": round(
            cpu["groups_pct"]["postgres"] / 100 * 1e6 / max(1, rate), 1
        ),
        "profile": profile.summary(args.top),
        "profile_window_s": round(spy.seconds, 2),
        "active_pct_of_wall": round(100 * profile.samples / max(1.0, ticks), 1),
        "load_before": load,
        "load_after": measure.load_snapshot(),
        "raw": str(args.raw_out) if args.raw_out else None,  # the scratch copy goes
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch.bench_stack(
        args.database_url,
        prefix="phasestream-bench-profile-",
        keep=args.keep,
        phase_events_topic="bench.profile-events",
        dlq_topic="bench.profile-events.dlq",
        audit_consumer_group="bench-profile",
    ) as stack:
        events = scratch.make_events(args.events, args.seed)
        if args.target != "ps":
            from bench import quix_peer  # noqa: PLC0415  # as above

            await quix_peer.create_peer_table(stack.monitor, scratch.months_of(events))
        await scratch.publish(stack.settings, events)
        del events
        result = await profile_drain(
            args, stack.settings, stack.db_name, stack.monitor, stack.workdir
        )
        result["machine"] = {
            **measure.machine_facts(("py-spy", "psutil")),
            "postgres": await measure.postgres_facts(stack.monitor),
        }
        return result


# --------------------------------------------------------------------------------------
# Report


def report(figures: Mapping[str, Any]) -> str:
    m, p, cpu = figures["machine"], figures["profile"], figures["cpu"]
    lb = figures["load_before"]
    lines = [
        "",
        f"== where the time goes: {figures['target']} draining {figures['events']:,} events ==",
        f"machine: {m['nproc']} cpus ({m['cpu_model']}); python {m['python']}; "
        f"{m['postgres']['version']}; py-spy {m['packages']['py-spy']} at "
        f"{figures['py_spy_rate_hz']} Hz",
        f"load before: {'/'.join(map(str, lb['loadavg']))} ({lb['busy_pct']:.0f}% busy"
        f"{'' if lb['quiet'] else ', NOT quiet'}); after: "
        f"{'/'.join(map(str, figures['load_after']['loadavg']))}",
        f"drain while profiled: {figures['events_per_s_while_profiled']:,} events/s; CPU: "
        f"process {cpu['groups_pct']['consumer']:.0f}% "
        f"({figures['process_cpu_us_per_event']} us/event), its Postgres backends "
        f"{cpu['groups_pct']['postgres']:.0f}% ({figures['postgres_cpu_us_per_event']} "
        f"us/event), machine {cpu['machine_pct']:.0f}% of {100 * m['nproc']}%, other "
        f"{cpu['other_pct']:.0f}%",
        f"py-spy: {p['samples']:,} active samples in {figures['profile_window_s']} s: "
        f"running or runnable {figures['active_pct_of_wall']}% of the wall time (the rest "
        "waiting for Postgres or Kafka); shares below are of the active samples",
        "",
        "self time by package:",
        *(f"  {row['pct']:>5.1f}%  {row['function']}" for row in p["packages"]),
        "",
        "top functions by self time:",
        *(f"  {row['pct']:>5.1f}%  {row['function']}" for row in p["self"]),
        "",
        "top functions by total (inclusive) time:",
        *(f"  {row['pct']:>5.1f}%  {row['function']}" for row in p["total"]),
        "",
        "top functions of models/, streams/, projections/ (and bench/) by total time:",
        *(f"  {row['pct']:>5.1f}%  {row['function']}" for row in p["own_total"]),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Main


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=300_000, help="backlog size N")
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="ps",
        help="ps: phasestream run audit (default); quix*: a quix_peer.py peer",
    )
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=20, help="functions listed")
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=1.0,
        help="quix targets: the peer's checkpoint interval, seconds",
    )
    parser.add_argument("--raw-out", type=Path, help="keep py-spy's raw stacks here")
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--timeout", type=float, default=300, help="seconds")
    scratch.add_common_arguments(parser)
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    scratch.setup_logging()
    py_spy()
    figures = asyncio.run(run(args))
    figures["finished_at"] = datetime.now(UTC).isoformat()
    print(report(figures))
    with contextlib.suppress(OSError):
        scratch.write_figures(args.json, figures, logger=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
