"""The dead-letter topic: invalid input with its reason, never dropped silently.

A dead letter keeps the original key, value and headers, and adds headers that say why
and where it came from. Delivery is at-least-once: a crash after the DLQ send and before
the position moves re-sends it, which the source coordinates make easy to de-duplicate.

A letter the DLQ topic could not take must not block its partition forever: a value over
``max_value_bytes`` is cut to that size, and a letter the broker still refuses as too large
is sent without value and original headers. Either way the letter says so (original size
and SHA-256) and points at the original record by its source coordinates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from models.dead_letters import HEADER_PREFIX
from streams.kafka import KafkaCluster, producer_config

#: Below the 1 MiB a Kafka topic takes by default (message.max.bytes), headers included.
DEFAULT_MAX_VALUE_BYTES: Final = 1_000_000
#: What a letter may take beyond its value: key, our headers and the original ones.
HEADERS_ROOM: Final = 48_576
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    field: str
    reason: str
    #: Set when the value was cut: (original size in bytes, its SHA-256 in hex).
    cut: tuple[int, str] | None = None

    @classmethod
    def of(cls, record: Any, field: str, reason: str) -> DeadLetter:
        """The letter for a consumed ``record`` (an aiokafka ConsumerRecord), refused so."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            list(record.headers or ()),
            field,
            reason,
        )

    def dlq_headers(self, consumer: str) -> list[tuple[str, bytes]]:
        ours = {
            "reason": f"{self.field}: {self.reason}",
            "field": self.field,
            "source.topic": self.topic,
            "source.partition": str(self.partition),
            "source.offset": str(self.offset),
            "source.timestamp": str(self.timestamp_ms),
            "consumer": consumer,
        }
        if self.cut is not None:
            ours |= {
                "value.truncated": "true",
                "value.size": str(self.cut[0]),
                "value.sha256": self.cut[1],
            }
        originals = [(k, v) for k, v in self.headers if not k.startswith(HEADER_PREFIX)]
        return originals + [(HEADER_PREFIX + k, v.encode()) for k, v in ours.items()]

    def within(self, max_value_bytes: int) -> DeadLetter:
        """This letter, its value cut to ``max_value_bytes`` if it is longer."""
        if self.value is None or len(self.value) <= max_value_bytes:
            return self
        return replace(self, value=self.value[:max_value_bytes], cut=self._fingerprint())

    def bare(self) -> DeadLetter:
        """This letter without value and original headers: only where to find the record."""
        return replace(self, value=None, headers=(), cut=self._fingerprint())

    def _fingerprint(self) -> tuple[int, str] | None:
        if self.cut is not None or self.value is None:
            return self.cut
        return len(self.value), hashlib.sha256(self.value).hexdigest()


class DeadLetters(Protocol):
    """Where a consumer sends the records it cannot use (``DeadLetterWriter``, or
    ``NoDeadLetters`` for a replay)."""

    async def send_all(self, letters: Sequence[DeadLetter]) -> None: ...


class NoDeadLetters:
    """A replay's: its invalid records were dead-lettered on their first pass; not again."""

    async def send_all(self, letters: Sequence[DeadLetter]) -> None:
        return None


class DeadLetterWriter:
    """Sends dead letters and waits until the broker has them all."""

    def __init__(
        self,
        cluster: KafkaCluster,
        topic: str,
        consumer: str,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        idempotent: bool = False,
    ) -> None:
        self.topic = topic
        self._consumer = consumer
        self._max_value_bytes = max_value_bytes
        # The producer refuses what the topic would (by default): that is the cue to cut.
        self._producer = AIOKafkaProducer(
            **producer_config(
                cluster,
                client_id=f"{consumer}-dlq",
                linger_ms=5,
                max_request_bytes=max_value_bytes + HEADERS_ROOM,
                idempotent=idempotent,
            )
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send_all(self, letters: Sequence[DeadLetter]) -> None:
        sent = [
            (letter, await self._send(letter.within(self._max_value_bytes))) for letter in letters
        ]
        for letter, future in sent:
            if future is None:
                continue
            try:
                await future
            except MessageSizeTooLargeError:
                await self._send_bare(letter)

    async def _send(self, letter: DeadLetter) -> asyncio.Future[Any] | None:
        """The delivery future; None if the producer refused it by size (sent bare)."""
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                self.topic, letter.value, key=letter.key, headers=letter.dlq_headers(self._consumer)
            )
        except MessageSizeTooLargeError:
            await self._send_bare(letter)
            return None
        return future

    async def _send_bare(self, letter: DeadLetter) -> None:
        log.warning(
            "dead letter from %s[%d]@%d too large for %s: sent without its value",
            letter.topic,
            letter.partition,
            letter.offset,
            self.topic,
        )
        bare = letter.bare()
        await (
            await self._producer.send(
                self.topic, None, key=letter.key, headers=bare.dlq_headers(self._consumer)
            )
        )
