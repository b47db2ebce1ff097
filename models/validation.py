"""Validation of the event contract: every rejection names the field and the reason.

The JSON Schema in ``models/schemas/phase-event.schema.json`` states the same rules for
producers in other languages; a test keeps the two in agreement over a corpus.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID, SafeUUID

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

#: The JSON Schema's pattern of a timestamp (year 2000-2099 as written, every part in range
#: except the month's length): the compiled decoders check it, datetime the calendar.
TIMESTAMP_PATTERN: Final = (
    r"^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)

REQUIRED: Final = (
    "schema_version",
    "event_id",
    "workflow_id",
    "user_id",
    "phase_number",
    "status",
    "timestamp",
)
OPTIONAL: Final = (
    "duration_ms",
    "previous_phase",
    "error_message",
    "error_stack",
    "metadata",
    "rollback_triggered",
    "rollback_to_phase",
)


_NUL_REASON: Final = "must not contain NUL characters (PostgreSQL cannot store them)"


def _is_int(value: object) -> bool:
    # JSON true/false decode to bool, which is an int subclass in Python: never accept them.
    return isinstance(value, int) and not isinstance(value, bool)


def int_field(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEventError(name, f"must be an integer, got {json_type(value)}")
    return value


def phase_field(name: str, value: object) -> int:
    number = int_field(name, value)
    if not is_valid_phase(number):
        raise InvalidEventError(name, f"must be a phase from 1 to {LAST_PHASE}, got {number}")
    return number


def _optional_phase(name: str, value: object) -> int | None:
    return None if value is None else phase_field(name, value)


def text_field(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidEventError(name, f"must be a string, got {json_type(value)}")
    if "\x00" in value:
        raise InvalidEventError(name, _NUL_REASON)
    return value


def optional_text(name: str, value: object) -> str | None:
    return None if value is None else text_field(name, value)


def uuid_field(name: str, value: object) -> UUID:
    text = text_field(name, value)
    # fullmatch: with match, "$" also matches before a trailing newline and UUID() then raises.
    if not UUID_PATTERN.fullmatch(text):
        raise InvalidEventError(
            name, f"must be a UUID like 8-4-4-4-12 hex digits, got {text[:60]!r}"
        )
    return uuid_from_checked(text)


def uuid_from_checked(text: str) -> UUID:
    """UUID(text) for a text that UUID_PATTERN accepted, built without parsing it again.

    UUID() re-validates its input and costs about 2 us here, a tenth of decoding a whole
    event (two ids per event); this sets the two slots UUID.__init__ itself sets, through
    their slot descriptors (object.__setattr__ would look each one up again).
    """
    value: UUID = _new_object(UUID)
    _set_uuid_int(value, int(text.replace("-", ""), 16))
    _set_uuid_safety(value, SafeUUID.unknown)
    return value


_new_object: Final = object.__new__
_set_uuid_int: Final = vars(UUID)["int"].__set__
_set_uuid_safety: Final = vars(UUID)["is_safe"].__set__


def workflow_id_field(value: object) -> str:
    text = text_field("workflow_id", value)
    if not text:
        raise InvalidEventError("workflow_id", "must not be empty")
    if len(text) > MAX_WORKFLOW_ID_CHARS:
        raise InvalidEventError("workflow_id", f"must be at most 255 characters, got {len(text)}")
    return text


_STATUS_BY_TEXT: Final = {status.value: status for status in PhaseStatus}


def _status(value: object) -> PhaseStatus:
    text = text_field("status", value)
    status = _STATUS_BY_TEXT.get(text)
    if status is None:
        raise InvalidEventError(
            "status", f"must be one of {', '.join(STATUSES)}, got {text[:60]!r}"
        )
    return status


def timestamp_field(value: object, name: str = "timestamp") -> datetime:
    text = text_field(name, value)
    if not RFC3339_PATTERN.fullmatch(text):
        raise InvalidEventError(
            name,
            f"must be RFC 3339 with a UTC offset (e.g. 2026-01-31T12:00:00Z), got {text[:60]!r}",
        )
    try:
        moment = datetime.fromisoformat(_trim_fraction(text.upper()))
    except ValueError as exc:
        raise InvalidEventError(name, f"is not a real date and time: {exc}") from None
    # The year as written, as the JSON Schema's pattern can check it (not the year in UTC).
    if not EARLIEST_TIMESTAMP.year <= moment.year < LATEST_TIMESTAMP.year:
        raise InvalidEventError(name, f"must lie between 2000 and 2099, got {text}")
    return moment


_LONG_FRACTION: Final = re.compile(r"^(.*\.\d{6})\d+(.*)$", re.ASCII)


def _trim_fraction(text: str) -> str:
    # Python's datetime keeps microseconds; RFC 3339 allows more digits, which we truncate.
    match = _LONG_FRACTION.match(text)
    return f"{match.group(1)}{match.group(2)}" if match else text


def _duration(value: object) -> int | None:
    if value is None:
        return None
    number = int_field("duration_ms", value)
    if not 0 <= number <= MAX_DURATION_MS:
        raise InvalidEventError("duration_ms", f"must be from 0 to {MAX_DURATION_MS}, got {number}")
    return number


def _metadata(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEventError("metadata", f"must be a JSON object, got {json_type(value)}")
    problem = _find_problem(value, depth=1)
    if problem is not None:
        steps, reason = problem
        raise InvalidEventError("metadata" + "".join(reversed(steps)), reason)
    return value


def _find_problem(value: object, depth: int) -> tuple[list[str], str] | None:
    """The path (innermost step first) and reason of the first problem in a JSON tree.

    The path is only built on the way out of a failure: valid metadata costs no strings.
    """
    if depth > MAX_METADATA_DEPTH:
        return [], f"nests deeper than {MAX_METADATA_DEPTH} levels"
    if isinstance(value, str):
        return ([], _NUL_REASON) if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return [], "has a key with a NUL character"
            problem = _find_problem(item, depth + 1)
            if problem is not None:
                problem[0].append(f".{key}")
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = _find_problem(item, depth + 1)
            if problem is not None:
                problem[0].append(f"[{index}]")
                return problem
    return None


def _bool(name: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidEventError(name, f"must be true or false, got {json_type(value)}")
    return value


_JSON_TYPES: Final[dict[type, str]] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


_REQUIRED_SET: Final = frozenset(REQUIRED)
_KNOWN: Final = frozenset(REQUIRED + OPTIONAL)


def _check_shape(payload: Mapping[str, Any]) -> None:
    keys = payload.keys()
    if not keys >= _REQUIRED_SET:
        missing = next(name for name in REQUIRED if name not in payload)
        raise InvalidEventError(missing, "is required")
    if not keys <= _KNOWN:
        unknown = sorted(keys - _KNOWN)
        raise InvalidEventError(unknown[0], "is not a field of the phase event contract")
    version = payload["schema_version"]
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise InvalidEventError("schema_version", f"must be {SCHEMA_VERSION}, got {version!r}")


def event_from_mapping(payload: object) -> PhaseEvent:
    """Build a PhaseEvent from decoded JSON, or raise InvalidEventError naming field and reason."""
    if not isinstance(payload, dict):
        raise InvalidEventError("$", f"must be a JSON object, got {json_type(payload)}")
    _check_shape(payload)
    get = payload.get
    # Fields are checked in contract order, so the first problem reported is stable.
    return PhaseEvent(
        event_id=uuid_field("event_id", get("event_id")),
        workflow_id=workflow_id_field(get("workflow_id")),
        user_id=uuid_field("user_id", get("user_id")),
        phase_number=phase_field("phase_number", get("phase_number")),
        status=_status(get("status")),
        timestamp=timestamp_field(get("timestamp")),
        duration_ms=_duration(get("duration_ms")),
        previous_phase=_optional_phase("previous_phase", get("previous_phase")),
        error_message=optional_text("error_message", get("error_message")),
        error_stack=optional_text("error_stack", get("error_stack")),
        metadata=_metadata(get("metadata")),
        rollback_triggered=_bool("rollback_triggered", get("rollback_triggered")),
        rollback_to_phase=_optional_phase("rollback_to_phase", get("rollback_to_phase")),
    )
