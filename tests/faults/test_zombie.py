"""A zombie: one of two audit workers is SIGSTOPped past its session timeout, so its
partitions move to the other; it is SIGCONTinued mid-batch. The compare-and-set on the stored
positions must keep its late writes out: every event projected exactly once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.conftest import settings_env
from tests.events import many_events
from tests.faults.workers import Worker, tails
from tests.integration.test_failures import exact_check
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration


def audit_workers(settings: Settings, logs_dir: Path) -> list[Worker]:
    env = settings_env(settings) | {
        "PHASESTREAM_BATCH_MAX_RECORDS": "200",
        "PHASESTREAM_CONSUMER_SESSION_TIMEOUT_MS": "2000",
    }
    return [
        Worker("audit", settings.audit_consumer_group, env, logs_dir, label=f"worker-{n}")
        for n in range(2)
    ]


async def test_zombie_worker_past_its_session_timeout_writes_nothing_twice(
    settings: Settings, tmp_path: Path
) -> None:
    first, later = many_events(6_000, workflows=300), many_events(3_000, workflows=300)
    db = settings.database_url or ""
    workers = audit_workers(settings, tmp_path)
    for worker in workers:
        worker.start()
    try:

        async def assignments() -> list[int]:
            for worker in workers:
                assert worker.alive(), worker.tail(3000)
            return [await worker.partitions() for worker in workers]

        for worker in workers:
            await worker.until_ready()
        # Both in the group, the partitions split between them: each has read some (a
        # process's count only grows, so a sum would count a rebalance's moves twice).
        await eventually(assignments, all, timeout_s=60, what="both workers assigned")
        async with PhaseEventPublisher(
            settings.bootstrap_servers, settings.phase_events_topic
        ) as pub:
            publishing = asyncio.create_task(pub.publish_many(first))
            await eventually(
                lambda: count_rows(db), lambda n: n >= 300, timeout_s=60, what="both consuming"
            )
            zombie = workers[0].process
            assert zombie is not None
            zombie.send_signal(signal.SIGSTOP)
            stopped_at = await count_rows(db)
            await publishing
            await pub.publish_many(later)
            await asyncio.sleep(5)  # past the 2 s session timeout: its partitions move
            zombie.send_signal(signal.SIGCONT)
        assert stopped_at < len(first) + len(later), "stopped too late to test anything"
        await eventually(
            lambda: count_rows(db),
            lambda n: n >= len(first) + len(later),
            timeout_s=60,
            what="all events projected",
        )
        await asyncio.sleep(1.5)  # a zombie's late write would land now
        await exact_check(db, {str(e.event_id) for e in first + later})
        assert await count_rows(
            db,
            "SELECT sum(next_offset) FROM phasestream_consumer_positions WHERE consumer = $1",
            settings.audit_consumer_group,
        ) == len(first) + len(later)
        # The other worker took the zombie's partitions over while it was stopped.
        assert "6 partitions at stored positions" in workers[1].logs[-1].read_text(), "no takeover"
    finally:
        for worker in workers:
            if worker.alive() and worker.process is not None:
                worker.process.send_signal(signal.SIGCONT)
        codes = [await worker.stop() for worker in workers]
    assert codes == [0, 0], tails(workers)
