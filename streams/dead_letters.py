"""The dead-letter topic: invalid input with its reason, never dropped silently.

A dead letter keeps the original key, value and headers, and adds headers that say why
and where it came from. Delivery is at-least-once: a crash after the DLQ send and before
the position moves re-sends it, which the source coordinates make easy to de-duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaProducer

from streams.kafka import producer_config

HEADER_PREFIX: Final = "phasestream."


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

    def dlq_headers(self, consumer: str) -> list[tuple[str, bytes]]:
        ours = {"reason": f"{self.field}: {self.reason}", "field": self.field,
                "source.topic": self.topic, "source.partition": str(self.partition),
                "source.offset": str(self.offset), "source.timestamp": str(self.timestamp_ms),
                "consumer": consumer}
        originals = [(k, v) for k, v in self.headers if not k.startswith(HEADER_PREFIX)]
        return originals + [(HEADER_PREFIX + k, v.encode()) for k, v in ours.items()]


class DeadLetterWriter:
    """Sends dead letters and waits until the broker has them all."""

    def __init__(self, bootstrap_servers: str, topic: str, consumer: str) -> None:
        self.topic = topic
        self._consumer = consumer
        self._producer = AIOKafkaProducer(**producer_config(
            bootstrap_servers, client_id=f"{consumer}-dlq", linger_ms=5,
            max_request_bytes=64 * 1_048_576))

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send_all(self, letters: Sequence[DeadLetter]) -> None:
        futures = [await self._producer.send(self.topic, letter.value, key=letter.key,
                                             headers=letter.dlq_headers(self._consumer))
                   for letter in letters]
        for future in futures:
            await future
