"""The SLA monitor against the real broker and Postgres, with short thresholds."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from models.phases import PhaseStatus
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.background import consumers_running
from tests.conftest import settings_env
from tests.events import make_event
from tests.topics import read_to_highwater
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration
VIOLATIONS = "SELECT count(*) FROM workflow_phase_sla_violation_events"


async def set_threshold(db: str, phase: int, ms: int) -> None:
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            "UPDATE workflow_phase_sla_thresholds SET threshold_ms = $2 WHERE phase_number = $1",
            phase,
            ms,
        )
    finally:
        await conn.close()


async def violations(db: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db)
    try:
        return await conn.fetch(
            "SELECT * FROM workflow_phase_sla_violation_events ORDER BY workflow_id, kind"
        )
    finally:
        await conn.close()


def publisher(settings: Settings) -> PhaseEventPublisher:
    return PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic)


async def test_overdue_reported_within_seconds_of_the_deadline_and_on_time_is_not(
    settings: Settings,
) -> None:
    db = settings.database_url or ""
    await set_threshold(db, 5, 2000)
    now = datetime.now(UTC)
    slow = make_event("wf-slow", 5, PhaseStatus.STARTED, timestamp=now)
    quick = make_event("wf-quick", 5, PhaseStatus.STARTED, timestamp=now)
    quick_end = make_event(
        "wf-quick",
        5,
        PhaseStatus.COMPLETED,
        duration_ms=300,
        timestamp=now + timedelta(milliseconds=300),
    )
    async with consumers_running(settings, "sla"), publisher(settings) as pub:
        await pub.publish_many([slow, quick, quick_end])
        found = await eventually(
            lambda: violations(db),
            lambda rows: len(rows) >= 1,
            timeout_s=20,
            what="the overdue violation",
        )
        reported_after = (datetime.now(UTC) - now).total_seconds()
        await asyncio.sleep(1.5)  # nothing else may follow: the quick phase was on time
        found = await violations(db)
    assert [(r["workflow_id"], r["kind"], r["threshold_ms"]) for r in found] == [
        ("wf-slow", "overdue", 2000)
    ]
    # Deadline 2 s + grace 0.5 s; checks every 0.2 s: reported within a few seconds of it.
    assert 2.5 <= reported_after < 6.0, reported_after
    assert found[0]["started_event_id"] == slow.event_id
    assert found[0]["elapsed_ms"] >= 2500
    view = await count_rows(
        db,
        "SELECT count(*) FROM workflow_phase_sla_violations "
        "WHERE kind = 'overdue' AND workflow_id = 'wf-slow'",
    )
    assert view == 1  # the view shows the still-running overdue phase


async def test_late_completion_failure_and_out_of_order_end(settings: Settings) -> None:
    db = settings.database_url or ""
    await set_threshold(db, 3, 1000)
    t0 = datetime.now(UTC) - timedelta(seconds=30)

    def run(
        workflow: str,
        status: PhaseStatus,
        duration: int,
        end_first: bool = False,
    ) -> list[object]:
        start = make_event(workflow, 3, PhaseStatus.STARTED, timestamp=t0)
        end = make_event(
            workflow,
            3,
            status,
            duration_ms=duration,
            timestamp=t0 + timedelta(milliseconds=duration),
        )
        return [end, start] if end_first else [start, end]

    events = [
        *run("wf-late", PhaseStatus.COMPLETED, 1500),
        *run("wf-failed-late", PhaseStatus.FAILED, 4000),
        *run("wf-ok", PhaseStatus.COMPLETED, 1000),  # exactly at the threshold
        *run("wf-reordered", PhaseStatus.COMPLETED, 2500, end_first=True),
        *run("wf-reordered-ok", PhaseStatus.COMPLETED, 200, end_first=True),
    ]
    async with consumers_running(settings, "sla"), publisher(settings) as pub:
        await pub.publish_many(events)  # type: ignore[arg-type]
        await eventually(lambda: count_rows(db, VIOLATIONS), lambda n: n >= 3, timeout_s=20)
        await asyncio.sleep(1.5)  # late ones only; on-time phases are never overdue later
    found = [(r["workflow_id"], r["kind"], r["elapsed_ms"]) for r in await violations(db)]
    assert found == [
        ("wf-failed-late", "late_failed", 4000),
        ("wf-late", "late_completed", 1500),
        ("wf-reordered", "late_completed", 2500),
    ]
    assert await count_rows(db, "SELECT count(*) FROM sla_open_phases") == 0
    assert await count_rows(db, "SELECT count(*) FROM sla_early_terminals") == 0
    assert await count_rows(db, "SELECT count(*) FROM sla_violation_outbox") == 0


def start_sla(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "phasestream", "run", "sla"],
            env=settings_env(settings),
            stdout=out,
            stderr=out,
        )


async def test_kill_9_with_pending_deadlines_reports_each_once(
    settings: Settings, tmp_path: Path
) -> None:
    db = settings.database_url or ""
    await set_threshold(db, 2, 4000)
    started = [
        make_event(f"wf-{i}", 2, PhaseStatus.STARTED, timestamp=datetime.now(UTC))
        for i in range(200)
    ]
    log = tmp_path / "sla.log"
    process = start_sla(settings, log)
    async with publisher(settings) as pub:
        await pub.publish_many(started)
    await eventually(
        lambda: count_rows(db, "SELECT count(*) FROM sla_open_phases"),
        lambda n: n == len(started),
        timeout_s=30,
        what="all phases open",
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert await count_rows(db, VIOLATIONS) == 0, "killed after the deadlines: proves nothing"
    began = time.monotonic()
    process = start_sla(settings, log)
    try:
        await eventually(
            lambda: count_rows(db, VIOLATIONS),
            lambda n: n >= len(started),
            timeout_s=40,
            what="every deadline reported",
        )
        await asyncio.sleep(2)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
    rows = await violations(db)
    assert len(rows) == len(started)
    assert {r["started_event_id"] for r in rows} == {e.event_id for e in started}
    assert {r["kind"] for r in rows} == {"overdue"}
    assert time.monotonic() - began < 40


async def test_judging_the_same_events_again_publishes_no_violation_twice(
    settings: Settings,
) -> None:
    """The monitor's positions reset (its events read again from offset 0): the violations
    it decides again carry the same ids, and the ledger keeps them out of the outbox."""
    db = settings.database_url or ""
    await set_threshold(db, 3, 1000)
    t0 = datetime.now(UTC) - timedelta(seconds=30)
    start = make_event("wf-again", 3, PhaseStatus.STARTED, timestamp=t0)
    end = make_event(
        "wf-again",
        3,
        PhaseStatus.COMPLETED,
        duration_ms=1500,
        timestamp=t0 + timedelta(milliseconds=1500),
    )
    positions = (
        "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions "
        "WHERE consumer = $1"
    )
    async with publisher(settings) as pub:
        await pub.publish_many([start, end])
    for _ in range(2):  # the second time from offset 0 again
        async with consumers_running(settings, "sla"):
            await eventually(
                lambda: count_rows(db, positions, settings.sla_consumer_group),
                lambda n: n == 2,
                what="the monitor at the end of its input",
            )
            await eventually(
                lambda: count_rows(db, "SELECT count(*) FROM sla_violation_outbox"),
                lambda n: n == 0,
                what="the outbox drained",
            )
        conn = await asyncpg.connect(db)
        try:
            await conn.execute(
                "DELETE FROM phasestream_consumer_positions WHERE consumer = $1",
                settings.sla_consumer_group,
            )
        finally:
            await conn.close()
    records = await read_to_highwater(settings, settings.sla_violations_topic)
    assert len(records) == 1, [r.value for r in records]
    assert await count_rows(db, VIOLATIONS) == 1
    assert await count_rows(db, "SELECT count(*) FROM sla_violations_decided") == 1
