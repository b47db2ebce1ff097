"""Bytes in and out of the SLA violation contract (version 1) on
``workflow.sla-violations``: orjson encoding, the compiled decoder and its reference
validator, the key check.
"""

from __future__ import annotations

from typing import Final, Literal, cast
from uuid import UUID

import msgspec
import orjson

from models.compiled import CompiledContract
from models.errors import InvalidEventError
from models.json_object import enum_field, load_object
from models.sla.violation import VIOLATION_SCHEMA_VERSION, SlaViolation, ViolationKind
from models.validation import (
    int_field,
    phase_field,
    timestamp_field,
    uuid_field,
    workflow_id_field,
)
from models.wire import Integer, Phase, TimestampText, UuidToken, WorkflowId, as_uuid, moment

FIELDS: Final = (
    "violation_id",
    "kind",
    "workflow_id",
    "user_id",
    "phase_number",
    "started_event_id",
    "started_at",
    "detected_at",
    "elapsed_ms",
    "threshold_ms",
    "schema_version",
)
_KINDS: Final = {kind.value: kind for kind in ViolationKind}


class WireViolation(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An SLA violation as written (contract version 1), as msgspec checks it."""

    violation_id: UuidToken
    kind: ViolationKind
    workflow_id: WorkflowId
    user_id: UuidToken
    phase_number: Phase
    started_event_id: UuidToken
    started_at: TimestampText
    detected_at: TimestampText
    elapsed_ms: Integer
    threshold_ms: Integer
    schema_version: Literal[1]


def _violation(wire: WireViolation) -> SlaViolation | None:
    ids = as_uuid(wire.violation_id), as_uuid(wire.user_id), as_uuid(wire.started_event_id)
    started_at, detected_at = moment(wire.started_at), moment(wire.detected_at)
    if started_at is None or detected_at is None or None in ids:
        return None
    violation_id, user_id, started_event_id = cast("tuple[UUID, UUID, UUID]", ids)
    return SlaViolation(
        violation_id,
        wire.kind,
        wire.workflow_id,
        user_id,
        wire.phase_number,
        started_event_id,
        started_at,
        detected_at,
        wire.elapsed_ms,
        wire.threshold_ms,
    )


def reference_decode_violation(value: bytes) -> SlaViolation:
    """The reference validator: orjson, then every field checked by hand."""
    payload = load_object(value, FIELDS, VIOLATION_SCHEMA_VERSION)
    kind = enum_field("kind", payload["kind"], _KINDS)
    return SlaViolation(
        uuid_field("violation_id", payload["violation_id"]),
        kind,
        workflow_id_field(payload["workflow_id"]),
        uuid_field("user_id", payload["user_id"]),
        phase_field("phase_number", payload["phase_number"]),
        uuid_field("started_event_id", payload["started_event_id"]),
        timestamp_field(payload["started_at"], "started_at"),
        timestamp_field(payload["detected_at"], "detected_at"),
        int_field("elapsed_ms", payload["elapsed_ms"]),
        int_field("threshold_ms", payload["threshold_ms"]),
    )


VIOLATIONS: Final = CompiledContract(
    msgspec.json.Decoder(WireViolation), _violation, reference_decode_violation
)


def encode_violation(violation: SlaViolation) -> bytes:
    """The wire form: UTF-8 JSON, fields in contract order, timestamps in RFC 3339."""
    return orjson.dumps(violation)


def decode_violation(key: bytes | None, value: bytes | None) -> SlaViolation:
    """Parse and validate one violation; raise InvalidEventError naming field and reason."""
    violation = VIOLATIONS.decode(value or b"")
    if key is not None and key != violation.key:
        raise InvalidEventError("workflow_id", "does not match the record key")
    return violation
