"""Turning fetched Kafka records into events and dead letters, one partition at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from models.errors import InvalidEventError
from streams.dead_letters import DeadLetter

T = TypeVar("T")
#: Decodes a record's key and value, or raises InvalidEventError naming field and reason.
Decoder = Callable[[bytes | None, bytes | None], T]

#: Records decoded between two yields to the event loop, so that a write in flight (COPY,
#: the transaction's round trips) progresses while a batch is being decoded.
SLICE: Final = 50


@dataclass(slots=True)
class Decoded(Generic[T]):
    """One partition's share of a batch."""

    records: Sequence[Any]
    events: list[T] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    #: The record each event was decoded from (events[i] came from origins[i]).
    origins: list[Any] = field(default_factory=list)

    @property
    def next_offset(self) -> int:
        return int(self.records[-1].offset) + 1


def dead_letter(record: Any, error: InvalidEventError) -> DeadLetter:
    return DeadLetter.of(record, error.field, error.reason)


def decode_one(record: Any, decoded: Decoded[T], decoder: Decoder[T]) -> None:
    try:
        decoded.events.append(decoder(record.key, record.value))
    except InvalidEventError as exc:
        decoded.letters.append(dead_letter(record, exc))
    else:
        decoded.origins.append(record)


def without(decoded: Decoded[T], indexes: set[int]) -> Decoded[T]:
    """The same records with the events at ``indexes`` set aside (their letters sent)."""
    kept = [i for i in range(len(decoded.events)) if i not in indexes]
    return Decoded(
        decoded.records, [decoded.events[i] for i in kept], [], [decoded.origins[i] for i in kept]
    )


async def decode_records(records: Sequence[Any], decoder: Decoder[T]) -> Decoded[T]:
    """Decode a partition's records, yielding to the event loop every SLICE records."""
    decoded: Decoded[T] = Decoded(records)
    for start in range(0, len(records), SLICE):
        for record in records[start : start + SLICE]:
            decode_one(record, decoded, decoder)
        await asyncio.sleep(0)
    return decoded
