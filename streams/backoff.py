"""Retrying an operation that may fail for a while (Postgres restarting, broker away)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from models.errors import SinkUnavailableError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.2
    max_s: float = 10.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Equal jitter: between half and all of an exponentially growing cap (attempt >= 1)."""
        # The exponent is bounded: a float power overflows after ~1,000 attempts, which an
        # outage of a few hours at a 10 s cap reaches.
        cap = min(self.max_s, self.initial_s * self.factor ** min(attempt - 1, 64))
        return random.uniform(cap / 2, cap)


async def retry_unavailable(
    operation: Callable[[], Awaitable[T]],
    backoff: Backoff,
    what: str,
    stop: asyncio.Event | None = None,
) -> T:
    """Run ``operation`` until it stops raising SinkUnavailableError (or ``stop`` is set)."""
    attempt = 0
    while True:
        try:
            return await operation()
        except SinkUnavailableError as exc:
            attempt += 1
            if stop is not None and stop.is_set():
                raise
            pause = backoff.delay(attempt)
            log.warning("%s failed (attempt %d: %s); retrying in %.1f s", what, attempt, exc, pause)
            await _pause(pause, stop)


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep ``seconds``, or less once ``stop`` is set: a stop asked during a long outage is
    answered now, not after the next retry."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
