"""The rollback commander against the real broker and Postgres."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from models.command_codec import decode_command
from models.commands import CommandKind
from models.phases import PhaseStatus
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.background import consumers_running
from tests.conftest import settings_env
from tests.events import make_event
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration
LEDGER = "SELECT count(*) FROM rollback_commands"


async def read_topic(settings: Settings, topic: str, settle_s: float = 1.0) -> list[Any]:
    """Every record of ``topic`` (read until nothing new arrives for ``settle_s``)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        quiet = 0.0
        while quiet < settle_s or not consumer.assignment():
            batch = await consumer.getmany(timeout_ms=250)
            records = [r for rs in batch.values() for r in rs]
            found += records
            quiet = 0.0 if records else quiet + 0.25
    finally:
        await consumer.stop()
    return found


def commands(records: list[Any]) -> list[Any]:
    return [decode_command(r.key, r.value) for r in records]


async def test_failed_phase_3_gives_one_command_and_one_rolled_back_row_and_replay_none(
    settings: Settings,
) -> None:
    db = settings.database_url or ""
    failed = make_event("wf-r", 3, PhaseStatus.FAILED, duration_ms=50, error_message="boom")
    first_phase = make_event("wf-1st", 1, PhaseStatus.FAILED, duration_ms=5)
    async with (
        consumers_running(settings, "rollback", "audit"),
        PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub,
    ):
        await pub.publish_many([failed, first_phase])
        await eventually(
            lambda: count_rows(
                db, "SELECT count(*) FROM workflow_phase_logs WHERE status = 'rolled_back'"
            ),
            lambda n: n == 1,
            timeout_s=30,
        )
    issued = commands(await read_topic(settings, settings.rollback_commands_topic))
    assert [
        (c.kind, c.workflow_id, c.failed_phase, c.rollback_to_phase, c.reason) for c in issued
    ] == [(CommandKind.ROLLBACK, "wf-r", 3, 2, "boom")]
    conn = await asyncpg.connect(db)
    row = await conn.fetchrow("SELECT * FROM workflow_phase_logs WHERE status = 'rolled_back'")
    await conn.close()
    assert row is not None
    assert (
        row["workflow_id"],
        row["phase_number"],
        row["previous_phase"],
        row["rollback_triggered"],
        row["rollback_to_phase"],
    ) == ("wf-r", 3, 3, True, 2)

    # Replay the log from offset 0: forget the commander's positions and run it again.
    await count_rows(
        db,
        "WITH d AS (DELETE FROM phasestream_consumer_positions WHERE "
        "consumer = $1 RETURNING 1) SELECT count(*) FROM d",
        settings.rollback_consumer_group,
    )
    async with consumers_running(settings, "rollback"):
        await eventually(
            lambda: count_rows(
                db,
                "SELECT count(*) FROM phasestream_consumer_positions WHERE consumer = $1",
                settings.rollback_consumer_group,
            ),
            lambda n: n > 0,
            timeout_s=30,
        )
        await asyncio.sleep(1.0)
    again = commands(await read_topic(settings, settings.rollback_commands_topic))
    assert len(again) == 1
    assert {c.command_id for c in again} == {issued[0].command_id}
    assert (
        await count_rows(
            db, "SELECT count(*) FROM workflow_phase_logs WHERE status = 'rolled_back'"
        )
        == 1
    )
    assert await count_rows(db, LEDGER) == 1


async def test_retries_issue_on_schedule_and_stop_after_max_attempts(settings: Settings) -> None:
    configured = settings.model_copy(
        update={
            "retry_enabled": True,
            "retry_interval_ms": 300,
            "retry_backoff_rate": 2.0,
            "retry_max_attempts": 2,
            "retry_jitter": "none",
        }
    )
    db = settings.database_url or ""
    async with (
        consumers_running(configured, "rollback"),
        PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub,
    ):
        # rollback + retry, rollback + retry, then rollback + gave_up
        for expected_ledger in (2, 4, 6):
            await pub.publish(make_event("wf-retry", 4, PhaseStatus.FAILED, duration_ms=1))
            await eventually(lambda: count_rows(db, LEDGER), _equals(expected_ledger), timeout_s=20)
        await eventually(
            lambda: count_rows(
                db, "SELECT count(*) FROM rollback_commands WHERE issued_at IS NULL"
            ),
            lambda n: n == 0,
            timeout_s=20,
            what="every retry issued",
        )
        await eventually(
            lambda: count_rows(db, "SELECT count(*) FROM phasestream_outbox"),
            _equals(0),
            timeout_s=10,
            what="every command published",
        )
    conn = await asyncpg.connect(db)
    rows = await conn.fetch(
        "SELECT kind, attempt, decided_at, due_at, issued_at "
        "FROM rollback_commands ORDER BY decided_at, kind"
    )
    await conn.close()
    assert [(r["kind"], r["attempt"]) for r in rows] == [
        ("retry", 1),
        ("rollback", 0),
        ("retry", 2),
        ("rollback", 0),
        ("gave_up", 2),
        ("rollback", 0),
    ]  # gave up after 2 attempts
    retries = [r for r in rows if r["kind"] == "retry"]
    for retry, delay_ms in zip(retries, (300, 600), strict=True):
        assert (retry["due_at"] - retry["decided_at"]).total_seconds() * 1000 == delay_ms
        assert retry["issued_at"] >= retry["due_at"]  # never before its time
    issued = commands(await read_topic(settings, settings.rollback_commands_topic))
    kinds = sorted(c.kind.value for c in issued)
    assert kinds == ["gave_up", "retry", "retry", "rollback", "rollback", "rollback"]


def _equals(count: int) -> Any:
    return lambda n: n == count


async def test_kill_9_between_scheduling_and_issuing_a_retry_issues_it_once(
    settings: Settings, tmp_path: Path
) -> None:
    configured = settings.model_copy(
        update={"retry_enabled": True, "retry_interval_ms": 5000, "retry_jitter": "none"}
    )
    db = settings.database_url or ""
    log = tmp_path / "rollback.log"
    env = settings_env(configured)

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "phasestream", "run", "rollback"],
                env=env,
                stdout=out,
                stderr=out,
            )

    process = start()
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish(make_event("wf-k", 2, PhaseStatus.FAILED, duration_ms=1))
    await eventually(
        lambda: count_rows(
            db, "SELECT count(*) FROM rollback_commands WHERE kind = 'retry' AND issued_at IS NULL"
        ),
        _equals(1),
        timeout_s=30,
        what="the retry scheduled",
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    process = start()
    try:
        await eventually(
            lambda: count_rows(
                db, "SELECT count(*) FROM rollback_commands WHERE issued_at IS NOT NULL"
            ),
            _equals(2),
            timeout_s=30,
            what="the retry issued after the restart",
        )
        await eventually(
            lambda: count_rows(db, "SELECT count(*) FROM phasestream_outbox"),
            _equals(0),
            timeout_s=10,
        )
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
    issued = commands(await read_topic(settings, settings.rollback_commands_topic))
    assert sorted(c.kind.value for c in issued) == ["retry", "rollback"]
    assert len({c.command_id for c in issued}) == 2
