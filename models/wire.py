"""The field types the compiled decoders share, as msgspec checks them (in C).

They state what a type can state of a contract (the JSON Schemas in ``models/schemas/`` say
the same); ``models/compiled.py`` covers the rest. UUIDs and timestamps stay text here,
checked by pattern: msgspec's own UUID and datetime types also accept forms the contract
refuses (32 bare hex digits, a space for the ``T``) and round fractions the contract truncates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from msgspec import Meta

from models.phases import FIRST_PHASE, LAST_PHASE
from models.validation import (
    MAX_DURATION_MS,
    MAX_WORKFLOW_ID_CHARS,
    TIMESTAMP_PATTERN,
    UUID_PATTERN,
    uuid_from_checked,
)

#: Within the integers orjson (the reference) reads as integers (beyond, it reads a float);
#: msgspec's bounds stop at int64, so 2**63 to 2**64 - 1 are left to the reference.
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

Phase = Annotated[int, Meta(ge=FIRST_PHASE, le=LAST_PHASE)]
#: 36 characters, as the schema pins them: the pattern's $ would also pass a trailing newline.
UuidText = Annotated[str, Meta(min_length=36, max_length=36, pattern=UUID_PATTERN.pattern)]
#: The calendar (Feb 30) is left to ``moment``.
TimestampText = Annotated[str, Meta(pattern=TIMESTAMP_PATTERN)]
WorkflowId = Annotated[str, Meta(min_length=1, max_length=MAX_WORKFLOW_ID_CHARS)]
Integer = Annotated[int, Meta(ge=_INT64_MIN, le=_INT64_MAX)]
Duration = Annotated[int, Meta(ge=0, le=MAX_DURATION_MS)]

#: UuidText as a UUID, without parsing it again.
as_uuid: Final = uuid_from_checked


def moment(text: str) -> datetime | None:
    """A TimestampText as a datetime (fraction truncated to microseconds), or None if it names
    no real instant (Feb 30, or a newline after the offset that the pattern's $ let through).
    """
    try:
        return datetime.fromisoformat(text.upper())
    except ValueError:
        return None

