"""SLA policy: plain functions of a phase's start, its end (if any), the threshold and
the time. Exceeding means strictly more than the threshold, as in the SQL view.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from models.events import PhaseEvent
from models.phases import PhaseStatus
from models.sla.violation import SlaViolation, ViolationKind, violation_id


@dataclass(frozen=True, slots=True)
class OpenPhase:
    """A phase execution that started and has not finished (as far as we have seen)."""

    started_event_id: UUID
    workflow_id: str
    user_id: UUID
    phase_number: int
    started_at: datetime


def open_phase(started: PhaseEvent) -> OpenPhase:
    return OpenPhase(
        started.event_id,
        started.workflow_id,
        started.user_id,
        started.phase_number,
        started.timestamp,
    )


def elapsed_ms(start: datetime, end: datetime) -> int:
    return (end - start) // timedelta(milliseconds=1)


def finished_duration_ms(phase: OpenPhase, finished: PhaseEvent) -> int:
    """The producer's measured duration when it sent one, else the event-time difference."""
    if finished.duration_ms is not None:
        return finished.duration_ms
    return max(0, elapsed_ms(phase.started_at, finished.timestamp))


def judge_finished(
    phase: OpenPhase, finished: PhaseEvent, threshold_ms: int, detected_at: datetime
) -> SlaViolation | None:
    """A completed or failed phase: late if its duration exceeded the threshold."""
    duration = finished_duration_ms(phase, finished)
    if duration <= threshold_ms or finished.status not in _LATE_KINDS:
        return None
    return _violation(phase, _LATE_KINDS[finished.status], detected_at, duration, threshold_ms)


def overdue_at(phase: OpenPhase, threshold_ms: int, grace_ms: int) -> datetime:
    """When a still-running phase is reported overdue: its deadline plus the grace period
    that lets a late-arriving terminal event with an in-time timestamp still count."""
    return phase.started_at + timedelta(milliseconds=threshold_ms + grace_ms)


def judge_open(
    phase: OpenPhase, threshold_ms: int, now: datetime, grace_ms: int
) -> SlaViolation | None:
    """A phase still running at ``now``: overdue once deadline + grace has passed (strictly).

    ``now`` is the stream's time for the phase's partition: the wall clock when that
    partition is caught up, else the newest event time read from it, so that a backlog
    being read does not look overdue before its terminal events are reached."""
    if now <= overdue_at(phase, threshold_ms, grace_ms):
        return None
    running = elapsed_ms(phase.started_at, now)
    return _violation(phase, ViolationKind.OVERDUE, now, running, threshold_ms)


_LATE_KINDS: Final = {
    PhaseStatus.COMPLETED: ViolationKind.LATE_COMPLETED,
    PhaseStatus.FAILED: ViolationKind.LATE_FAILED,
}


def _violation(
    phase: OpenPhase, kind: ViolationKind, detected_at: datetime, elapsed: int, threshold_ms: int
) -> SlaViolation:
    return SlaViolation(
        violation_id(phase.started_event_id, kind),
        kind,
        phase.workflow_id,
        phase.user_id,
        phase.phase_number,
        phase.started_event_id,
        phase.started_at,
        detected_at,
        elapsed,
        threshold_ms,
    )
