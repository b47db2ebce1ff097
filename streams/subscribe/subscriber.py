"""``Subscriber``: typed values from a phasestream topic for a downstream consumer.

For each record, in log order per partition:

1. decode it with the topic's contract; an invalid record goes to the caller's
   dead-letter topic with the reason;
2. claim its deterministic id in the de-duplication store; an id handled before is
   skipped (its effect is already there);
3. run the handler inside the claim, so the id is recorded with the handler's effect; a
   handler that raises is retried with backoff and, after ``max_attempts`` failures, the
   record goes to the dead-letter topic with the last error;
4. once every record of a partition's share of the batch is handled (or dead-lettered,
   and the broker has the letters), commit the partition's position.

A crash anywhere before step 4 delivers the records again (at-least-once); the store's
claims turn that into an exactly-once effect. Cancelling ``run()`` stops at once: the
record in hand is not committed and comes again to the group's next member.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from models.dedup import HandledIds
from models.errors import InvalidEventError, PhasestreamError
from streams.backoff import Backoff
from streams.consumer_stop import stop_consumer
from streams.dead_letters import DeadLetter, DeadLetterWriter
from streams.decoding import dead_letter
from streams.kafka import KafkaCluster, as_cluster, consumer_config
from streams.subscribe.contracts import Contract

T = TypeVar("T")
C = TypeVar("C")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T, C]):
    """One value handed to the handler, with where it came from."""

    value: T
    topic: str
    partition: int
    offset: int
    #: 1 on the first run of the handler for this record, 2 on the first retry, ...
    attempt: int
    #: The store's claim context: the Postgres store's connection, inside the transaction
    #: that records the id (write the engine's own rows through it); None in memory.
    context: C


Handler = Callable[[Delivery[T, C]], Awaitable[None]]


@dataclass(slots=True)
class SubscriberStats:
    handled: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0


class Subscriber(Generic[T, C]):
    """Consumes ``topic`` in the consumer group ``group_id`` and runs a handler per value.

    Use as ``async with Subscriber(...) as subscriber: await subscriber.run(handler)``.
    """

    def __init__(
        self,
        servers: str | KafkaCluster,
        topic: str,
        *,
        group_id: str,
        contract: Contract[T],
        handled: HandledIds[C],
        dlq_topic: str,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        session_timeout_ms: int = 10_000,
        max_wait_ms: int = 500,
        max_records: int = 500,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.topic = topic
        self.group_id = group_id
        self.stats = SubscriberStats()
        self._contract = contract
        self._handled = handled
        self._max_attempts = max_attempts
        self._backoff = backoff or Backoff(initial_s=0.5, max_s=30.0)
        self._stop = asyncio.Event()
        cluster = as_cluster(servers)
        self._consumer = AIOKafkaConsumer(
            topic,
            **consumer_config(
                cluster,
                group_id=group_id,
                session_timeout_ms=session_timeout_ms,
                max_wait_ms=max_wait_ms,
                max_records=max_records,
            ),
        )
        self._letters = DeadLetterWriter(cluster, dlq_topic, group_id)

    async def __aenter__(self) -> Subscriber[T, C]:
        await self._letters.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._letters.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Leave the group (a held group join is given up after a bound, as the consumers
        do) and flush the dead-letter producer; safe to call twice."""
        try:
            await stop_consumer(self._consumer, self.group_id)
        finally:
            await self._letters.stop()

    def stop(self) -> None:
        """Make ``run()`` return after the record in hand (cancelling it stops at once);
        a record still being retried is left uncommitted."""
        self._stop.set()

    async def run(self, handler: Handler[T, C]) -> None:
        """Handle values until ``stop()`` or cancellation."""
        while not self._stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                if self._stop.is_set():
                    return
                await self._partition(tp, records, handler)

    async def _partition(
        self, tp: TopicPartition, records: Sequence[Any], handler: Handler[T, C]
    ) -> None:
        for record in records:
            if not await self._record(tp, record, handler):
                return  # the new owner (or the next run) goes on from the last commit
        await self._commit(tp, int(records[-1].offset) + 1)

    async def _record(self, tp: TopicPartition, record: Any, handler: Handler[T, C]) -> bool:
        """Handle or dead-letter one record; False if abandoned (partition revoked, stop)."""
        try:
            value = self._contract.decode(record.key, record.value)
        except InvalidEventError as exc:
            await self._dead(dead_letter(record, exc))
            return True
        failures = 0
        for attempt in itertools.count(1):
            if self._stop.is_set() or tp not in self._consumer.assignment():
                return False
            try:
                await self._handle_once(record, value, attempt, handler)
                return True
            except Exception as exc:  # the handler's own errors are its business
                failures += 0 if _retriable(exc) else 1
                if failures >= self._max_attempts:
                    await self._dead(_handler_letter(record, failures, exc))
                    return True
                await self._pause(record, attempt, exc)
        raise AssertionError("unreachable")  # itertools.count never ends

    async def _pause(self, record: Any, attempt: int, exc: Exception) -> None:
        pause = self._backoff.delay(attempt)
        log.warning(
            "%s: handler failed on %s[%d]@%d (attempt %d: %s: %s); retrying in %.1f s",
            self.group_id,
            record.topic,
            record.partition,
            record.offset,
            attempt,
            type(exc).__name__,
            exc,
            pause,
        )
        self.stats.retries += 1
        await asyncio.sleep(pause)

    async def _handle_once(
        self, record: Any, value: T, attempt: int, handler: Handler[T, C]
    ) -> None:
        message_id = self._contract.message_id(value)
        async with self._handled.claim(self.group_id, message_id) as claim:
            if claim is None:
                self.stats.duplicates += 1
                log.debug("%s: %s handled before; skipped", self.group_id, message_id)
                return
            await handler(
                Delivery(
                    value, record.topic, record.partition, record.offset, attempt, claim.context
                )
            )
        self.stats.handled += 1

    async def _dead(self, letter: DeadLetter) -> None:
        await self._letters.send_all([letter])
        self.stats.dead_lettered += 1
        log.warning(
            "%s: %s[%d]@%d to %s: %s: %s",
            self.group_id,
            letter.topic,
            letter.partition,
            letter.offset,
            self._letters.topic,
            letter.field,
            letter.reason,
        )

    async def _commit(self, tp: TopicPartition, next_offset: int) -> None:
        try:
            await self._consumer.commit({tp: next_offset})
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved the partition: its new owner redelivers from the last commit.
            log.warning(
                "%s: could not commit %s[%d] at %d (%s); the records come again",
                self.group_id,
                tp.topic,
                tp.partition,
                next_offset,
                exc,
            )


def _retriable(exc: Exception) -> bool:
    # The store (or the engine's sink) is away: not the record's fault, so no attempt spent.
    return isinstance(exc, PhasestreamError) and exc.retriable


def _handler_letter(record: Any, failures: int, exc: Exception) -> DeadLetter:
    reason = f"failed {failures} times; last error: {type(exc).__name__}: {exc}"
    return DeadLetter.of(record, "handler", reason)
