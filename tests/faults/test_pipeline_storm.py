"""Jepsen-style faults across the whole pipeline: the audit projector, the SLA monitor, the
metrics consumer and the rollback commander run as separate processes while waves of
uniquely identified events are published (failures that roll back and schedule retries,
phases that never finish and must become overdue, late and out-of-order ends). Faults:

- a kill -9 storm: every consumer killed several times at seeded-random moments and
  restarted, the SLA monitor while deadlines are pending, the rollback commander while
  retries are scheduled (every other time while its outbox relay is pinned between
  publishing commands and forgetting them), the projectors while they have a backlog;
- Postgres cutting every connection to the test database (pg_terminate_backend), several
  times while the four consumers work.

Then, once the pipeline is quiet, ``tests.faults.checker`` compares what was published with
the audit table, the SLA violations (table and topic), the commands topic and metrics_data:
nothing lost, nothing duplicated, nothing unexpected. Randomness is seeded (the environment
variable PHASESTREAM_FAULT_SEED overrides the seed); each test prints its seed first, and
its failure messages say what the faults hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from models.events import PhaseEvent
from models.phases import PHASES, PhaseStatus
from phasestream.consumers import rollback_policy
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.conftest import settings_env
from tests.faults.checker import (
    AUDIT,
    COMMANDS,
    METRICS,
    VIOLATION_TOPIC,
    VIOLATIONS,
    Expected,
    Observed,
    Published,
    check,
    compare,
    expect,
)
from tests.support import count_rows, eventually

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("PHASESTREAM_FAULT_SEED", "20261206"))
#: Short per-phase SLA thresholds (2.25-3.75 s): never-finishing phases fall due within
#: seconds, and an end that follows its start by milliseconds is never overdue.
THRESHOLDS = {phase: 2000 + 250 * phase for phase in PHASES}
CONSUMERS = ("audit", "sla", "metrics", "rollback")
#: Kills per consumer; the commander's relay has the narrowest window (send to removal).
KILLS = {"audit": 3, "sla": 3, "metrics": 3, "rollback": 4}
USER = uuid.UUID("00000000-0000-4000-8000-0000000000f5")
#: Workflows failing in every wave: rollback + retry 1, rollback + retry 2, rollback +
#: gave_up, then loop_stopped (max 3 rollbacks per workflow).
REPEATERS = 16


def pipeline_settings(settings: Settings) -> Settings:
    """Retries on a short, unjittered schedule (due 2 s, then 4 s after the rollback), so
    that scheduled retries exist whenever a kill or a cut lands; small batches, so that
    faults land mid-batch."""
    return settings.model_copy(update={
        "retry_enabled": True, "retry_interval_ms": 2000, "retry_backoff_rate": 2.0,
        "retry_max_attempts": 2, "retry_jitter": "none", "rollback_max_per_workflow": 3,
        "batch_max_records": 100})


# --- the published events -----------------------------------------------------------


@dataclass
class Scenario:
    """The events of every wave so far, and what they mean (see checker.Published)."""

    rng: random.Random
    events: list[PhaseEvent] = field(default_factory=list)
    never_finish: set[uuid.UUID] = field(default_factory=set)
    late: set[uuid.UUID] = field(default_factory=set)
    _clock: datetime = field(default_factory=lambda: datetime.now(UTC))

    def published(self) -> Published:
        return Published(list(self.events), frozenset(self.never_finish), frozenset(self.late))

    def wave(self, number: int, workflows: int) -> list[PhaseEvent]:
        """One wave: new workflows of every kind, and a failure of each repeater."""
        self._clock = datetime.now(UTC)  # event time: now, 1 ms apart
        wave: list[PhaseEvent] = []
        for index in range(workflows):
            wave += self._workflow(f"w{number}-{index:03d}")
        for index in range(REPEATERS):
            wave += self._phase(f"rep-{index:02d}", 2 + index % 6, PhaseStatus.FAILED)
        self.events += wave
        return wave

    def _workflow(self, workflow: str) -> list[PhaseEvent]:
        rng = self.rng
        kind = rng.choices(("happy", "late", "fail", "stuck", "reordered"),
                           weights=(30, 15, 25, 15, 15))[0]
        last = rng.randint(1, 7)
        odd = rng.randint(1, last)  # the phase that is late or out of order
        events: list[PhaseEvent] = []
        for phase in range(1, last + 1):
            end: PhaseStatus | None = PhaseStatus.COMPLETED
            if phase == last and kind == "fail":
                end = PhaseStatus.FAILED
            elif phase == last and kind == "stuck":
                end = None
            events += self._phase(
                workflow, phase, end,
                late=(kind == "late" and phase == odd) or (
                    kind in ("fail", "reordered") and phase == odd and rng.random() < 0.4),
                end_first=kind == "reordered" and phase == odd)
        return events

    def _phase(self, workflow: str, phase: int, end: PhaseStatus | None, *,
               late: bool = False, end_first: bool = False) -> list[PhaseEvent]:
        started = self._event(workflow, phase, PhaseStatus.STARTED)
        if end is None:
            self.never_finish.add(started.event_id)
            return [started]
        threshold = THRESHOLDS[phase]
        duration = threshold + self.rng.randint(1, 4000) if late else \
            self.rng.randint(0, threshold)  # exactly the threshold is on time
        if late:
            self.late.add(started.event_id)
        finished = replace(self._event(workflow, phase, end), duration_ms=duration,
                           error_message="boom" if end is PhaseStatus.FAILED else None)
        return [finished, started] if end_first else [started, finished]

    def _event(self, workflow: str, phase: int, status: PhaseStatus) -> PhaseEvent:
        self._clock += timedelta(milliseconds=1)
        return PhaseEvent(
            event_id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
            workflow_id=workflow, user_id=USER, phase_number=phase, status=status,
            timestamp=self._clock, previous_phase=phase - 1 if phase > 1 else None,
            metadata={"test": "pipeline-storm"})


# --- the consumer processes ---------------------------------------------------------


@dataclass
class Worker:
    """One `phasestream run NAME` process at a time, restarted after each kill."""

    name: str
    group: str  # the consumer group whose assignment shows it is consuming
    env: dict[str, str]
    logs_dir: Path
    logs: list[Path] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.logs.append(self.logs_dir / f"{self.name}-{len(self.logs)}.log")
        with self.logs[-1].open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "phasestream", "run", self.name], env=self.env,
                stdout=out, stderr=out)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def assigned(self) -> bool:
        pattern = rf"{re.escape(self.group)}: [1-9]\d* partitions at stored positions"
        return bool(re.search(pattern, self.logs[-1].read_text(errors="replace")))

    async def kill(self) -> None:
        assert self.process is not None
        assert self.alive(), f"{self.name} died:\n{self.tail()}"
        self.process.kill()  # SIGKILL: no cleanup, anywhere in or between its commits
        code = await asyncio.to_thread(self.process.wait)
        assert code == -signal.SIGKILL, self.tail()

    async def stop(self) -> int | None:
        """SIGTERM and the exit code; None if it had to be killed after 30 s."""
        if self.process is None:
            return None
        self.process.terminate()
        try:
            return await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
            return None

    def tail(self, chars: int = 2500) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                         for log in self.logs[-2:] if log.exists())


def workers(settings: Settings, logs_dir: Path) -> dict[str, Worker]:
    env = settings_env(settings)
    groups = {"audit": settings.audit_consumer_group, "sla": settings.sla_consumer_group,
              "metrics": settings.metrics_consumer_group,
              "rollback": settings.rollback_consumer_group}
    return {name: Worker(name, groups[name], env, logs_dir) for name in CONSUMERS}


async def until_assigned(worker: Worker, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not worker.assigned():
        assert worker.alive(), f"{worker.name} died while starting:\n{worker.tail()}"
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# --- what a fault lands on ----------------------------------------------------------


Risk = Callable[[], Awaitable[dict[str, int]]]


def at_risk(conn: asyncpg.Connection[asyncpg.Record], settings: Settings,
            scenario: Scenario) -> dict[str, Risk]:
    """Per consumer, what a fault would hit right now, asked on ``conn`` (one at a time):
    a kill is aimed at a moment where every quantity is > 0 (the rollback commander's:
    retries scheduled while commands wait in the outbox, so that the kill may land between
    a send and its removal)."""
    pending = ("SELECT count(*) FROM sla_open_phases AS o JOIN workflow_phase_sla_thresholds "
               "AS t USING (phase_number) WHERE NOT o.overdue_reported AND o.started_at + "
               "(t.threshold_ms + $1) * interval '1 ms' > now()")
    scheduled = ("SELECT count(*) FROM rollback_commands "
                 "WHERE kind = 'retry' AND issued_at IS NULL")

    async def count(sql: str, *args: object) -> int:
        value: int = await conn.fetchval(sql, *args)
        return value

    async def backlog(sql: str) -> dict[str, int]:
        return {"backlog": len(scenario.events) - await count(sql)}

    async def deadlines() -> dict[str, int]:
        return {"deadlines": await count(pending, settings.sla_grace_ms)}

    async def retries() -> dict[str, int]:
        return {"retries": await count(scheduled),
                "outbox": await count("SELECT count(*) FROM phasestream_outbox")}

    return {
        "audit": lambda: backlog(
            "SELECT count(*) FROM workflow_phase_logs WHERE status <> 'rolled_back'"),
        "metrics": lambda: backlog("SELECT count(*) FROM metrics_data "
                                   "WHERE metric_name <> 'workflow_phase_rolled_back_total'"),
        "sla": deadlines,
        "rollback": retries,
    }


@dataclass(frozen=True)
class Kill:
    consumer: str
    number: int
    exposed: dict[str, int]  # what was at risk at the kill

    def __str__(self) -> str:
        return f"{self.consumer}#{self.number}{self.exposed}"


Pin = Callable[[], contextlib.AbstractAsyncContextManager[bool]]


async def kill_storm(worker: Worker, risk: Risk, rng: random.Random, kills: int,
                     record: list[Kill], *, pin: Pin | None = None) -> None:
    """Kill -9 ``worker`` ``kills`` times and restart it: each kill at a random moment once
    it consumes, preferably while it has work at risk; with ``pin``, every other kill
    instead while ``pin`` holds it at a chosen point."""
    plan = [(rng.uniform(0.2, 2.0), rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.5))
            for _ in range(kills)]
    for number, (delay, jitter, pause) in enumerate(plan):
        await until_assigned(worker, timeout_s=15)  # else killed while joining: a kill too
        await asyncio.sleep(delay)
        if pin is not None and number % 2:
            async with pin() as pinned:
                exposed = await risk() | {"pinned": int(pinned)}
                await worker.kill()
        else:
            for _ in range(400):  # up to ~4 s for work to be at risk
                if all((await risk()).values()):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(jitter)
            exposed = await risk()
            await worker.kill()
        record.append(Kill(worker.name, number, exposed))
        await asyncio.sleep(pause)
        worker.start()


@contextlib.asynccontextmanager
async def relay_pinned(conn: asyncpg.Connection[asyncpg.Record],
                       timeout_s: float = 6.0) -> AsyncIterator[bool]:
    """Pin the rollback commander's outbox relay where it has sent items and not yet
    forgotten them: hold share locks on the outbox's rows (and on their send-attempt rows,
    where the relay records those), taken again every few milliseconds, until the relay
    blocks on one (forgetting items, or recording an attempt). Yields whether it did within
    ``timeout_s``. When the block ends, after the caller's kill, the blocked statements'
    backends are terminated, then the locks released: a backend waiting for a lock does
    not notice that its client died, and would otherwise complete the statement."""
    attempts = await conn.fetchval(
        "SELECT to_regclass('phasestream_outbox_attempts') IS NOT NULL")
    locks = ["SELECT count(*) FROM (SELECT 1 FROM phasestream_outbox "
             "FOR SHARE SKIP LOCKED) AS o"]
    if attempts:
        locks.append("SELECT count(*) FROM (SELECT 1 FROM phasestream_outbox_attempts WHERE "
                     "id IN (SELECT id FROM phasestream_outbox) FOR SHARE SKIP LOCKED) AS a")
    blocked = ("SELECT pid FROM pg_stat_activity "
               "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))")
    deadline = time.monotonic() + timeout_s
    transaction = conn.transaction()
    await transaction.start()
    pinned = False
    try:
        while True:
            for lock in locks:
                await conn.fetchval(lock)
            await asyncio.sleep(0.02)
            pinned = bool(await conn.fetch(blocked))
            if pinned or time.monotonic() > deadline:
                break
            await transaction.rollback()
            transaction = conn.transaction()
            await transaction.start()
        yield pinned
    finally:
        if pinned:
            # With a timeout, pg_terminate_backend waits until the backend is gone.
            await conn.fetchval(
                f"SELECT count(pg_terminate_backend(pid, 5000)) FROM ({blocked}) AS b")
        await transaction.rollback()


@dataclass(frozen=True)
class Cut:
    terminated: int  # backends terminated
    busy: int  # of which in a query or a transaction
    exposed: dict[str, int]  # SLA deadlines pending, retries scheduled

    def __str__(self) -> str:
        return f"{self.terminated}({self.busy} busy){self.exposed}"


async def cut_connections(admin: asyncpg.Connection[asyncpg.Record], database: str,
                          risks: dict[str, Risk]) -> Cut:
    """Terminate every other backend connected to ``database``."""
    exposed = await risks["sla"]() | await risks["rollback"]()
    row = await admin.fetchrow(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS terminated, "
        "count(*) FILTER (WHERE state <> 'idle') AS busy FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    assert row is not None
    return Cut(row["terminated"], row["busy"], exposed)


def interrupted_writes(running: dict[str, Worker]) -> int:
    """Batches whose write a fault interrupted, as the consumers' logs tell."""
    return sum(log.read_text(errors="replace").count(": writing a batch failed")
               for worker in running.values() for log in worker.logs)


