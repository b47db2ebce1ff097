"""An alert sink: a sender (Slack, e-mail) behind its own bounded queue and worker.

Whether an alert goes out is decided when it is offered, without waiting: a duplicate
incident, an exhausted rate or a full queue suppresses it (counted by reason). The worker
then delivers one alert at a time, retrying a failed delivery with exponential backoff,
so a slow or failing sink never holds up the consumer or the other sinks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

from models.errors import PhasestreamError
from models.notifications.dedup import Deduplicator
from models.notifications.rate_limit import RateLimiter
from models.notifications.suppression import suppression
from models.notifications.value import Notification
from phasestream.delivery.metrics import NotifyMetrics
from streams.backoff import Backoff

log = logging.getLogger(__name__)
QUEUE_SIZE: Final = 1000
#: Delays between attempts: 0.25-0.5 s, 0.5-1 s, 1-2 s, ... up to 15-30 s (equal jitter).
RETRY_BACKOFF: Final = Backoff(initial_s=0.5, max_s=30.0)
#: After the stop signal, what is still queued gets this long to go out.
DRAIN_S: Final = 5.0


class DeliveryError(PhasestreamError):
    """A sink did not take an alert; ``retriable`` says whether trying again may help."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class Sender(Protocol):
    """Delivers one alert, or raises DeliveryError."""

    name: str

    async def send(self, notification: Notification) -> None: ...


class AlertSink:
    def __init__(
        self,
        sender: Sender,
        *,
        dedup: Deduplicator,
        limiter: RateLimiter,
        metrics: NotifyMetrics,
        max_attempts: int,
        backoff: Backoff = RETRY_BACKOFF,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = sender.name
        self._sender = sender
        self._dedup = dedup
        self._limiter = limiter
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._clock = clock
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(queue_size)
        self.delivered = self.failed_attempts = self.suppressed = self.dropped = 0
        metrics.register_sink(self.name)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def offer(self, notification: Notification) -> bool:
        """Queue ``notification`` unless it is suppressed; whether it was queued. Never waits."""
        now = self._clock()
        reason = suppression(
            notification,
            now,
            dedup=self._dedup,
            queue_full=self._queue.full(),
            limiter=self._limiter,
        )
        if reason is not None:
            self.suppressed += 1
            self._metrics.suppressed.labels(self.name, reason).inc()
            log.debug("%s: %s suppressed (%s)", self.name, notification.title, reason)
            return False
        self._dedup.record(notification, now)
        self._queue.put_nowait(notification)
        return True

    async def run(self, stop: asyncio.Event, drain_s: float = DRAIN_S) -> None:
        """Deliver queued alerts until ``stop`` is set, then what is left for ``drain_s``."""
        while (notification := await _next(self._queue, stop)) is not None:
            await self.deliver(notification)
        try:
            async with asyncio.timeout(drain_s):
                while not self._queue.empty():
                    await self.deliver(self._queue.get_nowait())
        except TimeoutError:
            left = self._queue.qsize()
            self.dropped += left
            self._metrics.dropped.labels(self.name).inc(left)
            log.warning("%s: stopping with %d alerts undelivered", self.name, left)

    async def deliver(self, notification: Notification) -> bool:
        """Try up to max_attempts times; whether it was delivered."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._sender.send(notification)
            except DeliveryError as exc:
                self.failed_attempts += 1
                self._metrics.failures.labels(self.name).inc()
                if not exc.retriable or attempt == self._max_attempts:
                    self._give_up(notification, attempt, exc)
                    return False
                pause = self._backoff.delay(attempt)
                log.warning(
                    "%s: alert %s not delivered (attempt %d of %d: %s); retrying in %.1f s",
                    self.name,
                    notification.id,
                    attempt,
                    self._max_attempts,
                    exc,
                    pause,
                )
                await asyncio.sleep(pause)
            else:
                self.delivered += 1
                self._metrics.delivered.labels(self.name).inc()
                return True
        return False

    def _give_up(self, notification: Notification, attempt: int, exc: DeliveryError) -> None:
        self.dropped += 1
        self._metrics.dropped.labels(self.name).inc()
        log.error(
            "%s: alert %s (%s) dropped after %d attempts: %s",
            self.name,
            notification.id,
            notification.title,
            attempt,
            exc,
        )


async def _next(queue: asyncio.Queue[Notification], stop: asyncio.Event) -> Notification | None:
    """The next queued alert, or None once ``stop`` is set."""
    if stop.is_set():
        return None
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        pending = not getter.done()
        if pending:
            getter.cancel()
    # A getter that finished together with the stop signal still hands over its alert.
    return None if pending else getter.result()
