"""Evidence for why the SLA monitor keeps its state in Postgres, not in faust-streaming.

Run: ``.venv/bin/python bench/archive/faust_probe.py [--timeout 60] [--entries 1000000]
[--json PATH]``.

(a) A faust app (memory store, one agent writing a Table) with
    ``processing_guarantee="exactly_once"`` is started as a worker in a child process
    against a scratch Tansu broker (the broker phasestream embeds), with a hard timeout.
    faust's exactly-once needs an idempotent/transactional producer, whose first request,
    InitProducerId, this broker answers with an error: the worker cannot start. As a
    control, the same app with ``at_least_once`` is started against the same broker and
    must process one event (then it is stopped with SIGTERM).
(b) The memory that a faust memory-store Table of N pending phases needs: a dict of N
    ``faust.Record`` values (started_event_id, user_id, workflow_id, phase_number,
    started_at_ms) keyed by ``"<workflow_id>:<phase>"``, against the same dict holding
    tuples. Each variant is built in a fresh interpreter; the figure is the growth of its
    resident set (VmRSS), plus a per-entry breakdown from ``sys.getsizeof``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import faust

from phasestream.local_stack import embedded_broker
from streams.kafka import KafkaCluster
from streams.topics import ensure_topics

log = logging.getLogger("bench.faust_probe")

HOST: Final = "127.0.0.1"
GUARANTEES: Final = ("exactly_once", "at_least_once")
MIB: Final = 2**20
RECEIVED: Final = "PROBE-RECEIVED"
SENT: Final = "PROBE-SENT"
RESULT: Final = "PROBE-RESULT "
STOP_WAIT_S: Final = 15.0
MEMORY_TIMEOUT_S: Final = 600.0
STARTED_AT_MS: Final = 1_767_225_600_000
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ERROR_WORDS: Final = ("ERROR", "Error", "error:", "Traceback", "raise ")


class PendingPhase(faust.Record, serializer="json"):
    """A phase that started and has not ended: what the monitor would keep per open phase."""

    started_event_id: str
    user_id: str
    workflow_id: str
    phase_number: int
    started_at_ms: int


# --------------------------------------------------------------------------------------
# (a) the app, run as a worker in a child process


def build_app(app_id: str, bootstrap: str, guarantee: str, topic_name: str) -> Any:
    """A faust app with one agent that keeps pending phases in a memory-store Table."""
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        processing_guarantee=guarantee,
        broker_session_timeout=2.0,
        broker_heartbeat_interval=0.5,
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
    )
    topic = app.topic(topic_name, key_type=str, value_type=PendingPhase)
    pending = app.Table("pending", default=None)

    @app.agent(topic)
    async def track(stream: Any) -> None:
        async for phase in stream:
            pending[f"{phase.workflow_id}:{phase.phase_number}"] = phase
            print(f"{RECEIVED} {phase.workflow_id} table size {len(pending)}", flush=True)

    @app.task  # type: ignore[untyped-decorator]  # faust types app.task loosely
    async def feed() -> None:
        phase = PendingPhase(
            started_event_id=str(uuid.uuid4()),
            user_id=str(uuid.uuid4()),
            workflow_id="wf-probe",
            phase_number=1,
            started_at_ms=STARTED_AT_MS,
        )
        await topic.send(key=phase.workflow_id, value=phase)
        print(SENT, flush=True)

    return app


def source_topic(guarantee: str, tag: str) -> str:
    return f"probe-{guarantee}-{tag}-in"


def child_app(guarantee: str, bootstrap: str, tag: str) -> int:
    app = build_app(f"probe-{guarantee}-{tag}", bootstrap, guarantee, source_topic(guarantee, tag))
    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()  # returns, or exits, when the worker stops
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def run_app(
    guarantee: str, bootstrap: str, tag: str, timeout_s: float, workdir: Path
) -> dict[str, Any]:
    """Start the worker; stop at the first processed event, at its exit, or at the timeout."""
    log.info(
        "(a) starting a faust worker with processing_guarantee=%s (timeout %.0f s)",
        guarantee,
        timeout_s,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child-app",
        guarantee,
        "--bootstrap",
        bootstrap,
        "--tag",
        tag,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=workdir,
        start_new_session=True,
    )
    assert proc.stdout is not None
    began = time.monotonic()
    lines: list[str] = []
    outcome = "timed out"
    try:
        while True:
            left = timeout_s - (time.monotonic() - began)
            if left <= 0:
                break
            try:
                raw = await asyncio.wait_for(proc.stdout.readline(), timeout=left)
            except TimeoutError:
                break
            if not raw:
                outcome = "exited"
                break
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if RECEIVED in line:  # faust logs what the agent prints
                outcome = "processed an event"
                break
    finally:
        seconds = time.monotonic() - began
        if proc.returncode is None:
            await _stop(proc, graceful=outcome == "processed an event")
    errors = [line for line in lines if any(w in line for w in ERROR_WORDS)]
    last_exception = next(
        (
            line
            for line in reversed(lines)
            if line.startswith(("aiokafka.errors.", "kafka.errors."))
        ),
        None,
    )
    log_path = workdir / f"faust-{guarantee}.log"
    log_path.write_text("\n".join(lines) + "\n")
    return {
        "processing_guarantee": guarantee,
        "outcome": outcome,
        "started": outcome == "processed an event",
        "exit_code": proc.returncode,
        "seconds": round(seconds, 2),
        "error_lines": [e[:300] for e in errors[:8]],
        "exception": last_exception,
        "log_lines": len(lines),
        "log_file": str(log_path),
    }


async def _stop(proc: asyncio.subprocess.Process, *, graceful: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
    try:
        await asyncio.wait_for(proc.wait(), timeout=STOP_WAIT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def probe_apps(timeout_s: float, workdir: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    with embedded_broker(HOST, free_port(), workdir / "tansu.log") as bootstrap:
        # Created first, with the app's partition count: an unknown topic would be
        # auto-created by the broker with 4 partitions and faust would refuse the Table
        # (its changelog has 1), which is not the failure under test.
        await ensure_topics(
            KafkaCluster(bootstrap), [source_topic(g, tag) for g in GUARANTEES], partitions=1
        )
        return {g: await run_app(g, bootstrap, tag, timeout_s, workdir) for g in GUARANTEES}


# --------------------------------------------------------------------------------------
# (b) memory of N pending phases, each variant in a fresh interpreter


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _fields(i: int) -> tuple[str, str, str, int, int]:
    # Distinct strings per entry, as values deserialized from a changelog would be.
    return (str(uuid.uuid4()), str(uuid.uuid4()), f"wf-{i:012x}", 1 + i % 7, STARTED_AT_MS + i)


def build_table(variant: str, entries: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for i in range(entries):
        event_id, user_id, workflow_id, phase, started = _fields(i)
        key = f"{workflow_id}:{phase}"
        if variant == "records":
            table[key] = PendingPhase(
                started_event_id=event_id,
                user_id=user_id,
                workflow_id=workflow_id,
                phase_number=phase,
                started_at_ms=started,
            )
        else:
            table[key] = (event_id, user_id, workflow_id, phase, started)
    return table


def child_memory(variant: str, entries: int) -> int:
    gc.collect()
    before = rss_bytes()
    began = time.perf_counter()
    table = build_table(variant, entries)
    seconds = time.perf_counter() - began
    gc.collect()
    after = rss_bytes()
    print(
        RESULT
        + json.dumps(
            {
                "variant": variant,
                "entries": len(table),
                "rss_before_mib": round(before / MIB, 1),
                "rss_after_mib": round(after / MIB, 1),
                "growth_mib": round((after - before) / MIB, 1),
                "bytes_per_entry": round((after - before) / len(table)),
                "build_seconds": round(seconds, 2),
            }
        ),
        flush=True,
    )
    return 0


def entry_breakdown() -> dict[str, dict[str, int]]:
    """Bytes of one entry's objects (sys.getsizeof; the dict slot is not included)."""
    event_id, user_id, workflow_id, phase, started = _fields(123_456)
    key = f"{workflow_id}:{phase}"
    record = PendingPhase(
        started_event_id=event_id,
        user_id=user_id,
        workflow_id=workflow_id,
        phase_number=phase,
        started_at_ms=started,
    )
    shared = {
        "key": sys.getsizeof(key),
        "started_event_id": sys.getsizeof(event_id),
        "user_id": sys.getsizeof(user_id),
        "workflow_id": sys.getsizeof(workflow_id),
        "started_at_ms": sys.getsizeof(started),
    }
    # Besides its fields, each Record carries its own (empty) __evaluated_fields__ set.
    extras = {
        f"record_extra_{name.strip('_')}": sys.getsizeof(value)
        for name, value in vars(record).items()
        if name.startswith("__")
    }
    records = {
        "record_object": sys.getsizeof(record),
        "record_dict": sys.getsizeof(record.__dict__),
        **extras,
        **shared,
    }
    tuples = {"tuple": sys.getsizeof((event_id, user_id, workflow_id, phase, started)), **shared}
    return {
        "records": {**records, "total": sum(records.values())},
        "tuples": {**tuples, "total": sum(tuples.values())},
    }


