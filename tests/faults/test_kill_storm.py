"""Kill storms: twenty random kill -9 of the audit projector, and a rebalance storm of a second
worker joining and leaving while events keep coming. A checker compares what was published
with the audit table: nothing lost, nothing twice, positions exactly at the end.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.events import PhaseEvent
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.conftest import settings_env
from tests.integration.test_failures import exact_check
from tests.support import count_rows, eventually, many_events

pytestmark = pytest.mark.integration

ASSIGNED = re.compile(r": [1-9]\d* partitions at stored positions")
POSITIONS = "SELECT sum(next_offset) FROM phasestream_consumer_positions WHERE consumer = $1"
SEED = 20_261_127


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = settings_env(settings) | {"PHASESTREAM_BATCH_MAX_RECORDS": "100",
                                    "PHASESTREAM_HTTP_PORT": "0"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "phasestream", "run", "audit"],
                                env=env, stdout=out, stderr=out)


def tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
                     for log in logs if log.exists())


async def assigned(log: Path, timeout_s: float) -> bool:
    """Whether the worker writing ``log`` got partitions within ``timeout_s``."""
    for _ in range(int(timeout_s / 0.05)):
        if ASSIGNED.search(log.read_text(errors="replace")):
            return True
        await asyncio.sleep(0.05)
    return False


async def positions(settings: Settings) -> int:
    return await count_rows(settings.database_url or "", POSITIONS,
                            settings.audit_consumer_group)


async def test_twenty_random_kill_9s_lose_and_duplicate_nothing(
        settings: Settings, tmp_path: Path) -> None:
    events = many_events(20_000, workflows=500)
    db = settings.database_url or ""
    async with PhaseEventPublisher(settings.bootstrap_servers,
                                   settings.phase_events_topic) as pub:
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
            log = tmp_path / f"kill-{number:02d}.log"
            logs.append(log)
            process = start_worker(settings, log)
            try:
                deadline = time.monotonic() + 10
                while not ASSIGNED.search(log.read_text(errors="replace")):
                    assert process.poll() is None, tails([log])
                    if time.monotonic() > deadline:
                        break  # killed while still waiting for partitions: a kill too
                    await asyncio.sleep(0.02)
                target = min(await count_rows(db) + growth, len(events))
                while await count_rows(db) < target and time.monotonic() < deadline + 5:
                    assert process.poll() is None, tails([log])
                    await asyncio.sleep(0.005)
                await asyncio.sleep(jitter)
            finally:
                process.kill()  # SIGKILL: no cleanup, anywhere in or between the commits
                await asyncio.to_thread(process.wait)
            assert process.returncode == -signal.SIGKILL, tails([log])
            kills.append((number, growth, await count_rows(db)))

    started = time.monotonic()
    await asyncio.gather(kill_slot(0), kill_slot(1))
    storm_s = time.monotonic() - started
    final_log = tmp_path / "final.log"
    process = start_worker(settings, final_log)
    try:
        await eventually(lambda: count_rows(db), lambda n: n >= len(events), timeout_s=60,
                         what="all events projected after the kills")
        await asyncio.sleep(1)  # anything duplicated would land now
    finally:
        process.terminate()
        code = await asyncio.to_thread(process.wait, 30)
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
    logs = [tmp_path / "first.log"]
    first = start_worker(settings, logs[0])
    second: subprocess.Popen[bytes] | None = None
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
        await eventually(lambda: asyncio.sleep(0, ASSIGNED.search(logs[0].read_text())),
                         lambda found: found is not None, timeout_s=30, what="first assigned")
        async with PhaseEventPublisher(settings.bootstrap_servers,
                                       settings.phase_events_topic) as pub:
            publishing = asyncio.create_task(publish(pub))
            for round_ in range(4):
                logs.append(tmp_path / f"second-{round_}.log")
                second = start_worker(settings, logs[-1])
                # A join takes a while on this broker (and up to ~3 s more after a kill, until
                # the dead member's session ends): leave a while after getting partitions.
                await assigned(logs[-1], timeout_s=8)
                await asyncio.sleep(rng.uniform(1.0, 2.0))
                assert first.poll() is None, tails(logs)
                if round_ == 1:
                    second.kill()
                    leaves.append("SIGKILL")
                    assert await asyncio.to_thread(second.wait, 30) == -signal.SIGKILL
                else:
                    second.terminate()
                    leaves.append("SIGTERM")
                    assert await asyncio.to_thread(second.wait, 30) == 0, tails(logs)
                second = None
                await asyncio.sleep(rng.uniform(0.0, 0.5))
            logs.append(tmp_path / "second-last.log")
            second = start_worker(settings, logs[-1])
            storming.set()
            await publishing
        total = len(published)
        await eventually(lambda: count_rows(db), lambda n: n >= total, timeout_s=60,
                         what=f"all {total} published events projected")
        await asyncio.sleep(1)  # anything duplicated would land now
        await exact_check(db, {str(e.event_id) for e in published})
        joined = sum(1 for log in logs[1:-1] if ASSIGNED.search(log.read_text()))
        context = f"seed {SEED}, {total} events, leaves {leaves}, joined {joined}"
        print(context)
        assert await positions(settings) == total, context
        assert joined >= 3, f"the second worker rarely got partitions: {context}"
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
        codes = [await asyncio.to_thread(w.wait, 30) for w in (first, second) if w is not None]
    assert codes == [0, 0], tails(logs)