# --- waiting and checking -----------------------------------------------------------


async def quiet(settings: Settings, expected: Expected, running: dict[str, Worker],
                timeout_s: float) -> str | None:
    """Wait until every sink holds at least what is expected and nothing is in flight (no
    retry waiting, outboxes empty); None, or what was still missing at the timeout."""
    db = settings.database_url or ""
    queries = {
        AUDIT: "SELECT count(*) FROM workflow_phase_logs",
        METRICS: "SELECT count(*) FROM metrics_data",
        VIOLATIONS: "SELECT count(*) FROM workflow_phase_sla_violation_events",
        COMMANDS: "SELECT count(*) FROM rollback_commands WHERE issued_at IS NOT NULL",
    }
    in_flight = ("SELECT (SELECT count(*) FROM rollback_commands WHERE issued_at IS NULL) + "
                 "(SELECT count(*) FROM phasestream_outbox) + "
                 "(SELECT count(*) FROM sla_violation_outbox)")

    async def shortfall() -> dict[str, int]:
        for worker in running.values():
            assert worker.alive(), f"{worker.name} died:\n{worker.tail()}"
        missing = {sink: expected.count(sink) - await count_rows(db, sql)
                   for sink, sql in queries.items()}
        missing["in flight"] = await count_rows(db, in_flight)
        return {what: n for what, n in missing.items() if n > 0}

    try:
        await eventually(shortfall, lambda missing: not missing, timeout_s=timeout_s,
                         what="a quiet pipeline")
    except AssertionError as exc:
        return str(exc)
    await asyncio.sleep(1.0)  # a late duplicate would land now
    return None


