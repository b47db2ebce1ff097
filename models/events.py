"""The phase event, contract version 1 (docs/contracts.md), as a frozen value."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec

from models.phases import PhaseStatus

SCHEMA_VERSION: Final = 1


class PhaseEvent(msgspec.Struct, frozen=True, gc=False):
    """One transition of one phase of one workflow; immutable once published.

    A frozen msgspec Struct, not a dataclass: the decoders build one per record, and a
    Struct's constructor runs in C (a frozen dataclass's __init__ sets each of the 14 fields
    with object.__setattr__, about 1.9 us an event, as much as msgspec's whole decode).
    ``msgspec.structs.replace`` is its ``dataclasses.replace``. ``gc=False``: an event holds
    no reference back to anything that holds it, so it never closes a cycle.
    """

    event_id: UUID
    workflow_id: str
    user_id: UUID
    phase_number: int
    status: PhaseStatus
    timestamp: datetime
    duration_ms: int | None = None
    previous_phase: int | None = None
    error_message: str | None = None
    error_stack: str | None = None
    #: Free-form context (a fresh empty dict per event when absent).
    metadata: Mapping[str, Any] = {}
    rollback_triggered: bool = False
    rollback_to_phase: int | None = None
    schema_version: int = SCHEMA_VERSION

    def __hash__(self) -> int:
        # A Struct hashes every field, and the metadata mapping has no hash; two events
        # that are equal have the same id, so the id alone is a valid hash.
        return hash(self.event_id)

    @property
    def key(self) -> bytes:
        """The Kafka key: the workflow id, so one workflow stays on one partition, in order."""
        return self.workflow_id.encode()
