"""A replay never deletes history the log no longer holds (issue 10, part 1).

The embedded broker restarts empty, and retention deletes old records: the table is the
long-term record. Here the "restarted" log is a fresh topic that holds only what was
published after the restart (and, for the retention case, only the later part of what came
before); the live consumers stay the same, so the replay compares their table with it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from models.sla.violation import SlaViolation, ViolationKind
from models.sla.violation_codec import encode_violation
from phasestream.replay import replay
from phasestream.settings import Settings
from phasestream.wiring import create_topics
from projections.carry_over import RowKeys, carry_over
from projections.database import Connection
from projections.shadow import create_shadow, swap_in
from streams.kafka import KafkaCluster, producer_config
from streams.publisher import PhaseEventPublisher
from tests.background import consumers_running
from tests.events import many_events
from tests.integration.test_cli import cli
from tests.integration.test_replay import (
    AUDIT_SUM,
    METRICS_SUM,
    VIOLATIONS_SUM,
    consumed,
    fetchval,
)
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration

IDS = "SELECT count(*) FROM workflow_phase_event_ids"


async def restarted(settings: Settings, **topics: str) -> Settings:
    """The same consumers and database, reading a new, empty topic (a restarted broker)."""
    fresh = settings.model_copy(
        update={name: f"{getattr(settings, name)}-{uuid.uuid4().hex[:6]}" for name in topics}
    )
    await create_topics(fresh)
    return fresh


async def test_a_replay_after_the_log_was_lost_keeps_every_row_it_cannot_rebuild(
    settings: Settings,
) -> None:
    db = settings.database_url or ""
    before, again, after = many_events(200), many_events(30), many_events(40)
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many([*before, *again])
    async with consumers_running(settings, "audit", "metrics"):
        await consumed(db, settings.audit_consumer_group, 230)
        await consumed(db, settings.metrics_consumer_group, 230)

    # The broker restarts empty; `again` is published once more (as if retention had kept
    # only the newest records), `after` is new.
    fresh = await restarted(settings, phase_events_topic="")
    async with PhaseEventPublisher(fresh.bootstrap_servers, fresh.phase_events_topic) as pub:
        await pub.publish_many([*again, *after])
    async with consumers_running(fresh, "audit", "metrics"):
        await consumed(db, fresh.audit_consumer_group, 230 + 70)
        await consumed(db, fresh.metrics_consumer_group, 230 + 70)
    audit_sum, metrics_sum = await fetchval(db, AUDIT_SUM), await fetchval(db, METRICS_SUM)
    assert await count_rows(db) == 270

    notices: list[str] = []
    result = await replay(fresh, "audit", notice=notices.append)
    assert result.replayed == 70
    assert result.unreplayable.rows == 200  # `before`: in the table only
    assert not result.discarded
    assert result.log_starts == dict.fromkeys(range(fresh.topic_partitions), 0)
    assert len(notices) == 1
    assert notices[0].startswith(
        "keeping 200 rows not in the log (it starts at offset 0 on "
        f"all {fresh.topic_partitions} partitions"
    )
    oldest = min(e.timestamp for e in before).astimezone(UTC)
    assert f"event times {oldest:%Y-%m-%d %H:%M}" in notices[0]
    # Kept unchanged: the table is exactly what it was, its event ids too.
    assert await fetchval(db, AUDIT_SUM) == audit_sum
    assert await count_rows(db, IDS) == 270
    assert (await replay(fresh, "metrics")).unreplayable.rows == 200
    assert await fetchval(db, METRICS_SUM) == metrics_sum
    # A second replay finds the same: keeping is stable, nothing doubles.
    assert (await replay(fresh, "audit")).unreplayable.rows == 200
    assert await fetchval(db, AUDIT_SUM) == audit_sum

    # Only the explicit flag drops them, and says so first.
    notices.clear()
    dropped = await replay(fresh, "audit", discard_unreplayable=True, notice=notices.append)
    assert dropped.discarded
    assert dropped.unreplayable.rows == 200
    assert notices[0].startswith("dropping 200 rows not in the log")
    assert notices[0].endswith("(--discard-unreplayable)")
    assert await count_rows(db) == 70
    assert await count_rows(db, IDS) == 70
    kept = {str(e.event_id) for e in [*again, *after]}
    assert {str(r) for r in await ids_of(db)} == kept


async def ids_of(db: str) -> list[object]:
    conn = await asyncpg.connect(db)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM workflow_phase_logs")]
    finally:
        await conn.close()


async def test_the_replay_command_says_how_many_rows_it_kept_and_why(settings: Settings) -> None:
    db = settings.database_url or ""
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(many_events(120))
    async with consumers_running(settings, "audit"):
        await consumed(db, settings.audit_consumer_group, 120)
    fresh = await restarted(settings, phase_events_topic="")
    audit_sum = await fetchval(db, AUDIT_SUM)

    code, out, err = await cli(fresh, "replay", "audit")
    assert code == 0, err
    assert "audit: keeping 120 rows not in the log (it starts at offset 0" in out + err
    assert (
        "audit: replayed 0 events, kept 120 rows the log no longer holds and swapped "
        "the rebuilt table in" in out
    )
    assert await fetchval(db, AUDIT_SUM) == audit_sum

    code, out, err = await cli(fresh, "replay", "audit", "--discard-unreplayable")
    assert code == 0, err
    said = out + err
    assert said.index("audit: dropping 120 rows not in the log") < said.index("dropped 120")
    assert await count_rows(db) == 0


async def test_sla_violations_the_log_no_longer_holds_are_kept(settings: Settings) -> None:
    db = settings.database_url or ""
    start = datetime.now(UTC) - timedelta(hours=1)
    violations = [
        SlaViolation(
            uuid.uuid4(),
            ViolationKind.OVERDUE,
            f"wf-{i}",
            uuid.uuid4(),
            1 + i % 7,
            uuid.uuid4(),
            start,
            start + timedelta(minutes=i),
            300_000,
            30_000,
        )
        for i in range(30)
    ]
    await send_violations(settings, violations[:20])
    async with consumers_running(settings, "sla"):
        await consumed(db, settings.sla_violations_consumer_group, 20)
    fresh = await restarted(settings, sla_violations_topic="")
    await send_violations(fresh, violations[20:])
    async with consumers_running(fresh, "sla"):
        await eventually_rows(db, 30)
    checksum = await fetchval(db, VIOLATIONS_SUM)

    result = await replay(fresh, "sla-violations")
    assert (result.replayed, result.unreplayable.rows) == (10, 20)
    assert await fetchval(db, VIOLATIONS_SUM) == checksum


async def eventually_rows(db: str, count: int) -> None:
    await eventually(
        lambda: count_rows(db, "SELECT count(*) FROM workflow_phase_sla_violation_events"),
        lambda n: n == count,
        what=f"{count} violations projected",
    )


async def send_violations(settings: Settings, violations: list[SlaViolation]) -> None:
    producer = AIOKafkaProducer(
        **producer_config(KafkaCluster(settings.bootstrap_servers), client_id="t", linger_ms=5)
    )
    await producer.start()
    try:
        for v in violations:
            await producer.send_and_wait(
                settings.sla_violations_topic, encode_violation(v), key=v.key
            )
    finally:
        await producer.stop()


async def test_the_swap_keeps_what_the_live_consumer_committed_during_the_replay(
    settings: Settings,
) -> None:
    """A live batch committed after the replay's carry-over and before its swap: its rows
    reach the new table and its position stands (the consumer will not write it again)."""
    db, topic = settings.database_url or "", settings.phase_events_topic
    live, replaying = "live-consumer", "live-consumer-replay-x"
    keys = RowKeys("id", "recorded_at")
    conn = await asyncpg.connect(db)
    try:
        began: datetime = await conn.fetchval("SELECT now() - interval '1 minute'")
        shadow = await create_shadow(conn, "metrics_data")
        old, replayed, during = (uuid.uuid4() for _ in range(3))
        for table, ident, projected in (
            ("metrics_data", old, "now() - interval '1 hour'"),
            ("metrics_data", replayed, "now()"),
            (shadow, replayed, "now()"),
            ("metrics_data", during, "now()"),
        ):
            await conn.execute(
                f"INSERT INTO {table} (id, metric_name, metric_type, value, labels, "
                f"recorded_at, projected_at) VALUES ($1, 'm', 'counter', 1, '{{}}', now(), "
                f"{projected})",
                ident,
            )
        # Partition 0: the live consumer moved past the replay during it; partition 1: a
        # stale position from before the replay (the replay's replaces it).
        await conn.executemany(
            "INSERT INTO phasestream_consumer_positions (consumer, topic, partition, "
            "next_offset, updated_at) VALUES ($1, $2, $3, $4, $5)",
            [
                (replaying, topic, 0, 5, began),
                (live, topic, 0, 7, began + timedelta(seconds=30)),
                (replaying, topic, 1, 3, began),
                (live, topic, 1, 9, began - timedelta(hours=1)),
            ],
        )

        async def top_up(c: Connection) -> object:
            return await carry_over(
                c, table="metrics_data", shadow=shadow, keys=keys, before=began, discard=False
            )

        await swap_in(
            conn,
            table="metrics_data",
            shadow=shadow,
            topic=topic,
            live_consumer=live,
            replay_consumer=replaying,
            top_up=top_up,
            live_since=began,
        )
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM metrics_data")}
        positions = {
            r["partition"]: r["next_offset"]
            for r in await conn.fetch(
                "SELECT partition, next_offset FROM phasestream_consumer_positions "
                "WHERE consumer = $1",
                live,
            )
        }
    finally:
        await conn.close()
    assert ids == {old, replayed, during}
    assert positions == {0: 7, 1: 3}
