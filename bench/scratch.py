"""The scratch world of a bench run, shared by the bench scripts.

A scratch database, directory and broker, N published events, child processes
(``phasestream run audit`` workers, peers) and waiting for N rows. ``bench/measure.py``
holds the measuring side (machine facts, the load guard, psutil sampling). The scripts
that use them run as modules from the repository's root (``python -m bench.<script>``)
and import them as ``from bench import measure, scratch``; the two older ones
(``audit_projection.py``, ``sla_monitor.py``) also run as files and then put the root on
``sys.path`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg
import psutil  # type: ignore[import-untyped, unused-ignore]  # types-psutil: bench extra

from models.events import PhaseEvent
from phasestream.demo import workflow_events
from phasestream.local_kafka import start_kafka
from phasestream.local_stack import embedded_broker, embedded_postgres
from phasestream.settings import Settings
from phasestream.wiring import create_topics, run_migrations
from streams.publisher import PhaseEventPublisher

log = logging.getLogger("bench.scratch")

HOST: Final = "127.0.0.1"
DATABASE_URL_HELP: Final = (
    "a server where we may CREATE DATABASE (scratch, dropped at the end); default: "
    "PHASESTREAM_TEST_DATABASE_URL, else an embedded Postgres started for the run"
)
SESSION_TIMEOUT_MS: Final = 2000  # the local broker delays a group join by half of it
PUBLISH_CHUNK: Final = 20_000
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REPO: Final = Path(__file__).resolve().parents[1]


def default_database_url() -> str | None:
    """The server the benches use: PHASESTREAM_TEST_DATABASE_URL, else None (embedded)."""
    return os.environ.get("PHASESTREAM_TEST_DATABASE_URL") or None


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every newer bench script takes: database, load guard, output."""
    parser.add_argument("--database-url", default=default_database_url(), help=DATABASE_URL_HELP)
    parser.add_argument(
        "--quiet-pct",
        type=float,
        default=30,
        help="load guard: wait for the machine under this %% of one core",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=30,
        help="load guard: wait at most this long, then measure anyway",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch directory (processes' logs) instead of removing it",
    )


def setup_logging(fmt: str = LOG_FORMAT) -> None:
    logging.basicConfig(level=logging.INFO, format=fmt)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def run_timed(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """``asyncio.run(main)``: its figures, with total_run_seconds added."""
    began = time.monotonic()
    figures = asyncio.run(main)
    figures["total_run_seconds"] = round(time.monotonic() - began, 1)
    return figures


def write_figures(
    path: Path | None, figures: Mapping[str, Any], *, logger: logging.Logger = log
) -> None:
    """``--json PATH``: the figures as indented JSON there (nothing without a path)."""
    if path:
        path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        logger.info("figures written to %s", path)


def log_bench_cli(
    doc: str,
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    print_figures: Callable[[dict[str, Any]], None],
    *,
    rows: int,
    logger: logging.Logger = log,
    more_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """The command line of a bench on a synthetic audit log: ``--rows``, ``--repeat``,
    its own arguments and the common ones; runs ``main``, prints and writes the figures."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--repeat", type=int, default=5)
    if more_arguments is not None:
        more_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args()
    setup_logging()
    figures = run_timed(main(args))
    print_figures(figures)
    write_figures(args.json, figures, logger=logger)


# --------------------------------------------------------------------------------------
# Scratch resources


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def libpq_parts(url: str) -> dict[str, Any]:
    """host, port, dbname, user, password of a postgresql:// URL (for psycopg2 clients)."""
    parts = urlsplit(url)
    # A Unix-socket server (the embedded Postgres) is named in the query: ?host=/dir.
    socket_dir = parse_qs(parts.query).get("host", [None])[0]
    return {
        "host": socket_dir or parts.hostname or HOST,
        "port": parts.port or 5432,
        "dbname": unquote(parts.path.lstrip("/")) or "postgres",
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
    }


@contextlib.asynccontextmanager
async def admin_database(url: str | None) -> AsyncIterator[str]:
    """``url``, or (None) the URL of an embedded Postgres started for the run."""
    if url:
        yield url
        return
    with (
        tempfile.TemporaryDirectory(prefix="phasestream-bench-pg-") as tmp,
        embedded_postgres(Path(tmp) / "data") as embedded,
    ):
        yield embedded


@contextlib.asynccontextmanager
async def scratch_database(
    server_url: str | None, *, prefix: str = "phasestream_bench"
) -> AsyncIterator[tuple[str, str]]:
    """Create <prefix>_<random> on ``server_url`` (None: an embedded Postgres); yield
    (name, url); drop it on exit."""
    async with (
        admin_database(server_url) as admin_url,
        _scratch_database(admin_url, prefix) as made,
    ):
        yield made


@contextlib.asynccontextmanager
async def _scratch_database(admin_url: str, prefix: str) -> AsyncIterator[tuple[str, str]]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    log.info("created scratch database %s", name)
    try:
        yield name, with_database(admin_url, name)
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        log.info("dropped scratch database %s", name)


@contextlib.contextmanager
def scratch_directory(prefix: str, *, keep: bool = False) -> Iterator[Path]:
    """A temporary directory for logs and the broker's log; removed on exit unless keep."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            log.info("kept the logs in %s", path)
        else:
            shutil.rmtree(path, ignore_errors=True)


#: --broker: the embedded Tansu (memory only) or Apache Kafka (phasestream/local_kafka.py).
BROKERS: Final = ("tansu", "kafka")


@contextlib.contextmanager
def local_broker(workdir: Path, broker: str = "tansu") -> Iterator[str]:
    """A scratch broker on free ports, ours to stop: the memory-only Tansu, or one
    Apache Kafka KRaft node (JIT and group join delay as in production, unlike the tests)."""
    if broker == "kafka":
        # Kafka's own default join delay (the tests' 0 would let the first of several
        # workers started together take every partition, then give half away mid-drain).
        with start_kafka(
            workdir / "kafka",
            extra_props={"group.initial.rebalance.delay.ms": "3000"},
            java_options=(),
        ) as cluster:
            yield cluster.bootstrap_servers
        return
    with embedded_broker(HOST, free_port(), workdir / "tansu.log") as bootstrap:
        yield bootstrap


def bench_settings(bootstrap: str, database_url: str, **overrides: Any) -> Settings:
    """Settings for a bench: the defaults, a short session timeout, no .env file read."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "database_url": database_url,
        "consumer_session_timeout_ms": SESSION_TIMEOUT_MS,
        "http_port": 0,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@dataclass(frozen=True)
class Stack:
    """A bench's scratch world: directory, migrated database with its topics, broker."""

    workdir: Path
    db_name: str
    settings: Settings
    monitor: asyncpg.Connection[Any]  # a connection for the bench's own queries


@contextlib.asynccontextmanager
async def bench_stack(
    database_url: str | None, *, prefix: str, keep: bool = False, **overrides: Any
) -> AsyncIterator[Stack]:
    """Scratch directory, database and broker, migrated and with the topics created; all
    removed on exit. ``overrides`` go to bench_settings (topics, groups)."""
    with scratch_directory(prefix, keep=keep) as workdir:
        async with scratch_database(database_url) as (db_name, db_url):
            with local_broker(workdir) as bootstrap:
                settings = bench_settings(bootstrap, db_url, **overrides)
                await run_migrations(settings)
                await create_topics(settings)
                monitor = await asyncpg.connect(db_url)
                try:
                    yield Stack(workdir, db_name, settings, monitor)
                finally:
                    await monitor.close()


async def empty_audit_log(conn: asyncpg.Connection[Any]) -> None:
    """Empty workflow_phase_logs and the event ids it claimed (workflow_phase_event_ids,
    migration 0008), so that the next drain meets new ids, as in production: with the ids
    still claimed, every batch would also run the sink's payload-conflict check."""
    ids = await conn.fetchval("SELECT to_regclass('workflow_phase_event_ids') IS NOT NULL")
    await conn.execute(
        "TRUNCATE workflow_phase_logs" + (", workflow_phase_event_ids" if ids else "")
    )


async def checkpoint(conn: asyncpg.Connection[Any]) -> None:
    """Start each timed part with no dirty buffers left over from the one before."""
    await conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------------------
# Events


def make_events(count: int, seed: int) -> list[PhaseEvent]:
    """``count`` realistic demo events (whole workflows, cut at count), unique ids."""
    rng = random.Random(seed)
    end = datetime.now(UTC)
    events: list[PhaseEvent] = []
    while len(events) < count:
        events += workflow_events(rng, end)
    events = events[:count]
    if len({e.event_id for e in events}) != count:
        raise RuntimeError("generated event ids are not unique; change --seed")
    return events


def months_of(events: Sequence[PhaseEvent]) -> list[datetime]:
    """The first instant (UTC) of each month the events fall in."""
    return sorted(
        {
            e.timestamp.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            for e in events
        }
    )


async def publish(
    settings: Settings,
    events: Sequence[PhaseEvent],
    *,
    client_id: str = "bench-publish",
    progress: bool = False,
) -> float:
    """Publish through the SDK (validates, keys by workflow id); return events/s. With
    ``progress``, log the count after each chunk of PUBLISH_CHUNK events."""
    async with PhaseEventPublisher(
        settings.bootstrap_servers,
        settings.phase_events_topic,
        linger_ms=settings.producer_linger_ms,
        client_id=client_id,
    ) as publisher:
        began = time.perf_counter()
        for start in range(0, len(events), PUBLISH_CHUNK):
            await publisher.publish_many(events[start : start + PUBLISH_CHUNK])
            if progress:
                log.info(
                    "%s: %d / %d events published",
                    client_id,
                    min(start + PUBLISH_CHUNK, len(events)),
                    len(events),
                )
        rate = len(events) / (time.perf_counter() - began)
    log.info("published %d events to %s (%.0f/s)", len(events), settings.phase_events_topic, rate)
    return rate


# --------------------------------------------------------------------------------------
# Child processes (phasestream workers, peers)


def phasestream_environment(settings: Settings) -> dict[str, str]:
    """This environment without any PHASESTREAM_ variable, plus these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASESTREAM_")}
    env.update(
        {
            "PHASESTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "PHASESTREAM_DATABASE_URL": settings.database_url or "",
            "PHASESTREAM_PHASE_EVENTS_TOPIC": settings.phase_events_topic,
            "PHASESTREAM_DLQ_TOPIC": settings.dlq_topic,
            "PHASESTREAM_AUDIT_CONSUMER_GROUP": settings.audit_consumer_group,
            "PHASESTREAM_CONSUMER_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
            "PHASESTREAM_BATCH_MAX_RECORDS": str(settings.batch_max_records),
            "PHASESTREAM_BATCH_MAX_WAIT_MS": str(settings.batch_max_wait_ms),
            "PHASESTREAM_BATCH_MIN_BYTES": str(settings.batch_min_bytes),
            "PHASESTREAM_WRITES_IN_FLIGHT": str(settings.writes_in_flight),
            "PHASESTREAM_PRODUCER_LINGER_MS": str(settings.producer_linger_ms),
            "PHASESTREAM_LOG_LEVEL": "INFO",
            "PHASESTREAM_HTTP_PORT": "0",
        }
    )
    return env


@dataclass
class Child:
    """A child process of the bench and its log file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> int | None:
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    workdir: Path,
    new_session: bool = False,
) -> Child:
    """Start argv with stdout and stderr into workdir/<name>.log, cwd workdir (no .env)."""
    log_path = workdir / f"{name}.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=new_session,
        )
    finally:
        os.close(fd)
    log.info("started %s (pid %d): %s", name, process.pid, " ".join(argv[:6]))
    return Child(name, process, log_path)


def broker_pids() -> list[int]:
    """The broker that local_broker started (our child process: Tansu or Kafka's JVM)."""
    return [
        p.pid
        for p in psutil.Process().children()
        if "broker" in (line := " ".join(p.cmdline())) or "kafka.Kafka" in line
    ]


def phasestream_audit_argv() -> list[str]:
    return [sys.executable, "-m", "phasestream", "run", "audit"]


async def stop(child: Child, *, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
    """Signal the child and wait; its exit code (None: it had to be killed)."""
    if child.process.returncode is None:
        child.process.send_signal(sig)
    try:
        return await asyncio.wait_for(child.process.wait(), timeout_s)
    except TimeoutError:
        log.warning("%s did not stop in %.0f s: killing it", child.name, timeout_s)
        child.process.kill()
        await child.process.wait()
        return None


# --------------------------------------------------------------------------------------
# Waiting for rows


@dataclass(frozen=True)
class RowTiming:
    """When the first committed rows and all target rows were seen (perf_counter)."""

    started_at: float
    first_at: float
    done_at: float
    first_rows: int
    polls: int
    target: int

    @property
    def events_per_s(self) -> int:
        """From the first committed row to the target, excluding the first commit's rows."""
        return round(
            0
            if self.done_at <= self.first_at
            else (self.target - self.first_rows) / (self.done_at - self.first_at)
        )

    @property
    def events_per_s_incl_start(self) -> int:
        return round(self.target / max(1e-9, self.done_at - self.started_at))


async def wait_for_rows(
    conn: asyncpg.Connection[Any],
    table: str,
    target: int,
    *,
    started_at: float,
    alive: Callable[[], str | None],
    on_first: Callable[[], None] | None = None,
    timeout_s: float = 600,
    poll_s: float = 0.05,
) -> RowTiming:
    """Poll ``SELECT count(*) FROM table`` every poll_s until it reaches target.

    ``alive`` returns None while the writer runs, else why it stopped (that fails the
    wait). ``on_first`` runs when the first committed rows are seen (start meters there).
    """
    first_at, first_rows, polls = 0.0, 0, 0
    deadline = time.monotonic() + timeout_s
    next_log = time.monotonic() + 5
    while True:
        if (why := alive()) is not None:
            raise RuntimeError(f"{table}: the writer stopped: {why}")
        rows = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        now = time.perf_counter()
        polls += 1
        if rows and not first_at:
            first_at, first_rows = now, rows
            if on_first is not None:
                on_first()
        if rows >= target:
            return RowTiming(started_at, first_at, now, first_rows, polls, target)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{table}: {rows} of {target} rows after {timeout_s:.0f} s")
        if time.monotonic() >= next_log:
            log.info("%s: %d / %d rows", table, rows, target)
            next_log += 5
        await asyncio.sleep(poll_s)
