"""The SLA violation (contract version 1): what the SLA monitor publishes to
``workflow.sla-violations``. Its id is deterministic, so a replay finds it again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final
from uuid import UUID

#: Namespace of violation ids: uuid5(namespace, f"{started_event_id}:{kind}").
VIOLATION_NAMESPACE: Final = UUID("5a7e3d0c-4b1f-5e8a-9c2d-6f0b1a2c3d4e")
VIOLATION_SCHEMA_VERSION: Final = 1


class ViolationKind(StrEnum):
    LATE_COMPLETED = "late_completed"
    LATE_FAILED = "late_failed"
    OVERDUE = "overdue"


@dataclass(frozen=True, slots=True)
class SlaViolation:
    """The event published to ``workflow.sla-violations``."""

    violation_id: UUID
    kind: ViolationKind
    workflow_id: str
    user_id: UUID
    phase_number: int
    started_event_id: UUID
    started_at: datetime
    detected_at: datetime
    elapsed_ms: int
    threshold_ms: int
    schema_version: int = VIOLATION_SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        return self.workflow_id.encode()


def violation_id(started_event_id: UUID, kind: ViolationKind) -> UUID:
    """Deterministic: a replay or a restart finds the same violation again, never a new one."""
    return uuid.uuid5(VIOLATION_NAMESPACE, f"{started_event_id}:{kind.value}")
