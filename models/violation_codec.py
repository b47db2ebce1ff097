"""The SLA violation contract (version 1): JSON on ``workflow.sla-violations``."""

from __future__ import annotations

import orjson

from models.errors import InvalidEventError
from models.json_object import enum_field, load_object
from models.sla import VIOLATION_SCHEMA_VERSION, SlaViolation, ViolationKind
from models.validation import _int_field, _phase, _timestamp, _uuid, _workflow_id

FIELDS = ("violation_id", "kind", "workflow_id", "user_id", "phase_number",
          "started_event_id", "started_at", "detected_at", "elapsed_ms", "threshold_ms",
          "schema_version")
KINDS = {kind.value: kind for kind in ViolationKind}


def encode_violation(violation: SlaViolation) -> bytes:
    return orjson.dumps(violation)


def decode_violation(key: bytes | None, value: bytes | None) -> SlaViolation:
    """Parse and validate one violation; raise InvalidEventError naming field and reason."""
    payload = load_object(value, FIELDS, VIOLATION_SCHEMA_VERSION)
    kind = enum_field("kind", payload["kind"], KINDS)
    violation = SlaViolation(
        _uuid("violation_id", payload["violation_id"]), kind,
        _workflow_id(payload["workflow_id"]), _uuid("user_id", payload["user_id"]),
        _phase("phase_number", payload["phase_number"]),
        _uuid("started_event_id", payload["started_event_id"]),
        _timestamp(payload["started_at"]), _timestamp(payload["detected_at"]),
        _int_field("elapsed_ms", payload["elapsed_ms"]),
        _int_field("threshold_ms", payload["threshold_ms"]))
    if key is not None and key != violation.key:
        raise InvalidEventError("workflow_id", "does not match the record key")
    return violation
