"""Phase events for the tests to publish: one with defaults, or many over a few workflows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from models.events import PhaseEvent
from models.phases import PhaseStatus


def make_event(
    workflow_id: str = "wf-1",
    phase: int = 1,
    status: PhaseStatus = PhaseStatus.STARTED,
    **fields: Any,
) -> PhaseEvent:
    base: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "workflow_id": workflow_id,
        "user_id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "phase_number": phase,
        "status": status,
        "timestamp": datetime.now(UTC) - timedelta(seconds=1),
    }
    base.update(fields)
    return PhaseEvent(**base)


def many_events(count: int, workflows: int = 50) -> list[PhaseEvent]:
    return [
        make_event(f"wf-{i % workflows}", phase=1 + i % 7, metadata={"n": i}) for i in range(count)
    ]
