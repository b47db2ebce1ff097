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
import itertools
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
from tests.faults.checker import (
    AUDIT,
    COMMANDS,
    METRICS,
    VIOLATION_TOPIC,
    VIOLATIONS,
    Observed,
    check,
    compare,
    expect,
)
from tests.faults.injection import Cut, Kill, at_risk, cut_connections, kill_storm, relay_pinned
from tests.faults.pipeline import (
    SEED,
    interrupted_writes,
    pipeline_settings,
    quiet,
    set_thresholds,
    started,
    stop_all,
    workers,
)
from tests.faults.scenario import THRESHOLDS, Scenario
from tests.faults.workers import tails

pytestmark = pytest.mark.integration

#: Kills per consumer; the commander's relay has the narrowest window (send to removal).
KILLS = {"audit": 3, "sla": 3, "metrics": 3, "rollback": 4}


async def publish_waves(
    settings: Settings,
    scenario: Scenario,
    rng: random.Random,
    *,
    waves: int,
    workflows: int,
    pause_s: tuple[float, float],
    until: asyncio.Event | None = None,
) -> None:
    """Publish ``waves`` waves, then smaller ones (a seventh of the workflows) until
    ``until`` is set: however long the restarts take under load, deadlines are pending and
    retries scheduled whenever a kill lands, for few more events."""
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        for number in itertools.count():
            if number >= waves and (until is None or until.is_set()):
                return
            size = workflows if number < waves else max(1, workflows // 7)
            await pub.publish_many(scenario.wave(number, size))
            await asyncio.sleep(rng.uniform(*pause_s))


# --- the scenarios ------------------------------------------------------------------


async def test_kill_9_storm_across_the_pipeline_loses_and_duplicates_nothing(
    settings: Settings, tmp_path: Path
) -> None:
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
    try:
        await started(running, timeout_s=30)
        publishing = asyncio.create_task(
            publish_waves(
                configured,
                scenario,
                rng,
                waves=5,
                workflows=70,
                pause_s=(1.5, 2.5),
                until=storms_done,
            )
        )
        await asyncio.gather(
            *(
                kill_storm(
                    worker,
                    at_risk(probe, configured, scenario)[name],
                    random.Random(f"{SEED}-{name}"),
                    KILLS[name],
                    kills,
                    pin=functools.partial(relay_pinned, probe) if name == "rollback" else None,
                )
                for probe, (name, worker) in zip(probes, running.items(), strict=True)
            )
        )
        storms_done.set()
        await publishing
        storm_s = time.monotonic() - began
        expected = expect(
            scenario.published(),
            thresholds=THRESHOLDS,
            grace_ms=configured.sla_grace_ms,
            policy=rollback_policy(configured),
        )
        stuck = await quiet(configured, expected, running, timeout_s=60)
        context = (
            f"seed {SEED}, {len(scenario.events)} events published, storm "
            f"{storm_s:.1f} s, kills (consumer#number{{at risk}}): "
            f"{' '.join(map(str, kills))}, batch writes interrupted "
            f"{interrupted_writes(running.values())}"
        )
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
    assert stuck is None, f"{stuck}\n{report}\n{tails(running.values())}"
    assert report.ok, f"{report}\n{tails(running.values())}"
    assert set(codes.values()) == {0}, f"{codes}\n{report.context}\n{tails(running.values())}"
    assert len(kills) == sum(KILLS.values()), report.context
    # The kills the issue names: SLA deadlines pending, retries scheduled.
    for name, what in (("sla", "deadlines"), ("rollback", "retries")):
        exposed = [k for k in kills if k.consumer == name and k.exposed[what] > 0]
        assert len(exposed) >= 2, f"few {name} kills with {what} pending: {report.context}"
    # And the relay caught between publishing commands and forgetting them, at least once.
    assert any(k.exposed.get("pinned") for k in kills), f"relay never pinned: {report.context}"


async def test_postgres_connections_cut_across_the_pipeline_lose_and_duplicate_nothing(
    settings: Settings, tmp_path: Path
) -> None:
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
    try:
        await started(running, timeout_s=30)
        async with PhaseEventPublisher(
            configured.bootstrap_servers, configured.phase_events_topic
        ) as pub:
            for number in range(5):
                # Cut while the wave is being sent and consumed, then once more later, when
                # only the timers (retries, deadlines) and the relays are at work.
                sending = asyncio.create_task(pub.publish_many(scenario.wave(number, 60)))
                for pause in (
                    rng.uniform(0.05, 0.4),
                    rng.uniform(0.05, 0.4),
                    rng.uniform(0.5, 1.5),
                ):
                    await asyncio.sleep(pause)
                    cuts.append(await cut_connections(admin, database, risks))
                await sending
        expected = expect(
            scenario.published(),
            thresholds=THRESHOLDS,
            grace_ms=configured.sla_grace_ms,
            policy=rollback_policy(configured),
        )
        stuck = await quiet(configured, expected, running, timeout_s=60)
        context = (
            f"seed {SEED}, {len(scenario.events)} events published, cuts "
            f"(backends terminated): {' '.join(map(str, cuts))}, batch writes "
            f"interrupted {interrupted_writes(running.values())}"
        )
        report = await check(configured, expected, context)
    finally:
        await admin.close()
        codes = await stop_all(running)
    print(report)
    assert stuck is None, f"{stuck}\n{report}\n{tails(running.values())}"
    assert report.ok, f"{report}\n{tails(running.values())}"
    assert set(codes.values()) == {0}, f"{codes}\n{report.context}\n{tails(running.values())}"
    assert interrupted_writes(running.values()) >= 3, f"few cuts hit a batch: {report.context}"


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
    expected = expect(
        published,
        thresholds=THRESHOLDS,
        grace_ms=500,
        policy=rollback_policy(pipeline_settings(Settings())),
    )
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