async def stop_all(running: dict[str, Worker]) -> dict[str, int | None]:
    codes = await asyncio.gather(*(w.stop() for w in running.values()))
    return dict(zip(running, codes, strict=True))


def tails(running: dict[str, Worker]) -> str:
    return "\n".join(w.tail() for w in running.values())


async def set_thresholds(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        await conn.executemany("UPDATE workflow_phase_sla_thresholds SET threshold_ms = $2 "
                               "WHERE phase_number = $1", list(THRESHOLDS.items()))
    finally:
        await conn.close()


async def publish_waves(settings: Settings, scenario: Scenario, rng: random.Random, *,
                        waves: int, workflows: int, pause_s: tuple[float, float],
                        until: asyncio.Event | None = None) -> None:
    """Publish ``waves`` waves (more while ``until`` is unset, up to twice as many)."""
    async with PhaseEventPublisher(settings.bootstrap_servers,
                                   settings.phase_events_topic) as pub:
        for number in range(2 * waves):
            if number >= waves and (until is None or until.is_set()):
                return
            await pub.publish_many(scenario.wave(number, workflows))
            await asyncio.sleep(rng.uniform(*pause_s))


# --- the scenarios ------------------------------------------------------------------


async def test_kill_9_storm_across_the_pipeline_loses_and_duplicates_nothing(
        settings: Settings, tmp_path: Path) -> None:
    print(f"seed {SEED}")
    configured = pipeline_settings(settings)
    db = configured.database_url or ""
    await set_thresholds(db)
    scenario = Scenario(random.Random(f"{SEED}-data"))
    rng = random.Random(f"{SEED}-faults")
    running = workers(configured, tmp_path)
    probes = [await asyncpg.connect(db) for _ in running]  # one per storm
    kills: list[Kill] = []
    began = time.monotonic()
    storms_done = asyncio.Event()
    publishing: asyncio.Task[None] | None = None
    for worker in running.values():
        worker.start()
    try:
        for worker in running.values():
            assert await until_assigned(worker, timeout_s=30), worker.tail()
        publishing = asyncio.create_task(publish_waves(
            configured, scenario, rng, waves=5, workflows=70, pause_s=(1.5, 2.5),
            until=storms_done))
        await asyncio.gather(*(kill_storm(
            worker, at_risk(probe, configured, scenario)[name], random.Random(
                f"{SEED}-{name}"), KILLS[name], kills,
            pin=functools.partial(relay_pinned, probe) if name == "rollback" else None)
            for probe, (name, worker) in zip(probes, running.items(), strict=True)))
        storms_done.set()
        await publishing
        storm_s = time.monotonic() - began
        expected = expect(scenario.published(), thresholds=THRESHOLDS,
                          grace_ms=configured.sla_grace_ms, policy=rollback_policy(configured))
        stuck = await quiet(configured, expected, running, timeout_s=60)
        context = (f"seed {SEED}, {len(scenario.events)} events published, storm "
                   f"{storm_s:.1f} s, kills (consumer#number{{at risk}}): "
                   f"{' '.join(map(str, kills))}, batch writes interrupted "
                   f"{interrupted_writes(running)}")
        report = await check(configured, expected, context)
    finally:
        if publishing is not None and not publishing.done():
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
        for probe in probes:
            await probe.close()
        codes = await stop_all(running)
    print(report)
    assert stuck is None, f"{stuck}\n{report}\n{tails(running)}"
    assert report.ok, f"{report}\n{tails(running)}"
    assert set(codes.values()) == {0}, f"{codes}\n{report.context}\n{tails(running)}"
    assert len(kills) == sum(KILLS.values()), report.context
    # The kills the issue names: SLA deadlines pending, retries scheduled.
    for name, what in (("sla", "deadlines"), ("rollback", "retries")):
        exposed = [k for k in kills if k.consumer == name and k.exposed[what] > 0]
        assert len(exposed) >= 2, f"few {name} kills with {what} pending: {report.context}"
    # And the relay caught between publishing commands and forgetting them, at least once.
    assert any(k.exposed.get("pinned") for k in kills), f"relay never pinned: {report.context}"


async def test_postgres_connections_cut_across_the_pipeline_lose_and_duplicate_nothing(
        settings: Settings, tmp_path: Path) -> None:
    print(f"seed {SEED}")
    configured = pipeline_settings(settings)
    db = configured.database_url or ""
    await set_thresholds(db)
    scenario = Scenario(random.Random(f"{SEED}-data-cuts"))
    rng = random.Random(f"{SEED}-cuts")
    running = workers(configured, tmp_path)
    cuts: list[Cut] = []
    database = urlsplit(db).path.lstrip("/")
    admin = await asyncpg.connect(db)  # never cut: it does the cutting
    risks = at_risk(admin, configured, scenario)
    for worker in running.values():
        worker.start()
    try:
        for worker in running.values():
            assert await until_assigned(worker, timeout_s=30), worker.tail()
        async with PhaseEventPublisher(configured.bootstrap_servers,
                                       configured.phase_events_topic) as pub:
            for number in range(5):
                # Cut while the wave is being sent and consumed, then once more later, when
                # only the timers (retries, deadlines) and the relays are at work.
                sending = asyncio.create_task(pub.publish_many(scenario.wave(number, 60)))
                for pause in (rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4),
                              rng.uniform(0.5, 1.5)):
                    await asyncio.sleep(pause)
                    cuts.append(await cut_connections(admin, database, risks))
                await sending
        expected = expect(scenario.published(), thresholds=THRESHOLDS,
                          grace_ms=configured.sla_grace_ms, policy=rollback_policy(configured))
        stuck = await quiet(configured, expected, running, timeout_s=60)
        context = (f"seed {SEED}, {len(scenario.events)} events published, cuts "
                   f"(backends terminated): {' '.join(map(str, cuts))}, batch writes "
                   f"interrupted {interrupted_writes(running)}")
        report = await check(configured, expected, context)
    finally:
        await admin.close()
        codes = await stop_all(running)
    print(report)
    assert stuck is None, f"{stuck}\n{report}\n{tails(running)}"
    assert report.ok, f"{report}\n{tails(running)}"
    assert set(codes.values()) == {0}, f"{codes}\n{report.context}\n{tails(running)}"
    assert interrupted_writes(running) >= 3, f"few cuts hit a batch: {report.context}"


