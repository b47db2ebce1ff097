"""Publishes what a transaction decided (the outbox) to Kafka, each item exactly once.

Per round: claim the oldest items (no other relay can claim them meanwhile); record, and
commit, where each is about to go (topic, partition, and an offset it cannot land
before); send them, each with its id in a header; wait for every acknowledgement; forget
them. A relay that stops after sending and before forgetting leaves those attempts
behind: whoever claims the items next reads the partitions from the recorded offsets to
their ends and sends only the items whose ids it does not find there. So neither a crash
nor a lost Postgres connection puts an item on its topic twice.

The partition is chosen here, with Kafka's default partitioner (murmur2 of the key), so
an item lands where any other producer would put its key, and the attempt can name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Final
from uuid import UUID

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from models.errors import SinkUnavailableError
from models.ports import Outbox, OutboxClaim, OutboxItem, SendAttempt
from streams.kafka import KafkaCluster
from streams.topic_scan import TopicScanError, header_values, highwaters

log = logging.getLogger(__name__)
#: The header that carries an outbox item's id on its topic.
ID_HEADER: Final = "phasestream.outbox-id"


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        cluster: KafkaCluster,
        interval_s: float,
        batch: int = 1000,
        on_published: Callable[[Sequence[OutboxItem]], None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._producer = producer
        self._topic = topic
        self._cluster = cluster
        self._interval_s = interval_s
        self._batch = batch
        self._on_published = on_published
        self._partitioner = DefaultPartitioner()
        # Per partition, an offset below which nothing this relay sends can land: the
        # end seen before the first send, then one past each acknowledged offset.
        self._floors: dict[TopicPartition, int] = {}
        self.published = 0
        self.found_published = 0  # in-doubt items that were already on their topic

    async def relay_once(self) -> int:
        async with self._outbox.claim(self._batch) as claim:
            if not claim.items:
                return 0
            already = await self._already_published(claim)
            todo = [item for item in claim.items if item.id not in already]
            if todo:
                await self._send(claim, todo)
            await claim.published([item.id for item in claim.items])
        self.published += len(todo)
        self.found_published += len(claim.items) - len(todo)
        if self._on_published is not None:
            self._on_published(claim.items)
        return len(claim.items)

    async def _send(self, claim: OutboxClaim, items: Sequence[OutboxItem]) -> None:
        targets = await self._targets(items)
        for topic in {tp.topic for tp in targets if tp not in self._floors}:
            self._floors.update(
                await highwaters(self._cluster, topic, client_id="phasestream-relay")
            )
        await claim.attempting(
            [
                SendAttempt(item.id, tp.topic, tp.partition, self._floors[tp])
                for item, tp in zip(items, targets, strict=True)
            ]
        )
        await self._deliver(items, targets)

    async def _deliver(
        self, items: Sequence[OutboxItem], targets: Sequence[TopicPartition]
    ) -> None:
        """Send and wait for every acknowledgement."""
        futures = [
            await self._producer.send(
                tp.topic,
                item.value,
                key=item.key,
                partition=tp.partition,
                headers=[(ID_HEADER, str(item.id).encode())],
            )
            for item, tp in zip(items, targets, strict=True)
        ]
        for tp, metadata in zip(targets, await asyncio.gather(*futures), strict=True):
            self._floors[tp] = max(self._floors[tp], metadata.offset + 1)

    async def _targets(self, items: Sequence[OutboxItem]) -> list[TopicPartition]:
        """Where each item goes: its topic, and the partition its key maps to."""
        topics = [item.topic or self._topic for item in items]
        partitions = {
            topic: sorted(await self._producer.partitions_for(topic)) for topic in set(topics)
        }
        return [
            TopicPartition(
                topic, int(self._partitioner(item.key, partitions[topic], partitions[topic]))
            )
            for item, topic in zip(items, topics, strict=True)
        ]

    async def _already_published(self, claim: OutboxClaim) -> set[UUID]:
        """Ids of in-doubt items that a relay before us did put on their topic."""
        if not claim.in_doubt:
            return set()
        starts: dict[TopicPartition, int] = {}
        for attempt in claim.in_doubt.values():
            tp = TopicPartition(attempt.topic, attempt.partition)
            starts[tp] = min(attempt.from_offset, starts.get(tp, attempt.from_offset))
        found = await header_values(
            self._cluster, starts, ID_HEADER, client_id="phasestream-relay-check"
        )
        published = {i for i in claim.in_doubt if str(i).encode() in found}
        log.info(
            "outbox relay: %d items in doubt after an interrupted send; %d were "
            "published, the rest is sent now",
            len(claim.in_doubt),
            len(published),
        )
        return published

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.relay_once()
            except (SinkUnavailableError, TopicScanError, KafkaError) as exc:
                log.warning("outbox relay: %s; retrying", exc)
                sent = 0
            if sent < self._batch:  # drained: wait, unless asked to stop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
