"""The port between consuming (streams/) and projecting (projections/).

A consumer asks its sink where each partition stands, seeks there, and hands the sink
each batch together with the positions the batch ends at. The sink makes rows and
positions durable together, so the pair resumes exactly where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar, runtime_checkable
from uuid import UUID

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PartitionRef:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class PositionMove:
    """Where a partition stood (None: never stored) and where it stands after the batch.

    ``highwater`` (the partition's end as last fetched) and ``last_event_at`` (the newest
    event time in the batch) only feed the freshness view; None leaves the stored value.
    """

    expected: int | None
    next_offset: int
    highwater: int | None = None
    last_event_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """Decoded events of each partition, in log order, and where each partition ends up."""

    by_partition: Mapping[PartitionRef, Sequence[T]]
    moves: Mapping[PartitionRef, PositionMove]
    events: Sequence[T] = field(init=False)

    def __post_init__(self) -> None:
        flat = [event for events in self.by_partition.values() for event in events]
        object.__setattr__(self, "events", flat)

    @classmethod
    def single(cls, ref: PartitionRef, events: Sequence[T], move: PositionMove) -> Batch[T]:
        return cls({ref: events}, {ref: move})


class PositionedSink(Protocol[T]):
    """A projection that stores its consumer positions beside its rows."""

    async def positions(
        self, consumer: str, partitions: Iterable[PartitionRef]
    ) -> dict[PartitionRef, int]:
        """The stored next offset of each partition that has one."""
        ...

    async def apply(self, consumer: str, batch: Batch[T]) -> None:
        """Write the batch's rows and move its positions atomically.

        Raises StalePositionError when a stored position is not the expected one (another
        consumer moved it), SinkUnavailableError when the sink cannot be reached, and
        RejectedRecordError when a record can never be written.
        """
        ...


class Turn:
    """One write's place among overlapping writes of a consumer, in log order.

    The sink marks ``claimed`` once the write holds its event ids, and settles the turn
    failed as soon as one of the write's transactions fails; the consumer settles it
    committed once the whole write is durable. The write after it (``after``) claims only
    once this one claimed, so two batches sharing an id keep the log's order (unless the
    sink knows the two claim no key in common: ``keys``), and moves its positions only
    once this one committed.
    """

    __slots__ = ("_after", "_claimed", "_committed", "_settled", "keys")

    def __init__(self, after: Turn | None = None) -> None:
        #: What the write claims (event ids), once the sink knows; None: not yet.
        self.keys: AbstractSet[object] | None = None
        self._after = after
        self._claimed = asyncio.Event()
        self._settled = asyncio.Event()
        self._committed = False

    @property
    def after(self) -> Turn | None:
        """The write before this one, while it may still be in flight."""
        return self._after

    def claimed(self) -> None:
        self._claimed.set()

    def settle(self, committed: bool) -> None:
        """The write ended, or failed once (its retries leave it failed): the first call
        counts."""
        if self._settled.is_set():
            return
        self._committed = committed
        if committed:  # its retries never run: the link would only lengthen the chain
            self._after = None
        self._claimed.set()
        self._settled.set()

    def shares_keys(self, keys: AbstractSet[object]) -> bool:
        """Whether this write may claim one of ``keys`` (True while its own are unknown)."""
        return self.keys is None or not self.keys.isdisjoint(keys)

    async def wait_claimed(self) -> bool:
        """Wait until this write holds its ids or ended; False if it ended uncommitted."""
        await self._claimed.wait()
        return not self._settled.is_set() or self._committed

    async def wait_committed(self) -> bool:
        """Wait until this write is settled; whether it committed."""
        await self._settled.wait()
        return self._committed


@runtime_checkable
class PipelinedSink(PositionedSink[T], Protocol):
    """A sink that takes a write while the one before it is in flight."""

    async def apply_in_turn(self, consumer: str, batch: Batch[T], turn: Turn) -> None:
        """``apply``, overlapping the write ``turn.after``: raises EarlierWriteFailedError
        (a StalePositionError) without writing anything if that one did not commit, and
        settles ``turn`` failed when it raises (the caller settles it committed)."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message decided in a transaction, waiting to be published."""

    id: UUID
    key: bytes
    value: bytes
    topic: str | None = None  # None: the relay's own topic


@dataclass(frozen=True, slots=True)
class SendAttempt:
    """Where a relay was about to send an item: if it stopped before forgetting the item,
    the item is at or after ``from_offset`` of that partition, or nowhere."""

    id: UUID
    topic: str
    partition: int
    from_offset: int


class OutboxClaim(Protocol):
    """Items claimed by one relay (no other relay sees them) until the claim ends."""

    @property
    def items(self) -> Sequence[OutboxItem]:
        """The claimed items, oldest first."""
        ...

    @property
    def in_doubt(self) -> Mapping[UUID, SendAttempt]:
        """Items that a relay tried to send before, and may have: their attempts."""
        ...

    async def attempting(self, attempts: Sequence[SendAttempt]) -> None:
        """Make the attempts durable, before anything is sent."""
        ...

    async def published(self, ids: Sequence[UUID]) -> None:
        """Forget these items (and their attempts) when the claim ends well."""
        ...


class Outbox(Protocol):
    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxClaim]:
        """The oldest unclaimed items, held until the context exits."""
        ...
