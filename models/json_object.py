"""The shared first steps of decoding a JSON contract: bytes to a checked object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from models.errors import InvalidEventError

E = TypeVar("E", bound=StrEnum)


def load_object(value: bytes | None, fields: Sequence[str], version: int) -> dict[str, Any]:
    """Parse ``value``; require exactly ``fields`` and ``schema_version`` == ``version``."""
    if not value:
        raise InvalidEventError("$", "is empty or a tombstone")
    try:
        payload: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError("$", f"is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidEventError("$", "must be a JSON object")
    missing = [name for name in fields if name not in payload]
    if missing:
        raise InvalidEventError(missing[0], "is required")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise InvalidEventError(unknown[0], "is not a field of this contract")
    if payload["schema_version"] != version:
        raise InvalidEventError("schema_version", f"must be {version}")
    return payload


def enum_field(name: str, value: object, members: Mapping[str, E]) -> E:
    member = members.get(value) if isinstance(value, str) else None
    if member is None:
        raise InvalidEventError(name, f"must be one of {', '.join(members)}")
    return member
