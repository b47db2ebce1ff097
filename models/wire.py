"""The field types the compiled decoders share, as msgspec checks them (in C).

They state what a type can state of a contract (the JSON Schemas in ``models/schemas/`` say
the same); ``models/compiled.py`` covers the rest. msgspec's own UUID and datetime types
also accept forms the contract refuses (32 bare hex digits; a space for the ``T``) and round
fractions the contract truncates, so a UUID is taken as its raw JSON token and parsed only
when the token has the contract's length, and a timestamp is text checked by pattern.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final
from uuid import UUID

import msgspec
from msgspec import Meta

from models.phases import FIRST_PHASE, LAST_PHASE
from models.validation import (
    MAX_DURATION_MS,
    MAX_WORKFLOW_ID_CHARS,
    TIMESTAMP_PATTERN,
)

#: Within the integers orjson (the reference) reads as integers (beyond, it reads a float);
#: msgspec's bounds stop at int64, so 2**63 to 2**64 - 1 are left to the reference.
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

Phase = Annotated[int, Meta(ge=FIRST_PHASE, le=LAST_PHASE)]
#: A UUID field as written, left for ``as_uuid``.
UuidToken = msgspec.Raw
#: The calendar (Feb 30) is left to ``moment``.
TimestampText = Annotated[str, Meta(pattern=TIMESTAMP_PATTERN)]
WorkflowId = Annotated[str, Meta(min_length=1, max_length=MAX_WORKFLOW_ID_CHARS)]
Integer = Annotated[int, Meta(ge=_INT64_MIN, le=_INT64_MAX)]
Duration = Annotated[int, Meta(ge=0, le=MAX_DURATION_MS)]

_UUID: Final = msgspec.json.Decoder(UUID)
#: A JSON string of 36 characters without an escape: the only token of that length that
#: msgspec's UUID parser accepts is UUID_PATTERN's form (``test_compiled`` checks this).
_CANONICAL_TOKEN_BYTES: Final = 38


def as_uuid(token: msgspec.Raw) -> UUID | None:
    """The UUID of a token written 8-4-4-4-12 (any case), parsed in C; else None."""
    if len(token) != _CANONICAL_TOKEN_BYTES:
        return None
    try:
        return _UUID.decode(token)
    except msgspec.ValidationError:
        return None


def moment(text: str) -> datetime | None:
    """A TimestampText as a datetime (fraction truncated to microseconds), or None if it names
    no real instant (Feb 30, or a newline after the offset that the pattern's $ let through).
    """
    try:
        return datetime.fromisoformat(text.upper())
    except ValueError:
        return None
