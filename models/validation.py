"""Validation of the event contract: every rejection names the field and the reason.

The JSON Schema in ``models/schemas/phase-event.schema.json`` states the same rules for
producers in other languages; a test keeps the two in agreement over a corpus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from models.errors import InvalidEventError
from models.events import SCHEMA_VERSION, PhaseEvent
from models.phases import LAST_PHASE, STATUSES, PhaseStatus, is_valid_phase

MAX_WORKFLOW_ID_CHARS: Final = 255
#: Postgres INTEGER is the column type of duration_ms.
MAX_DURATION_MS: Final = 2**31 - 1
MAX_METADATA_DEPTH: Final = 32
#: Event time's year, as written, must fall in [2000, 2100): anything else is a producer's
#: clock or parsing bug.
EARLIEST_TIMESTAMP: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIMESTAMP: Final = datetime(2100, 1, 1, tzinfo=UTC)

UUID_PATTERN: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
#: ASCII digits only (re.ASCII), and an offset's minutes 00-59 as RFC 3339 demands; the
#: ranges of the other parts are checked by datetime.fromisoformat.
RFC3339_PATTERN: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:[0-5]\d)$", re.ASCII
)

REQUIRED: Final = ("schema_version", "event_id", "workflow_id", "user_id", "phase_number",
                   "status", "timestamp")
OPTIONAL: Final = ("duration_ms", "previous_phase", "error_message", "error_stack", "metadata",
                   "rollback_triggered", "rollback_to_phase")


_NUL_REASON: Final = "must not contain NUL characters (PostgreSQL cannot store them)"


def _is_int(value: object) -> bool:
    # JSON true/false decode to bool, which is an int subclass in Python: never accept them.
    return isinstance(value, int) and not isinstance(value, bool)


def _int_field(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEventError(name, f"must be an integer, got {_json_type(value)}")
    return value


def _phase(name: str, value: object) -> int:
    number = _int_field(name, value)
    if not is_valid_phase(number):
        raise InvalidEventError(name, f"must be a phase from 1 to {LAST_PHASE}, got {number}")
    return number


def _optional_phase(name: str, value: object) -> int | None:
    return None if value is None else _phase(name, value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidEventError(name, f"must be a string, got {_json_type(value)}")
    if "\x00" in value:
        raise InvalidEventError(name, _NUL_REASON)
    return value


def _optional_text(name: str, value: object) -> str | None:
    return None if value is None else _text(name, value)


def _uuid(name: str, value: object) -> UUID:
    text = _text(name, value)
    # fullmatch: with match, "$" also matches before a trailing newline and UUID() then raises.
    if not UUID_PATTERN.fullmatch(text):
        raise InvalidEventError(
            name, f"must be a UUID like 8-4-4-4-12 hex digits, got {text[:60]!r}"
        )
    return UUID(text)


def _workflow_id(value: object) -> str:
    text = _text("workflow_id", value)
    if not text:
        raise InvalidEventError("workflow_id", "must not be empty")
    if len(text) > MAX_WORKFLOW_ID_CHARS:
        raise InvalidEventError("workflow_id", f"must be at most 255 characters, got {len(text)}")
    return text


def _status(value: object) -> PhaseStatus:
    text = _text("status", value)
    if text not in STATUSES:
        raise InvalidEventError(
            "status", f"must be one of {', '.join(STATUSES)}, got {text[:60]!r}"
        )
    return PhaseStatus(text)


def _timestamp(value: object) -> datetime:
    text = _text("timestamp", value)
    if not RFC3339_PATTERN.fullmatch(text):
        raise InvalidEventError(
            "timestamp",
            f"must be RFC 3339 with a UTC offset (e.g. 2026-01-31T12:00:00Z), got {text[:60]!r}",
        )
    try:
        moment = datetime.fromisoformat(_trim_fraction(text.upper()))
    except ValueError as exc:
        raise InvalidEventError("timestamp", f"is not a real date and time: {exc}") from None
    # The year as written, as the JSON Schema's pattern can check it (not the year in UTC).
    if not EARLIEST_TIMESTAMP.year <= moment.year < LATEST_TIMESTAMP.year:
        raise InvalidEventError("timestamp", f"must lie between 2000 and 2099, got {text}")
    return moment


def _trim_fraction(text: str) -> str:
    # Python's datetime keeps microseconds; RFC 3339 allows more digits, which we truncate.
    match = re.match(r"^(.*\.\d{6})\d+(.*)$", text)
    return f"{match.group(1)}{match.group(2)}" if match else text


def _duration(value: object) -> int | None:
    if value is None:
        return None
    number = _int_field("duration_ms", value)
    if not 0 <= number <= MAX_DURATION_MS:
        raise InvalidEventError("duration_ms", f"must be from 0 to {MAX_DURATION_MS}, got {number}")
    return number


def _metadata(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEventError("metadata", f"must be a JSON object, got {_json_type(value)}")
    _check_tree("metadata", value, depth=1)
    return value


def _check_tree(path: str, value: object, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidEventError(path, f"nests deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidEventError(path, _NUL_REASON)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise InvalidEventError(path, "has a key with a NUL character")
            _check_tree(f"{path}.{key}", item, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_tree(f"{path}[{index}]", item, depth + 1)


def _bool(name: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidEventError(name, f"must be true or false, got {_json_type(value)}")
    return value


_JSON_TYPES: Final[dict[type, str]] = {bool: "boolean", int: "integer", float: "number",
                                       str: "string", list: "array", dict: "object",
                                       type(None): "null"}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _check_shape(payload: Mapping[str, Any]) -> None:
    for name in REQUIRED:
        if name not in payload:
            raise InvalidEventError(name, "is required")
    unknown = sorted(set(payload) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InvalidEventError(unknown[0], "is not a field of the phase event contract")
    version = payload["schema_version"]
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise InvalidEventError("schema_version", f"must be {SCHEMA_VERSION}, got {version!r}")


_FIELDS: Final[dict[str, Callable[[object], object]]] = {
    "event_id": lambda v: _uuid("event_id", v),
    "workflow_id": _workflow_id,
    "user_id": lambda v: _uuid("user_id", v),
    "phase_number": lambda v: _phase("phase_number", v),
    "status": _status,
    "timestamp": _timestamp,
    "duration_ms": _duration,
    "previous_phase": lambda v: _optional_phase("previous_phase", v),
    "error_message": lambda v: _optional_text("error_message", v),
    "error_stack": lambda v: _optional_text("error_stack", v),
    "metadata": _metadata,
    "rollback_triggered": lambda v: _bool("rollback_triggered", v),
    "rollback_to_phase": lambda v: _optional_phase("rollback_to_phase", v),
}


def event_from_mapping(payload: object) -> PhaseEvent:
    """Build a PhaseEvent from decoded JSON, or raise InvalidEventError naming field and reason."""
    if not isinstance(payload, dict):
        raise InvalidEventError("$", f"must be a JSON object, got {_json_type(payload)}")
    _check_shape(payload)
    values = {name: check(payload.get(name)) for name, check in _FIELDS.items()}
    return PhaseEvent(**values)  # type: ignore[arg-type]  # each checker returns its field's type
