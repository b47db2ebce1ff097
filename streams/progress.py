"""What a projector has done so far, and a periodic log line that says so."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from models.ports import PartitionRef

log = logging.getLogger(__name__)


@dataclass
class ProjectorStats:
    name: str
    events_applied: int = 0
    batches: int = 0
    dead_letters: int = 0
    last_event_time: datetime | None = None
    lag: dict[PartitionRef, int] = field(default_factory=dict)

    def applied(self, events: int, last_event_time: datetime | None) -> None:
        self.events_applied += events
        self.batches += 1
        if last_event_time is not None:
            self.last_event_time = max(last_event_time, self.last_event_time or last_event_time)

    def dead_lettered(self, count: int) -> None:
        self.dead_letters += count

    def observe_lag(self, lag: Mapping[PartitionRef, int]) -> None:
        self.lag.update(lag)

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


async def log_progress(stats: ProjectorStats, interval_s: float = 10.0) -> None:
    """Every interval, one line: events applied and their rate, dead letters, lag."""
    before, since = stats.events_applied, time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        rate = (stats.events_applied - before) / (now - since)
        if stats.events_applied != before or stats.total_lag:
            log.info("%s: %d events applied (%.0f/s), %d dead-lettered, lag %d, last event %s",
                     stats.name, stats.events_applied, rate, stats.dead_letters,
                     stats.total_lag, stats.last_event_time.isoformat()
                     if stats.last_event_time else "none")
        before, since = stats.events_applied, now
