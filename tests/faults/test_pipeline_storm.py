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
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

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
    check,
    compare,
    expect,
)
from tests.faults.injection import Cut, Kill, at_risk, cut_connections, kill_storm, relay_pinned
from tests.faults.scenario import THRESHOLDS, Scenario
from tests.faults.workers import Worker
from tests.support import count_rows, eventually

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("PHASESTREAM_FAULT_SEED", "20261206"))
CONSUMERS = ("audit", "sla", "metrics", "rollback")
#: Kills per consumer; the commander's relay has the narrowest window (send to removal).
KILLS = {"audit": 3, "sla": 3, "metrics": 3, "rollback": 4}


def pipeline_settings(settings: Settings) -> Settings:
    """Retries on a short, unjittered schedule (due 2 s, then 4 s after the rollback), so
    that scheduled retries exist whenever a kill or a cut lands; small batches, so that
    faults land mid-batch."""
    return settings.model_copy(update={
        "retry_enabled": True, "retry_interval_ms": 2000, "retry_backoff_rate": 2.0,
        "retry_max_attempts": 2, "retry_jitter": "none", "rollback_max_per_workflow": 3,
        "batch_max_records": 100})


def workers(settings: Settings, logs_dir: Path) -> dict[str, Worker]:
    env = settings_env(settings)
    groups = {"audit": settings.audit_consumer_group, "sla": settings.sla_consumer_group,
              "metrics": settings.metrics_consumer_group,
              "rollback": settings.rollback_consumer_group}
    return {name: Worker(name, groups[name], env, logs_dir) for name in CONSUMERS}


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
            assert await worker.until_assigned(timeout_s=30), worker.tail()
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
            assert await worker.until_assigned(timeout_s=30), worker.tail()
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
