"""`phasestream publish`: one event from flags, or many as JSON lines from a file or stdin."""

from __future__ import annotations

import itertools
import logging
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from models.errors import InvalidEventError
from models.event_codec import DEFAULT_MAX_EVENT_BYTES, decode_event
from models.events import SCHEMA_VERSION, PhaseEvent
from models.validation import event_from_mapping
from phasestream.kafka_cluster import check_kafka, kafka_cluster
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher

log = logging.getLogger(__name__)
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    error: InvalidEventError

    def __str__(self) -> str:
        return f"line {self.number}: {self.error.field}: {self.error.reason}"


def event_from_flags(fields: dict[str, Any]) -> PhaseEvent:
    """Fill in what a person would not type (id, time, version), then validate all of it."""
    payload = {k: v for k, v in fields.items() if v is not None}
    payload.setdefault("schema_version", SCHEMA_VERSION)
    payload.setdefault("event_id", str(uuid.uuid4()))
    payload.setdefault("timestamp", datetime.now(UTC).isoformat())
    return event_from_mapping(payload)


def read_lines(
    stream: IO[bytes],
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Iterator[tuple[int, PhaseEvent | BadLine]]:
    """Each line's event or what is wrong with it, as the line is read.

    A line is read at most ``max_bytes`` (+ its line end) at a time: a longer one is
    refused, and the rest of it skipped in pieces of that size, never held whole.
    """
    limit = max_bytes + 2  # room for "\r\n"
    for number in itertools.count(1):
        line = stream.readline(limit)
        if not line:
            return
        if len(line) == limit and not line.endswith(b"\n"):
            _skip_rest_of_line(stream, limit)
            yield (
                number,
                BadLine(
                    number,
                    InvalidEventError(
                        "$",
                        f"is longer than {max_bytes} bytes, the event size limit "
                        "(PHASESTREAM_MAX_EVENT_BYTES); skipped unread",
                    ),
                ),
            )
            continue
        text = line.strip()
        if not text:
            continue
        try:
            yield number, decode_event(text, max_bytes=max_bytes)
        except InvalidEventError as exc:
            yield number, BadLine(number, exc)


def _skip_rest_of_line(stream: IO[bytes], limit: int) -> None:
    while (piece := stream.readline(limit)) and not piece.endswith(b"\n"):
        pass


def open_source(path: str) -> IO[bytes]:
    return sys.stdin.buffer if path == "-" else open(path, "rb")  # closed by the caller


async def publish_one(settings: Settings, event: PhaseEvent) -> str:
    await check_kafka(settings)
    async with _publisher(settings) as publisher:
        landed = await publisher.publish(event)
    return f"published {event.event_id} to partition {landed.partition} at offset {landed.offset}"


async def publish_lines(
    settings: Settings,
    lines: Iterable[tuple[int, PhaseEvent | BadLine]],
    on_bad: Callable[[BadLine], None],
) -> tuple[int, int]:
    """Send every valid line (in chunks), handing each bad one to ``on_bad`` as it is met;
    return how many were sent and how many were bad."""
    sent, bad, chunk = 0, 0, []
    await check_kafka(settings)
    async with _publisher(settings) as publisher:
        for _, item in lines:
            if isinstance(item, BadLine):
                bad += 1
                on_bad(item)
                continue
            chunk.append(item)
            if len(chunk) >= CHUNK:
                sent += len(await publisher.publish_many(chunk))
                chunk = []
                if sent % (CHUNK * 20) == 0:
                    log.info("published %d events so far", sent)
        if chunk:
            sent += len(await publisher.publish_many(chunk))
    return sent, bad


def _publisher(settings: Settings) -> PhaseEventPublisher:
    return PhaseEventPublisher(
        kafka_cluster(settings),
        settings.phase_events_topic,
        linger_ms=settings.producer_linger_ms,
        max_event_bytes=settings.max_event_bytes,
        idempotent=settings.kafka_idempotent_producer,
    )
