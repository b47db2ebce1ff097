"""What a projector has done so far: counters, a hook for metrics, a periodic log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from models.ports import PartitionRef

log = logging.getLogger(__name__)


class PipelineObserver(Protocol):
    """Where a consumer reports its progress (e.g. Prometheus); called after each step."""

    def applied(
        self, consumer: str, events: int, seconds: float, last_event_time: datetime | None
    ) -> None: ...

    def dead_lettered(self, consumer: str, count: int) -> None: ...

    def lag(self, consumer: str, lag: Mapping[PartitionRef, int]) -> None: ...

    def lost(self, consumer: str, partition: PartitionRef, count: int) -> None: ...


@dataclass
class ConsumerStats:
    name: str
    observer: PipelineObserver | None = None
    events_applied: int = 0
    batches: int = 0
    dead_letters: int = 0
    lost_records: int = 0
    last_event_time: datetime | None = None
    lag: dict[PartitionRef, int] = field(default_factory=dict)

    def applied(self, events: int, last_event_time: datetime | None, seconds: float = 0.0) -> None:
        self.events_applied += events
        self.batches += 1
        if last_event_time is not None:
            self.last_event_time = max(last_event_time, self.last_event_time or last_event_time)
        if self.observer is not None:
            self.observer.applied(self.name, events, seconds, last_event_time)

    def dead_lettered(self, count: int) -> None:
        self.dead_letters += count
        if self.observer is not None:
            self.observer.dead_lettered(self.name, count)

    def lost(self, partition: PartitionRef, count: int) -> None:
        self.lost_records += count
        if self.observer is not None:
            self.observer.lost(self.name, partition, count)

    def observe_lag(self, lag: Mapping[PartitionRef, int]) -> None:
        self.lag.update(lag)
        if self.observer is not None:
            self.observer.lag(self.name, lag)

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


async def log_progress(stats: ConsumerStats, interval_s: float) -> None:
    """Every interval, one line (events applied and their rate, dead letters, lag), and only
    when one of those changed since the last line: an idle pipeline stays quiet."""
    before, since = stats.events_applied, time.monotonic()
    logged = (0, 0, 0)  # as if a line said "nothing yet": a backlog at start is news
    while True:
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        state = (stats.events_applied, stats.dead_letters, stats.total_lag)
        if state != logged:
            rate = (stats.events_applied - before) / (now - since)
            log.info(
                "%s: %d events applied (%.0f/s), %d dead-lettered, lag %d, last event %s",
                stats.name,
                stats.events_applied,
                rate,
                stats.dead_letters,
                stats.total_lag,
                stats.last_event_time.isoformat() if stats.last_event_time else "none",
            )
            logged, before, since = state, stats.events_applied, now
