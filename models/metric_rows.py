"""What one phase transition contributes to the metrics: the seed's ``metrics_data`` row.

Labels for Prometheus are only phase and status (bounded); the row keeps user_id and
workflow_id in its labels, because a table has no cardinality limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from models.events import PhaseEvent
from models.phases import PhaseStatus

_NAMES: Final = {
    PhaseStatus.STARTED: ("workflow_phase_started_total", "counter"),
    PhaseStatus.COMPLETED: ("workflow_phase_completed_duration_seconds", "histogram"),
    PhaseStatus.FAILED: ("workflow_phase_failed_duration_seconds", "histogram"),
    PhaseStatus.ROLLED_BACK: ("workflow_phase_rolled_back_total", "counter"),
}


def phase_label(phase_number: int) -> str:
    return f"phase_{phase_number}"


@dataclass(frozen=True, slots=True)
class MetricRow:
    id: UUID
    metric_name: str
    metric_type: str
    value: float
    labels: dict[str, str]
    error_message: str | None
    metadata: Any
    event: PhaseEvent


def metric_row(event: PhaseEvent) -> MetricRow:
    """Counters count 1; a finished phase observes its duration in seconds (0 if unknown)."""
    name, kind = _NAMES[event.status]
    value = 1.0 if kind == "counter" else (event.duration_ms or 0) / 1000
    labels = {
        "phase": phase_label(event.phase_number),
        "status": event.status.value,
        "user_id": str(event.user_id),
        "workflow_id": event.workflow_id,
    }
    return MetricRow(
        event.event_id, name, kind, value, labels, event.error_message, event.metadata, event
    )
