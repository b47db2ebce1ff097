"""A consumer's progress line: one per interval at most, and only when something changed."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from models.ports import PartitionRef
from streams.progress import ConsumerStats, log_progress

INTERVAL_S = 0.005


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit:")]


async def until_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    for _ in range(2000):
        if len(lines(caplog)) >= count:
            return lines(caplog)
        await asyncio.sleep(INTERVAL_S)
    raise AssertionError(f"fewer than {count} progress lines: {lines(caplog)}")


async def test_a_line_only_when_applied_dead_letters_or_lag_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streams.progress")
    stats = ConsumerStats("audit")
    # Behind, but not moving: the old loop logged this every interval.
    stats.observe_lag({PartitionRef("t", 0): 5})
    task = asyncio.create_task(log_progress(stats, INTERVAL_S))
    try:
        first = await until_lines(caplog, 1)
        assert "lag 5" in first[0]
        await asyncio.sleep(100 * INTERVAL_S)  # a hundred intervals with nothing new
        assert len(lines(caplog)) == 1
        stats.applied(3, datetime(2026, 1, 1, tzinfo=UTC))
        stats.observe_lag({PartitionRef("t", 0): 2})
        second = await until_lines(caplog, 2)
        assert "3 events applied" in second[1]
        assert "lag 2" in second[1]
        stats.dead_lettered(1)
        third = await until_lines(caplog, 3)
        assert "1 dead-lettered" in third[2]
        await asyncio.sleep(100 * INTERVAL_S)
        assert len(lines(caplog)) == 3
    finally:
        task.cancel()
