"""The SLA violation contract (version 1): JSON on ``workflow.sla-violations``."""

from __future__ import annotations

from typing import Any

import orjson

from models.errors import InvalidEventError
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
    if not value:
        raise InvalidEventError("$", "is empty or a tombstone")
    try:
        payload: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("$", f"is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidEventError("$", "must be a JSON object")
    missing = [name for name in FIELDS if name not in payload]
    if missing:
        raise InvalidEventError(missing[0], "is required")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise InvalidEventError(unknown[0], "is not a field of this contract")
    if payload["schema_version"] != VIOLATION_SCHEMA_VERSION:
        raise InvalidEventError("schema_version", f"must be {VIOLATION_SCHEMA_VERSION}")
    kind = KINDS.get(payload["kind"])
    if kind is None:
        raise InvalidEventError("kind", f"must be one of {', '.join(KINDS)}")
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
