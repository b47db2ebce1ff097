"""The notifier's Kafka side: rollback commands and SLA violations in, notifications out.

At-least-once. Per batch, in this order:
1. decode; invalid records go to the dead-letter topic, and we wait for the broker;
2. hand the batch's notifications to the handler and wait for it (it pushes to WebSockets
   and queues alerts; it never waits on Slack or e-mail);
3. commit the positions the batch ends at.
A crash before 3 reads the batch again; the handler knows the notifications by their ids.

A new consumer group starts at the end of the log: a notifier deployed today must not tell
users about last month. So that a rebalance cannot skip what arrived in between, the
start of every newly assigned partition is committed before anything is read from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from models.command_codec import decode_command
from models.notifications.value import Notification
from models.notifications.wording import from_command, from_violation
from models.ports import PartitionRef
from models.sla.violation_codec import decode_violation
from streams.consumer_core import Rebalance, lag, send_dead_letters
from streams.consumer_stop import getmany_or_stop
from streams.dead_letters import DeadLetters
from streams.decoding import Decoded, Decoder, decode_records
from streams.progress import ConsumerStats

log = logging.getLogger(__name__)
Handler = Callable[[Sequence[Notification]], Awaitable[None]]


def command_notification(key: bytes | None, value: bytes | None) -> Notification:
    return from_command(decode_command(key, value))


def violation_notification(key: bytes | None, value: bytes | None) -> Notification:
    return from_violation(decode_violation(key, value))


class NotificationConsumer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        dead_letters: DeadLetters,
        decoders: Mapping[str, Decoder[Notification]],
        handler: Handler,
        stats: ConsumerStats,
        max_records: int,
        max_wait_ms: int,
        on_invalid: Callable[[str, int], None] | None = None,
        on_assigned: Callable[[int], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._dlq = dead_letters
        self._decoders = decoders
        self._handler = handler
        self.stats = stats
        self._max_records = max_records
        self._max_wait_ms = max_wait_ms
        self._on_invalid = on_invalid
        self._on_assigned = on_assigned
        self._pending: set[TopicPartition] = set()  # assigned, start not committed yet
        self._next: dict[TopicPartition, int] = {}
        self._stop = asyncio.Event()  # run's; a fetch gives way to it (even mid-rebalance)

    def subscribe(self) -> None:
        self._consumer.subscribe(
            list(self._decoders), listener=Rebalance(assigned=self.assigned, revoked=self.revoked)
        )

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        while not stop.is_set():
            await self.step()

    async def step(self) -> None:
        if self._pending:
            await self._pin_starts()
        fetched = await getmany_or_stop(
            self._consumer, self._stop, timeout_ms=self._max_wait_ms, max_records=self._max_records
        )
        batch = {
            tp: await decode_records(records, self._decoders[tp.topic])
            for tp, records in fetched.items()
            if records
        }
        if batch:
            await self._handle(batch)
        self.stats.observe_lag(self._lag())

    async def _handle(self, batch: Mapping[TopicPartition, Decoded[Notification]]) -> None:
        letters = [letter for decoded in batch.values() for letter in decoded.letters]
        await send_dead_letters(self._dlq, self.stats, letters)
        for tp, decoded in batch.items():
            if decoded.letters and self._on_invalid is not None:
                self._on_invalid(tp.topic, len(decoded.letters))
        notifications = [n for decoded in batch.values() for n in decoded.events]
        began = time.monotonic()
        await self._handler(notifications)
        newest = max((n.occurred_at for n in notifications), default=None)
        self.stats.applied(len(notifications), newest, time.monotonic() - began)
        await self._commit({tp: decoded.next_offset for tp, decoded in batch.items()})

    async def _pin_starts(self) -> None:
        assigned = self._consumer.assignment()
        tps = [tp for tp in self._pending if tp in assigned]
        self._pending.clear()
        starts = {}
        for tp in tps:
            try:
                starts[tp] = await self._consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile: its new owner pins it
                continue
        await self._commit(starts)
        log.info(
            "%s: %d partitions assigned, reading from %s",
            self.stats.name,
            len(starts),
            {f"{tp.topic}[{tp.partition}]": offset for tp, offset in starts.items()},
        )
        if self._on_assigned is not None:
            self._on_assigned(len(self._consumer.assignment()))

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        owned = {tp: offset for tp, offset in offsets.items() if tp in self._consumer.assignment()}
        self._next.update(owned)
        if not owned:
            return
        try:
            await self._consumer.commit(owned)
        except KafkaError as exc:  # a rebalance took them: the new owner reads them again
            log.warning(
                "%s: commit failed (%s); those records may be delivered again", self.stats.name, exc
            )

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        self._pending.update(partitions)

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.discard(tp)
            self._next.pop(tp, None)
        if self._on_assigned is not None:
            self._on_assigned(0)

    def _lag(self) -> dict[PartitionRef, int]:
        return lag(self._consumer, self._next)


def notifier_decoders(
    commands_topic: str,
    violations_topic: str,
) -> dict[str, Decoder[Notification]]:
    return {commands_topic: command_notification, violations_topic: violation_notification}