def test_the_checker_reports_lost_duplicated_unexpected_and_differing_rows() -> None:
    """The checker can fail: a perfect observation passes, and each kind of damage is
    reported in the sink where it was done, and only there."""
    scenario = Scenario(random.Random(SEED))
    for number in range(3):
        scenario.wave(number, workflows=30)
    published = scenario.published()
    assert published.rollback_failures
    assert published.never_finish
    assert published.late
    expected = expect(published, thresholds=THRESHOLDS, grace_ms=500,
                      policy=rollback_policy(pipeline_settings(Settings())))
    perfect = {sink: list(rows.items()) for sink, rows in expected.rows.items()}
    assert compare(expected, Observed(perfect)).ok

    damaged = {sink: list(rows) for sink, rows in perfect.items()}
    lost = damaged[AUDIT].pop()
    damaged[COMMANDS].append(damaged[COMMANDS][0])
    damaged[VIOLATIONS].append((str(uuid.uuid4()), ("overdue", 1)))
    damaged[VIOLATION_TOPIC] += damaged[VIOLATION_TOPIC][-1:]
    metric_id, (name, _) = damaged[METRICS][0]
    damaged[METRICS][0] = (metric_id, (name, 99.0))
    report = compare(expected, Observed(damaged), f"seed {SEED}")
    assert not report.ok
    assert report.sink(AUDIT).lost == (lost[0],)
    assert report.sink(COMMANDS).duplicated == ((damaged[COMMANDS][0][0], 2),)
    assert len(report.sink(VIOLATIONS).unexpected) == 1
    assert len(report.sink(METRICS).differing) == 1
    assert len(report.sink(VIOLATION_TOPIC).duplicated) == 1
    assert not any(s.ok for s in report.sinks)
    assert "lost 1" in str(report)
    assert f"seed {SEED}" in str(report)
