"""The subscriber SDK against the real broker and Postgres."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from models.command_codec import encode_command
from models.commands import CommandKind, RollbackCommand, command_id
from models.errors import SinkUnavailableError
from models.events import PhaseEvent
from phasestream.settings import Settings
from projections.handled_ids import PostgresHandledIds, claim_id
from streams.backoff import Backoff
from streams.kafka import KafkaCluster
from streams.publisher import PhaseEventPublisher
from streams.subscribe import (
    COMMANDS,
    PHASE_EVENTS,
    Delivery,
    MemoryHandledIds,
    NoDedup,
    Subscriber,
)
from streams.topics import ensure_topics
from tests.events import make_event
from tests.topics import read_records, send_records
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration
FAST = Backoff(initial_s=0.02, max_s=0.1)


def command(workflow: str = "wf-1", phase: int = 3, **fields: Any) -> RollbackCommand:
    failed = uuid.uuid4()
    base: dict[str, Any] = {
        "command_id": command_id(failed, CommandKind.ROLLBACK),
        "kind": CommandKind.ROLLBACK,
        "workflow_id": workflow,
        "user_id": uuid.UUID(int=1),
        "failed_event_id": failed,
        "failed_phase": phase,
        "rollback_to_phase": phase - 1,
        "reason": "boom",
        "issued_at": datetime.now(UTC),
    }
    return RollbackCommand(**(base | fields))


def encoded(commands: list[RollbackCommand]) -> list[tuple[bytes, bytes]]:
    return [(c.key, encode_command(c)) for c in commands]


@pytest.fixture
async def dlq(settings: Settings) -> str:
    name = f"{settings.rollback_commands_topic}.dlq"
    await ensure_topics(KafkaCluster(settings.bootstrap_servers), [name], partitions=1)
    return name


def subscriber(
    settings: Settings, dlq: str, handled: Any, group: str | None = None, **options: Any
) -> Subscriber[RollbackCommand, Any]:
    return Subscriber(
        settings.bootstrap_servers,
        settings.rollback_commands_topic,
        group_id=group or f"engine-{uuid.uuid4().hex[:6]}",
        contract=COMMANDS,
        handled=handled,
        dlq_topic=dlq,
        session_timeout_ms=2000,
        max_wait_ms=50,
        backoff=FAST,
        **options,
    )


async def running(sub: Subscriber[Any, Any], handler: Any) -> asyncio.Task[None]:
    return asyncio.create_task(sub.run(handler))


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with_cancel = asyncio.gather(task, return_exceptions=True)
    await asyncio.wait_for(with_cancel, timeout=10)


async def test_a_raising_handler_ends_in_the_dlq_after_n_attempts_and_the_stream_goes_on(
    settings: Settings, dlq: str
) -> None:
    poison, fine = command("wf-poison"), command("wf-poison")
    attempts: list[uuid.UUID] = []
    handled: list[uuid.UUID] = []

    async def handler(delivery: Delivery[RollbackCommand, None]) -> None:
        attempts.append(delivery.value.command_id)
        if delivery.value.command_id == poison.command_id:
            raise RuntimeError("engine cannot re-queue")
        handled.append(delivery.value.command_id)

    await send_records(settings, settings.rollback_commands_topic, encoded([poison, fine]))
    async with subscriber(settings, dlq, MemoryHandledIds(), max_attempts=3) as sub:
        task = await running(sub, handler)
        letters = await read_records(settings, dlq, 1)
        await eventually(lambda: asyncio.sleep(0, handled), lambda h: h == [fine.command_id])
        await stopped(task)
    assert attempts == [poison.command_id] * 3 + [fine.command_id]
    headers = dict(letters[0].headers)
    assert letters[0].value == encode_command(poison)
    assert headers["phasestream.field"] == b"handler"
    assert headers["phasestream.reason"] == (
        b"handler: failed 3 times; last error: RuntimeError: engine cannot re-queue"
    )
    assert (sub.stats.dead_lettered, sub.stats.retries, sub.stats.handled) == (1, 2, 1)


async def test_an_unavailable_sink_spends_no_attempt_and_stop_leaves_the_record_uncommitted(
    settings: Settings, dlq: str
) -> None:
    waiting = command("wf-away")
    group = f"engine-{uuid.uuid4().hex[:6]}"

    async def away(delivery: Delivery[RollbackCommand, None]) -> None:
        raise SinkUnavailableError("engine database restarting")

    await send_records(settings, settings.rollback_commands_topic, encoded([waiting]))
    async with subscriber(settings, dlq, NoDedup(), group, max_attempts=2) as first:
        task = await running(first, away)
        await eventually(lambda: asyncio.sleep(0, first.stats.retries), lambda n: n >= 5)
        first.stop()
        await asyncio.wait_for(task, timeout=10)
    assert first.stats.dead_lettered == 0
    again: list[uuid.UUID] = []

    async def record(delivery: Delivery[RollbackCommand, None]) -> None:
        again.append(delivery.value.command_id)

    async with subscriber(settings, dlq, NoDedup(), group) as second:
        task = await running(second, record)
        await eventually(lambda: asyncio.sleep(0, again), lambda a: a == [waiting.command_id])
        await stopped(task)


async def test_phase_events_come_typed_and_in_order_per_partition(
    settings: Settings, dlq: str
) -> None:
    sent = [make_event("wf-order", 1 + i % 7, metadata={"n": i}) for i in range(20)]
    got: list[PhaseEvent] = []

    async def handler(delivery: Delivery[PhaseEvent, None]) -> None:
        got.append(delivery.value)

    async with PhaseEventPublisher(
        settings.bootstrap_servers, settings.phase_events_topic
    ) as publisher:
        await publisher.publish_many(sent)
    async with Subscriber(
        settings.bootstrap_servers,
        settings.phase_events_topic,
        group_id=f"engine-{uuid.uuid4().hex[:6]}",
        contract=PHASE_EVENTS,
        handled=MemoryHandledIds(),
        dlq_topic=dlq,
        session_timeout_ms=2000,
        max_wait_ms=50,
    ) as sub:
        task = await running(sub, handler)
        await eventually(lambda: asyncio.sleep(0, got), lambda g: len(g) == 20)
        await stopped(task)
    assert [e.event_id for e in got] == [e.event_id for e in sent]
    assert got == sent


async def test_invalid_commands_go_to_the_dlq_with_the_reason(settings: Settings, dlq: str) -> None:
    good = command("wf-bad")
    bad = orjson_replace(encode_command(command("wf-bad")), b'"rollback"', b'"undo"')
    handled: list[RollbackCommand] = []

    async def handler(delivery: Delivery[RollbackCommand, None]) -> None:
        handled.append(delivery.value)

    await send_records(
        settings,
        settings.rollback_commands_topic,
        [(b"wf-bad", bad), (b"wf-bad", b"not json"), *encoded([good])],
    )
    async with subscriber(settings, dlq, MemoryHandledIds()) as sub:
        task = await running(sub, handler)
        letters = await read_records(settings, dlq, 2)
        await eventually(lambda: asyncio.sleep(0, handled), lambda h: len(h) == 1)
        await stopped(task)
    assert handled == [good]
    reasons = [dict(r.headers)["phasestream.field"] for r in letters]
    assert reasons == [b"kind", b"$"]
    assert [r.value for r in letters] == [bad, b"not json"]


def orjson_replace(payload: bytes, old: bytes, new: bytes) -> bytes:
    assert old in payload
    return payload.replace(old, new, 1)


async def test_the_same_command_twice_is_handled_once_with_a_store(
    settings: Settings, dlq: str
) -> None:
    once = command("wf-twice")
    handled: list[uuid.UUID] = []

    async def handler(delivery: Delivery[RollbackCommand, None]) -> None:
        handled.append(delivery.value.command_id)

    await send_records(settings, settings.rollback_commands_topic, encoded([once, once, once]))
    async with subscriber(settings, dlq, MemoryHandledIds()) as sub:
        task = await running(sub, handler)
        await eventually(lambda: asyncio.sleep(0, sub.stats.duplicates), lambda n: n == 2)
        await stopped(task)
    assert handled == [once.command_id]


async def test_cancel_mid_handler_commits_nothing_and_the_next_member_gets_it_again(
    settings: Settings, dlq: str
) -> None:
    stuck = command("wf-cancel")
    entered = asyncio.Event()
    group = f"engine-{uuid.uuid4().hex[:6]}"

    async def hang(delivery: Delivery[RollbackCommand, None]) -> None:
        entered.set()
        await asyncio.Event().wait()

    await send_records(settings, settings.rollback_commands_topic, encoded([stuck]))
    async with subscriber(settings, dlq, NoDedup(), group) as first:
        task = await running(first, hang)
        await asyncio.wait_for(entered.wait(), timeout=30)
        await stopped(task)
    assert task.cancelled()
    again: list[uuid.UUID] = []

    async def record(delivery: Delivery[RollbackCommand, None]) -> None:
        again.append(delivery.value.command_id)

    async with subscriber(settings, dlq, NoDedup(), group) as second:
        task = await running(second, record)
        await eventually(lambda: asyncio.sleep(0, again), lambda a: a == [stuck.command_id])
        await stopped(task)


async def test_the_postgres_store_records_the_id_in_the_handlers_transaction(
    settings: Settings, database: str
) -> None:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        store = PostgresHandledIds(pool)
        await store.create_table()
        message = uuid.uuid4()
        with pytest.raises(RuntimeError):
            await fail_inside_a_claim(store, message)
        async with store.claim("engine", message) as claim:
            assert claim is not None
        async with store.claim("engine", message) as claim:
            assert claim is None
        async with store.claim("other-engine", message) as claim:
            assert claim is not None
        async with pool.acquire() as conn, conn.transaction():
            assert await claim_id(conn, "engine", message) is False
    finally:
        await pool.close()


async def fail_inside_a_claim(store: PostgresHandledIds, message: uuid.UUID) -> None:
    async with store.claim("engine", message) as claim:
        assert claim is not None
        raise RuntimeError("handler failed: the claim must go with it")


async def test_a_second_claim_of_the_same_id_waits_for_the_first_and_finds_it_handled(
    database: str,
) -> None:
    pool = await asyncpg.create_pool(database, min_size=2, max_size=3)
    try:
        store = PostgresHandledIds(pool)
        await store.create_table()
        message, first_holds, effects = uuid.uuid4(), asyncio.Event(), []

        async def first() -> None:
            async with store.claim("engine", message) as claim:
                assert claim is not None
                first_holds.set()
                await asyncio.sleep(0.5)  # a slow handler; the other member arrives meanwhile
                effects.append("first")

        async def second() -> None:
            await first_holds.wait()
            async with store.claim("engine", message) as claim:
                if claim is not None:
                    effects.append("second")

        await asyncio.wait_for(asyncio.gather(first(), second()), timeout=10)
        assert effects == ["first"]
    finally:
        await pool.close()


# --- kill -9 of a subscriber process mid-stream ------------------------------------------


@pytest.fixture
async def effects(database: str) -> str:
    conn = await asyncpg.connect(database)
    await conn.execute("CREATE TABLE engine_effects (command_id uuid NOT NULL, pid text)")
    await conn.close()
    return database


def start_engine(
    settings: Settings, dlq: str, db: str, *, group: str, mode: str, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.subscriber_worker",
                settings.bootstrap_servers,
                settings.rollback_commands_topic,
                group,
                dlq,
                db,
                mode,
            ],
            stdout=out,
            stderr=out,
        )


async def kill_mid_stream_and_restart(
    settings: Settings, dlq: str, db: str, *, mode: str, log: Path, total: int
) -> dict[uuid.UUID, int]:
    sent = [command(f"wf-{i % 13}") for i in range(total)]
    await send_records(settings, settings.rollback_commands_topic, encoded(sent))
    group = f"engine-{uuid.uuid4().hex[:6]}"
    first = start_engine(settings, dlq, db, group=group, mode=mode, log=log)
    try:
        await eventually(
            lambda: count_rows(db, "SELECT count(*) FROM engine_effects"),
            lambda n: n >= total // 4,
            what="a quarter handled",
            timeout_s=60,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        halfway = await count_rows(db, "SELECT count(*) FROM engine_effects")
        assert halfway < total, "killed too late: the test would prove nothing"
    finally:
        first.kill()
    second = start_engine(settings, dlq, db, group=group, mode=mode, log=log)
    try:
        await eventually(
            lambda: count_rows(db, "SELECT count(DISTINCT command_id) FROM engine_effects"),
            lambda n: n == total,
            what="every command handled",
            timeout_s=90,
        )
        await asyncio.sleep(1.5)  # anything still to come would come now
    finally:
        second.terminate()
        second.wait(10)
    conn = await asyncpg.connect(db)
    rows = await conn.fetch("SELECT command_id, count(*) AS n FROM engine_effects GROUP BY 1")
    await conn.close()
    counts = {row["command_id"]: row["n"] for row in rows}
    assert set(counts) == {c.command_id for c in sent}
    return counts


async def test_kill_9_mid_stream_with_the_postgres_store_handles_every_command_once(
    settings: Settings, dlq: str, effects: str, tmp_path: Path
) -> None:
    counts = await kill_mid_stream_and_restart(
        settings, dlq, effects, mode="postgres", log=tmp_path / "engine.log", total=1500
    )
    assert sorted(set(counts.values())) == [1]
    handled = await count_rows(effects, "SELECT count(*) FROM phasestream_handled_ids")
    assert handled == 1500


async def test_kill_9_mid_stream_without_a_store_handles_every_command_at_least_once(
    settings: Settings, dlq: str, effects: str, tmp_path: Path
) -> None:
    counts = await kill_mid_stream_and_restart(
        settings, dlq, effects, mode="none", log=tmp_path / "engine.log", total=1500
    )
    assert min(counts.values()) >= 1
    print(f"handled twice or more without a store: {sum(n > 1 for n in counts.values())}")
