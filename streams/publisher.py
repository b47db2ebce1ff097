"""The publisher SDK: ``PhaseEventPublisher`` and its ``phase()`` execution flow."""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from models.event_codec import DEFAULT_MAX_EVENT_BYTES, decode_event, encode_event
from models.events import PhaseEvent
from models.phases import PhaseStatus
from streams.batching import PartitionBatches
from streams.kafka import KafkaCluster, as_cluster, producer_config
from streams.partitioner import KeyPartitioner

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "workflow.phase-events"


@dataclass(frozen=True, slots=True)
class Published:
    """Where an event landed in the log."""

    partition: int
    offset: int


@dataclass(slots=True)
class PhaseRun:
    """What ``phase()`` yields: the started event, and metadata to add to the outcome."""

    started: PhaseEvent
    metadata: dict[str, Any] = field(default_factory=dict)


def _checked(event: PhaseEvent, max_bytes: int) -> bytes:
    # Round-trip through the validator: the SDK never emits what a consumer would reject.
    payload = encode_event(event)
    decode_event(payload, max_bytes=max_bytes)
    return payload


class PhaseEventPublisher:
    """Publishes phase events to Kafka, keyed by workflow id, with acks=all.

    Use as ``async with PhaseEventPublisher(servers) as publisher:``; ``servers`` is
    ``host:port,...`` of a cluster without security, or a ``KafkaCluster`` (TLS, SASL).
    """

    def __init__(
        self,
        servers: str | KafkaCluster,
        topic: str = DEFAULT_TOPIC,
        *,
        linger_ms: int = 20,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        client_id: str = "phasestream-publisher",
        idempotent: bool = False,
    ) -> None:
        self.topic = topic
        self._max_bytes = max_event_bytes
        cluster = as_cluster(servers)
        partitioner = KeyPartitioner()
        self._producer = AIOKafkaProducer(
            **producer_config(
                cluster,
                client_id=client_id,
                linger_ms=linger_ms,
                idempotent=idempotent,
                partitioner=partitioner,
            )
        )
        # The producer's own partitioner: a workflow's batches go where publish() sends it.
        self._batches = PartitionBatches(self._producer, topic, partitioner)

    async def __aenter__(self) -> PhaseEventPublisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        # The batches of publish_many calls under way first: some may not be queued yet.
        await self._batches.drain()
        await self._producer.stop()  # flushes what is pending; safe to call twice

    async def publish(self, event: PhaseEvent) -> Published:
        """Validate, send and wait for the broker's acknowledgement."""
        payload = _checked(event, self._max_bytes)
        meta = await self._producer.send_and_wait(self.topic, payload, key=event.key)
        return Published(meta.partition, meta.offset)

    async def publish_many(self, events: Iterable[PhaseEvent]) -> list[Published]:
        """Validate all first (nothing is sent if one is invalid), then send and await all;
        where each landed, in the order given.

        The events go in one batch per partition (more where one fills up), shared with
        concurrent calls, each workflow's events on the partition ``publish()`` uses.
        """
        records = [(e.key, _checked(e, self._max_bytes)) for e in events]
        return [Published(p, offset) for p, offset in await self._batches.send(records)]

    @asynccontextmanager
    async def phase(
        self,
        workflow_id: str,
        user_id: uuid.UUID,
        phase_number: int,
        *,
        metadata: Mapping[str, Any] | None = None,
        previous_phase: int | None = None,
    ) -> AsyncIterator[PhaseRun]:
        """Publish ``started``; on exit ``completed`` with its duration, or ``failed``.

        A failure publishes ``error_message`` and ``error_stack`` and re-raises.
        """
        started = new_event(
            workflow_id,
            user_id,
            phase_number,
            PhaseStatus.STARTED,
            metadata=metadata or {},
            previous_phase=previous_phase,
        )
        await self.publish(started)
        run = PhaseRun(started, dict(metadata or {}))
        began = time.monotonic()
        try:
            yield run
        except Exception as exc:
            await self._finish(run, began, PhaseStatus.FAILED, exc)
            raise
        await self._finish(run, began, PhaseStatus.COMPLETED, None)

    async def _finish(
        self, run: PhaseRun, began: float, status: PhaseStatus, exc: Exception | None
    ) -> None:
        elapsed = round((time.monotonic() - began) * 1000)
        outcome = msgspec.structs.replace(
            run.started,
            event_id=uuid.uuid4(),
            status=status,
            timestamp=datetime.now(UTC),
            duration_ms=elapsed,
            metadata=run.metadata,
            error_message=None if exc is None else _no_nul(str(exc) or type(exc).__name__),
            error_stack=None if exc is None else _no_nul("".join(traceback.format_exception(exc))),
        )
        await self.publish(outcome)


def _no_nul(text: str) -> str:
    # The contract refuses NUL characters (Postgres text cannot hold them); escape them.
    return text.replace("\x00", "\\x00")


def new_event(
    workflow_id: str, user_id: uuid.UUID, phase_number: int, status: PhaseStatus, **fields: Any
) -> PhaseEvent:
    """A new event with a fresh id and the current time as its event time."""
    return PhaseEvent(
        event_id=uuid.uuid4(),
        workflow_id=workflow_id,
        user_id=user_id,
        phase_number=phase_number,
        status=status,
        timestamp=datetime.now(UTC),
        **fields,
    )
