"""The phase event, contract version 1 (README: Event contract), as a frozen value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from models.phases import PhaseStatus

SCHEMA_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class PhaseEvent:
    """One transition of one phase of one workflow; immutable once published."""

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
    # Free-form context; excluded from hashing because a mapping is not hashable.
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    rollback_triggered: bool = False
    rollback_to_phase: int | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        """The Kafka key: the workflow id, so one workflow stays on one partition, in order."""
        return self.workflow_id.encode()
