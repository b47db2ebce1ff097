"""A zombie: one of two audit workers is SIGSTOPped past its session timeout, so its
partitions move to the other; it is SIGCONTinued mid-batch. The compare-and-set on the stored
positions must keep its late writes out: every event projected exactly once.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.conftest import settings_env
from tests.integration.test_failures import exact_check
from tests.support import count_rows, eventually, many_events

pytestmark = pytest.mark.integration

ASSIGNED = re.compile(r": (\d+) partitions at stored positions")


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = settings_env(settings) | {"PHASESTREAM_BATCH_MAX_RECORDS": "200",
                                    "PHASESTREAM_HTTP_PORT": "0",
                                    "PHASESTREAM_CONSUMER_SESSION_TIMEOUT_MS": "2000"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "phasestream", "run", "audit"],
                                env=env, stdout=out, stderr=out)


def last_assignment(log: Path) -> int:
    counts = ASSIGNED.findall(log.read_text(errors="replace")) if log.exists() else []
    return int(counts[-1]) if counts else 0


async def test_zombie_worker_past_its_session_timeout_writes_nothing_twice(
        settings: Settings, tmp_path: Path) -> None:
    first, later = many_events(6_000, workflows=300), many_events(3_000, workflows=300)
    db = settings.database_url or ""
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    workers = [start_worker(settings, log) for log in logs]
    try:
        async def assignments() -> list[int]:
            for worker, log in zip(workers, logs, strict=True):
                assert worker.poll() is None, log.read_text()[-3000:]
            return [last_assignment(log) for log in logs]
        # Both in the group, the partitions split between them.
        await eventually(assignments, lambda a: all(a) and sum(a) == settings.topic_partitions,
                         timeout_s=60, what="both workers assigned")
        async with PhaseEventPublisher(settings.bootstrap_servers,
                                       settings.phase_events_topic) as pub:
            publishing = asyncio.create_task(pub.publish_many(first))
            await eventually(lambda: count_rows(db), lambda n: n >= 300, timeout_s=60,
                             what="both consuming")
            zombie = workers[0]
            zombie.send_signal(signal.SIGSTOP)
            stopped_at = await count_rows(db)
            await publishing
            await pub.publish_many(later)
            await asyncio.sleep(5)  # past the 2 s session timeout: its partitions move
            zombie.send_signal(signal.SIGCONT)
        assert stopped_at < len(first) + len(later), "stopped too late to test anything"
        await eventually(lambda: count_rows(db), lambda n: n >= len(first) + len(later),
                         timeout_s=60, what="all events projected")
        await asyncio.sleep(1.5)  # a zombie's late write would land now
        await exact_check(db, {str(e.event_id) for e in first + later})
        assert await count_rows(
            db, "SELECT sum(next_offset) FROM phasestream_consumer_positions "
            "WHERE consumer = $1", settings.audit_consumer_group) == len(first) + len(later)
        # The other worker took the zombie's partitions over while it was stopped.
        assert "6 partitions at stored positions" in logs[1].read_text(), "no takeover"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=30) for worker in workers]
    assert codes == [0, 0], "\n".join(log.read_text()[-2000:] for log in logs)
