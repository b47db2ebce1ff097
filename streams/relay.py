"""Publishes what a transaction decided (the outbox) to Kafka, then forgets it.

Order: take the oldest items, send them all and wait for every acknowledgement, then
remove them. A crash in between sends them again: at-least-once, with ids that make the
duplicates harmless downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer

from models.errors import SinkUnavailableError
from models.ports import Outbox, OutboxItem

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, outbox: Outbox, producer: AIOKafkaProducer, topic: str, *,
                 interval_s: float, batch: int = 1000,
                 on_published: Callable[[Sequence[OutboxItem]], None] | None = None) -> None:
        self._outbox = outbox
        self._producer = producer
        self._topic = topic
        self._interval_s = interval_s
        self._batch = batch
        self._on_published = on_published
        self.published = 0

    async def relay_once(self) -> int:
        items = await self._outbox.take(self._batch)
        if not items:
            return 0
        futures = [await self._producer.send(item.topic or self._topic, item.value, key=item.key)
                   for item in items]
        await asyncio.gather(*futures)
        await self._outbox.remove([item.id for item in items])
        self.published += len(items)
        if self._on_published is not None:
            self._on_published(items)
        return len(items)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.relay_once()
            except SinkUnavailableError as exc:
                log.warning("outbox relay: Postgres unavailable (%s); retrying", exc)
                sent = 0
            if sent < self._batch:  # drained: wait, unless asked to stop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