def measure_memory(variant: str, entries: int) -> dict[str, Any]:
    log.info("(b) building %d %s in a fresh interpreter", entries, variant)
    done = subprocess.run(
        [sys.executable, __file__, "--child-memory", variant, "--entries", str(entries)],
        capture_output=True,
        text=True,
        timeout=MEMORY_TIMEOUT_S,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            result: dict[str, Any] = json.loads(line[len(RESULT) :])
            log.info(
                "(b) %s: %.1f MiB for %d entries (%d B each), built in %.1f s",
                variant,
                result["growth_mib"],
                entries,
                result["bytes_per_entry"],
                result["build_seconds"],
            )
            return result
    raise RuntimeError(f"the {variant} child failed ({done.returncode}): {done.stderr[-2000:]}")


# --------------------------------------------------------------------------------------
# Report


def report(f: Mapping[str, Any]) -> str:
    lines = ["", "(a) faust-streaming against the local Tansu broker"]
    for name in ("exactly_once", "at_least_once"):
        a = f["apps"][name]
        lines.append(
            f"  {name}: {a['outcome']} after {a['seconds']} s (exit code {a['exit_code']})"
        )
        lines += [f"    | {e}" for e in a["error_lines"][:4]]
        if a["exception"]:
            lines.append(f"    exception: {a['exception']}")
    verdict = (
        "exactly_once CANNOT start, at_least_once works"
        if not f["apps"]["exactly_once"]["started"] and f["apps"]["at_least_once"]["started"]
        else "unexpected: see the logs"
    )
    lines.append(f"  => {verdict}")
    r, t = f["memory"]["records"], f["memory"]["tuples"]
    b = f["memory"]["breakdown"]
    lines += [
        f"(b) {r['entries']:,} pending phases in a dict (what a faust memory-store Table holds)",
        f"  faust.Record values: {r['growth_mib']} MiB ({r['bytes_per_entry']} B/entry, built "
        f"in {r['build_seconds']} s)",
        f"  tuple values:        {t['growth_mib']} MiB ({t['bytes_per_entry']} B/entry, built "
        f"in {t['build_seconds']} s)",
        f"  ratio records/tuples: {f['memory']['ratio']}",
        f"  one entry by sys.getsizeof: record {b['records']['total']} B, tuple "
        f"{b['tuples']['total']} B (record object {b['records']['record_object']} + its "
        f"__dict__ {b['records']['record_dict']} B)",
    ]
    return "\n".join(lines)


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="hard limit for each faust worker, seconds"
    )
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="pending phases in the memory measurement"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--child-app", help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_app:
        return child_app(args.child_app, args.bootstrap, args.tag)
    if args.child_memory:
        return child_memory(args.child_memory, args.entries)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    workdir = Path(tempfile.mkdtemp(prefix="phasestream-faust-probe-"))
    apps = asyncio.run(probe_apps(args.timeout, workdir))
    records = measure_memory("records", args.entries)
    tuples = measure_memory("tuples", args.entries)
    figures = {
        "machine": {
            "nproc": os.cpu_count(),
            "python": sys.version.split()[0],
            "faust_streaming": _version("faust-streaming"),
            "aiokafka": _version("aiokafka"),
        },
        "apps": apps,
        "memory": {
            "records": records,
            "tuples": tuples,
            "ratio": round(records["growth_mib"] / max(0.1, tuples["growth_mib"]), 2),
            "breakdown": entry_breakdown(),
        },
    }
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        log.info("figures written to %s", args.json)
    ok = not apps["exactly_once"]["started"] and apps["at_least_once"]["started"]
    return 0 if ok else 1


def _version(package: str) -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
