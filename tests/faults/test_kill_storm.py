"""Kill storms: twenty random kill -9 of the audit projector, and a rebalance storm of a second
worker joining and leaving while events keep coming. A checker compares what was published
with the audit table: nothing lost, nothing twice, positions exactly at the end.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import time
from pathlib import Path

import pytest

from models.events import PhaseEvent
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.conftest import settings_env
from tests.events import many_events
from tests.faults.workers import Worker
from tests.integration.test_failures import exact_check
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration

#: Only for the count of joins after the storm: the logs are the history of dead processes
#: (readiness and assignment are asked of a live worker over HTTP, tests.faults.workers).
ASSIGNED = re.compile(r": [1-9]\d* partitions at stored positions")
POSITIONS = "SELECT sum(next_offset) FROM phasestream_consumer_positions WHERE consumer = $1"
SEED = 20_261_127


def worker(settings: Settings, logs_dir: Path, label: str) -> Worker:
    env = settings_env(settings) | {"PHASESTREAM_BATCH_MAX_RECORDS": "100"}
    return Worker("audit", settings.audit_consumer_group, env, logs_dir, label=label)


def tails(logs: list[Path]) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in logs if log.exists()
    )


async def positions(settings: Settings) -> int:
    return await count_rows(settings.database_url or "", POSITIONS, settings.audit_consumer_group)


async def test_twenty_random_kill_9s_lose_and_duplicate_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    events = many_events(20_000, workflows=500)
    db = settings.database_url or ""
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(events)
    rng = random.Random(SEED)
    # Each process is killed once the table has grown by a random number of rows (a few
    # batches of 100) since it got partitions, plus a random jitter, so the kill lands at a
    # random point of a batch; drawn up front so the seed decides all. A time alone would
    # not do: kills 0.3-1.5 s after the start left 17 of 20 with nothing to do.
    plan = [(rng.randint(200, 1200), rng.uniform(0.0, 0.05)) for _ in range(20)]
    logs: list[Path] = []
    kills: list[tuple[int, int, int]] = []  # (kill number, growth planned, rows at the kill)

    async def kill_slot(slot: int) -> None:
        # Two slots run side by side, so one process's join overlaps the other's work.
        for number in range(slot, len(plan), 2):
            growth, jitter = plan[number]
            process = worker(settings, tmp_path, f"kill-{number:02d}")
            process.start()
            log = process.logs[-1]
            logs.append(log)
            try:
                await process.until_ready()
                deadline = time.monotonic() + 10
                # Else killed while still waiting for partitions: a kill too.
                await process.until_assigned(timeout_s=10)
                target = min(await count_rows(db) + growth, len(events))
                while await count_rows(db) < target and time.monotonic() < deadline + 5:
                    assert process.alive(), tails([log])
                    await asyncio.sleep(0.005)
                await asyncio.sleep(jitter)
            finally:
                code = await process.kill()
            assert code == -signal.SIGKILL, tails([log])
            kills.append((number, growth, await count_rows(db)))

    started = time.monotonic()
    await asyncio.gather(kill_slot(0), kill_slot(1))
    storm_s = time.monotonic() - started
    process = worker(settings, tmp_path, "final")
    process.start()
    final_log = process.logs[-1]
    try:
        # Ready before its SIGTERM: the storm may already have projected every row, and a
        # SIGTERM while the worker still imports ends it by the signal's default action.
        await process.until_ready()
        await eventually(
            lambda: count_rows(db),
            lambda n: n >= len(events),
            timeout_s=60,
            what="all events projected after the kills",
        )
        await asyncio.sleep(1)  # anything duplicated would land now
    finally:
        code = await process.stop()
    context = f"seed {SEED}, storm {storm_s:.1f} s, kills (number, growth, rows): {kills}"
    print(context)
    assert code == 0, f"{context}\n{tails([final_log])}"
    await exact_check(db, {str(e.event_id) for e in events})
    assert await positions(settings) == len(events), context
    early = sum(1 for _, _, rows in kills if rows < len(events))
    assert len(kills) == 20, context
    assert early >= 10, f"only {early} kills while rows were missing: {context}"


async def test_rebalance_storm_two_workers(settings: Settings, tmp_path: Path) -> None:
    db = settings.database_url or ""
    rng = random.Random(SEED)
    published: list[PhaseEvent] = []
    first = worker(settings, tmp_path, "first")
    first.start()
    logs = list(first.logs)
    second: Worker | None = None
    leaves: list[str] = []

    storming = asyncio.Event()

    async def publish(pub: PhaseEventPublisher) -> None:
        for _ in range(150):  # 300 events every 0.2 s for as long as the storm lasts
            chunk = many_events(300, workflows=300)
            await pub.publish_many(chunk)
            published.extend(chunk)
            if storming.is_set():
                return
            await asyncio.sleep(0.2)

    try:
        assert await first.until_assigned(timeout_s=30), f"first not assigned:\n{tails(logs)}"
        async with PhaseEventPublisher(
            settings.bootstrap_servers, settings.phase_events_topic
        ) as pub:
            publishing = asyncio.create_task(publish(pub))
            for round_ in range(4):
                second = worker(settings, tmp_path, f"second-{round_}")
                second.start()
                logs += second.logs
                # A join takes a while on this broker (and up to ~3 s more after a kill, until
                # the dead member's session ends): leave a while after getting partitions.
                await second.until_assigned(timeout_s=8)
                await asyncio.sleep(rng.uniform(1.0, 2.0))
                assert first.alive(), tails(logs)
                if round_ == 1:
                    leaves.append("SIGKILL")
                    assert await second.kill() == -signal.SIGKILL
                else:
                    leaves.append("SIGTERM")
                    assert await second.stop() == 0, tails(logs)
                second = None
                await asyncio.sleep(rng.uniform(0.0, 0.5))
            second = worker(settings, tmp_path, "second-last")
            second.start()
            logs += second.logs
            storming.set()
            await publishing
        total = len(published)
        await eventually(
            lambda: count_rows(db),
            lambda n: n >= total,
            timeout_s=60,
            what=f"all {total} published events projected",
        )
        await asyncio.sleep(1)  # anything duplicated would land now
        await exact_check(db, {str(e.event_id) for e in published})
        joined = sum(1 for log in logs[1:-1] if ASSIGNED.search(log.read_text()))
        context = f"seed {SEED}, {total} events, leaves {leaves}, joined {joined}"
        print(context)
        assert await positions(settings) == total, context
        assert joined >= 3, f"the second worker rarely got partitions: {context}"
    finally:
        if second is not None:
            await second.until_ready()  # a SIGTERM while it imports would kill it
        codes = [await w.stop() for w in (first, second) if w is not None]
    assert codes == [0, 0], tails(logs)
