"""Bytes in and out of the contract: orjson encoding, size limit, key check."""

from __future__ import annotations

from typing import Final

import orjson

from models.errors import InvalidEventError
from models.events import PhaseEvent
from models.validation import event_from_mapping

#: Default payload limit; Kafka's own default message limit is about 1 MB too.
DEFAULT_MAX_EVENT_BYTES: Final = 1_048_576


def encode_event(event: PhaseEvent) -> bytes:
    """The wire form: UTF-8 JSON, fields in contract order, timestamps in RFC 3339."""
    return orjson.dumps(event)


def decode_event(value: bytes | None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> PhaseEvent:
    """Parse and validate one payload; raise InvalidEventError naming field and reason."""
    if value is None:
        raise InvalidEventError("$", "is a tombstone (null value); phase events are never deleted")
    if not value:
        raise InvalidEventError("$", "is empty")
    if len(value) > max_bytes:
        raise InvalidEventError("$", f"is {len(value)} bytes, over the limit of {max_bytes}")
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("$", f"is not valid UTF-8 JSON: {exc}") from None
    return event_from_mapping(payload)


def decode_record(key: bytes | None, value: bytes | None, *,
                  max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> PhaseEvent:
    """Decode a Kafka record and check that its key is the event's workflow id."""
    event = decode_event(value, max_bytes=max_bytes)
    if key is None:  # a keyless record lands on any partition: its workflow loses its order
        raise InvalidEventError(
            "$key", "is missing (null); publish with the workflow id as the record key, so "
                    "that one workflow's events stay in order on one partition")
    if key != event.key:
        raise InvalidEventError(
            "workflow_id", "does not match the record key (the key must be the workflow id)"
        )
    return event
