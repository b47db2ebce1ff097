"""The shipped JSON Schema of the event contract, for producers and tests."""

from __future__ import annotations

from importlib.resources import files
from typing import Final

import orjson

#: The schema's path inside the ``models`` package (shipped as package data).
SCHEMA_RESOURCE: Final = "schemas/phase-event.schema.json"


COMMAND_SCHEMA_RESOURCE: Final = "schemas/rollback-command.schema.json"


def phase_event_schema() -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of phase event contract version 1, freshly parsed."""
    return _load(SCHEMA_RESOURCE)


def rollback_command_schema() -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of rollback command contract version 1."""
    return _load(COMMAND_SCHEMA_RESOURCE)


def _load(path: str) -> dict[str, object]:
    resource = files("models")
    for part in path.split("/"):
        resource = resource.joinpath(part)
    loaded: object = orjson.loads(resource.read_bytes())
    if not isinstance(loaded, dict):
        raise TypeError(f"{path} does not hold a JSON object")
    return loaded
