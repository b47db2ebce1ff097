"""Records sent as one batch per partition, shared by concurrent callers.

aiokafka's ``send()`` costs a partitioner call, a future and a lookup per record, and the
sender resolves each of those futures on the acknowledgement. Its batch API
(``create_batch``, ``send_batch``) costs one future per batch. ``PartitionBatches`` puts
each record in its partition's open batch and awaits the batches, not the records.

A batch stays open to further records until it enters the producer's queue: aiokafka
takes one queued batch per partition and lets the next wait until the sender has taken
it, so while a batch waits, the records of calls made meanwhile join it, as ``send()``
would add them to the pending batch. A busy partition thus gets bigger batches, not more
of them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

#: ``(key, all_partitions, available)`` to a partition: the producer's own partitioner.
Partitioner = Callable[[bytes, Sequence[int], Sequence[int]], int]


class _Batch:
    """One partition's batch on its way: open to records until it is queued."""

    __slots__ = ("acked", "builder", "partition")

    def __init__(self, builder: Any, partition: int) -> None:
        self.builder = builder  # an aiokafka BatchBuilder
        self.partition = partition
        self.acked: asyncio.Task[int]  # the base offset the broker gave the batch


class PartitionBatches:
    """Sends records to ``topic`` in per-partition batches; ``send`` returns where each
    landed. Records with one key keep the order in which they were given, across calls."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitioner: Partitioner) -> None:
        self._producer = producer
        self._topic = topic
        self._partitioner = partitioner
        self._open: dict[int, _Batch] = {}
        # One batch per partition goes into the producer at a time, in the order they
        # were opened (asyncio.Lock is first come, first served): a key's order.
        self._queueing: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Calls placing their records and batches not acknowledged yet: what drain() awaits.
        self._under_way: set[asyncio.Future[Any]] = set()

    async def send(self, records: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        """Send ``(key, value)`` records; each one's ``(partition, offset)``, in order.

        Keys go where the producer's ``send()`` would put them: its partitioner over the
        topic's partitions sorted by id, as aiokafka passes them.
        """
        placing = asyncio.get_running_loop().create_future()
        self._under_way.add(placing)  # drain() waits for a call waiting for metadata
        try:
            partitions = sorted(await self._producer.partitions_for(self._topic))
            # No await from here to the wait below: no batch it appends to is queued midway.
            placed = [
                self._append(self._partitioner(key, partitions, partitions), key, value)
                for key, value in records
            ]
        finally:
            self._under_way.discard(placing)
            placing.set_result(None)
        if not placed:
            return []
        # asyncio.wait, not gather: a caller cancelled must not cancel a shared batch.
        await asyncio.wait({batch.acked for batch, _ in placed})
        return [(batch.partition, batch.acked.result() + relative) for batch, relative in placed]

    async def drain(self) -> None:
        """Wait until the calls under way, and those made meanwhile, have their batches
        acknowledged (or failed): before the producer stops, as a call may still wait for
        the topic's metadata and a batch for its turn, not yet in the producer's queue."""
        while self._under_way:
            await asyncio.wait(set(self._under_way))

    def _append(self, partition: int, key: bytes, value: bytes) -> tuple[_Batch, int]:
        batch = self._open.get(partition)
        if batch is not None:
            added = batch.builder.append(key=key, value=value, timestamp=None)
            if added is not None:  # None: the batch is full (and now closed)
                return batch, added.offset  # the offset within the batch
        batch = self._start(partition)
        # A first record always fits: aiokafka sends an oversized one alone.
        return batch, batch.builder.append(key=key, value=value, timestamp=None).offset

    def _start(self, partition: int) -> _Batch:
        batch = _Batch(self._producer.create_batch(), partition)
        batch.acked = asyncio.create_task(self._queue(batch))
        self._under_way.add(batch.acked)  # also a strong reference until it is done
        batch.acked.add_done_callback(self._done)
        self._open[partition] = batch
        return batch

    def _done(self, acked: asyncio.Task[int]) -> None:
        self._under_way.discard(acked)
        # A failure reaches the callers waiting for the batch; asyncio need not log it
        # again when none is left (all cancelled) or one raised a sibling batch's first.
        if not acked.cancelled():
            acked.exception()

    async def _queue(self, batch: _Batch) -> int:
        """Queue ``batch`` in the producer once its partition's previous one is taken;
        close it to records; its base offset once the broker acknowledges it."""
        async with self._queueing[batch.partition]:
            try:
                acked = await self._producer.send_batch(
                    batch.builder, self._topic, partition=batch.partition
                )
            finally:
                # Queued (or refused): it takes no more records. send_batch returns as soon
                # as it has queued it, before the sender can take it (and, idempotent,
                # number its records), so none joins it after. Closed, the sender takes it
                # at once instead of letting it linger: the records of the calls made
                # while it waited have joined it already, and those calls wait for it.
                if self._open.get(batch.partition) is batch:
                    del self._open[batch.partition]
                batch.builder.close()
        return int((await acked).offset)
