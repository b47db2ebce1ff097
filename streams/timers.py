"""Timers over durable state: overdue SLA checks, due retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from models.errors import SinkUnavailableError
from models.sla.violation import SlaViolation

log = logging.getLogger(__name__)


class OverdueReporter(Protocol):
    async def report_overdue(
        self, watermarks: Mapping[int, datetime], grace_ms: int
    ) -> list[SlaViolation]: ...

    async def forget_early_ends(self, older_than_s: float) -> int: ...


class RetryReleaser(Protocol):
    async def release_due_retries(self, limit: int = 1000) -> list[Any]: ...


async def release_retries(
    releaser: RetryReleaser, *, interval_s: float, stop: asyncio.Event
) -> None:
    """Every interval: hand the retries whose time has come to the outbox, once each."""
    while not stop.is_set():
        try:
            released = await releaser.release_due_retries()
            if released:
                log.info("rollback: %d retries due and issued", len(released))
        except SinkUnavailableError as exc:
            log.warning("retry check: Postgres unavailable (%s); retrying", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)


class Watermarked(Protocol):
    def watermarks(self, now: datetime) -> dict[int, datetime]: ...


async def check_overdue(
    reporter: OverdueReporter,
    source: Watermarked,
    *,
    grace_ms: int,
    interval_s: float,
    early_end_ttl_s: float,
    stop: asyncio.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_found: Callable[[list[SlaViolation]], Any] | None = None,
) -> None:
    """Every interval: claim the overdue phases of the partitions this process owns."""
    checks = 0
    while not stop.is_set():
        try:
            found = await reporter.report_overdue(source.watermarks(clock()), grace_ms)
            if found:
                log.info("SLA: %d phases overdue", len(found))
                if on_found is not None:
                    on_found(found)
            checks += 1
            if checks % 600 == 0:
                await reporter.forget_early_ends(early_end_ttl_s)
        except SinkUnavailableError as exc:
            log.warning("SLA overdue check: Postgres unavailable (%s); retrying", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
