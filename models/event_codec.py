"""Bytes in and out of the phase event contract: orjson encoding, the compiled decoder, the
size limit, the key check.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
import orjson

from models.compiled import CompiledContract
from models.errors import InvalidEventError
from models.events import PhaseEvent
from models.phases import PhaseStatus
from models.validation import MAX_METADATA_DEPTH, event_from_mapping
from models.wire import Duration, Phase, TimestampText, UuidToken, WorkflowId, as_uuid, moment

#: Default payload limit; Kafka's own default message limit is about 1 MB too.
DEFAULT_MAX_EVENT_BYTES: Final = 1_048_576
_DEEP_ENOUGH_BYTES: Final = 2 * MAX_METADATA_DEPTH


class WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A phase event as written (contract version 1), as msgspec checks it."""

    schema_version: Literal[1]
    event_id: UuidToken
    workflow_id: WorkflowId
    user_id: UuidToken
    phase_number: Phase
    status: PhaseStatus
    timestamp: TimestampText
    duration_ms: Duration | None = None
    previous_phase: Phase | None = None
    error_message: str | None = None
    error_stack: str | None = None
    #: Left raw for orjson, as the reference reads it, so numbers mean the same (orjson reads
    #: an integer beyond 64 bits as a float, msgspec as an int that orjson cannot write back).
    metadata: msgspec.Raw = msgspec.Raw(b"null")
    rollback_triggered: bool | None = None
    rollback_to_phase: Phase | None = None


def _event(wire: WireEvent) -> PhaseEvent | None:
    event_id, user_id = as_uuid(wire.event_id), as_uuid(wire.user_id)
    timestamp = moment(wire.timestamp)
    raw_metadata = bytes(wire.metadata)
    if event_id is None or user_id is None or timestamp is None or _may_nest_too_deep(raw_metadata):
        return None
    metadata = orjson.loads(raw_metadata)
    if metadata is None:  # null or absent means empty
        metadata = {}
    if not isinstance(metadata, dict):
        return None
    return PhaseEvent(
        event_id,
        wire.workflow_id,
        user_id,
        wire.phase_number,
        wire.status,
        timestamp,
        wire.duration_ms,
        wire.previous_phase,
        wire.error_message,
        wire.error_stack,
        metadata,
        wire.rollback_triggered is True,
        wire.rollback_to_phase,
    )


def _may_nest_too_deep(metadata: bytes) -> bool:
    # Too deep takes MAX_METADATA_DEPTH containers, the metadata's own included, so at
    # least twice as many bytes (each opens and closes): shorter metadata is never counted.
    # Brackets inside its strings only make the count err on the safe side.
    return len(metadata) >= _DEEP_ENOUGH_BYTES and (
        metadata.count(b"{") + metadata.count(b"[") >= MAX_METADATA_DEPTH
    )


def reference_decode_event(value: bytes) -> PhaseEvent:
    """The reference validator: orjson, then every field checked by hand, in contract order."""
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("$", f"is not valid UTF-8 JSON: {exc}") from None
    return event_from_mapping(payload)


PHASE_EVENTS: Final = CompiledContract(
    msgspec.json.Decoder(WireEvent), _event, reference_decode_event
)


def encode_event(event: PhaseEvent) -> bytes:
    """The wire form: UTF-8 JSON, fields in contract order, timestamps in RFC 3339."""
    # orjson, not msgspec's encoder: it writes UTC as +00:00, as the contract's examples do.
    return orjson.dumps(msgspec.structs.asdict(event))


def decode_event(value: bytes | None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> PhaseEvent:
    """Parse and validate one payload; raise InvalidEventError naming field and reason."""
    if value is None:
        raise InvalidEventError("$", "is a tombstone (null value); phase events are never deleted")
    if not value:
        raise InvalidEventError("$", "is empty")
    if len(value) > max_bytes:
        raise InvalidEventError("$", f"is {len(value)} bytes, over the limit of {max_bytes}")
    return PHASE_EVENTS.decode(value)


def decode_record(
    key: bytes | None, value: bytes | None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> PhaseEvent:
    """Decode a Kafka record and check that its key is the event's workflow id."""
    event = decode_event(value, max_bytes=max_bytes)
    if key is None:  # a keyless record lands on any partition: its workflow loses its order
        raise InvalidEventError(
            "$key",
            "is missing (null); publish with the workflow id as the record key, so "
            "that one workflow's events stay in order on one partition",
        )
    if key != event.key:
        raise InvalidEventError(
            "workflow_id", "does not match the record key (the key must be the workflow id)"
        )
    return event
