"""The wording of a notification: its title and text for a rollback command or an SLA
violation, and the details that go with it.
"""

from __future__ import annotations

from typing import Final

from models.commands import CommandKind, RollbackCommand
from models.notifications.value import Notification, NotificationKind
from models.sla.violation import SlaViolation, ViolationKind


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.1f} s"


def _command_wording(command: RollbackCommand) -> tuple[str, str]:
    c = command
    if c.kind is CommandKind.ROLLBACK:
        return (
            f"phase {c.failed_phase} failed, rolled back to phase {c.rollback_to_phase}",
            f"Phase {c.failed_phase} failed; the workflow goes back to phase "
            f"{c.rollback_to_phase}.",
        )
    if c.kind is CommandKind.RETRY:
        return (
            f"retrying phase {c.rollback_to_phase} (attempt {c.attempt})",
            f"Phase {c.rollback_to_phase} is run again after phase {c.failed_phase} "
            f"failed (retry {c.attempt}).",
        )
    if c.kind is CommandKind.GAVE_UP:
        return (
            f"gave up after phase {c.failed_phase} failed",
            "Every retry is used up: nothing more will be tried automatically.",
        )
    return (
        f"rollback loop stopped at phase {c.failed_phase}",
        "The workflow was rolled back too often: no further rollback is issued.",
    )


def from_command(command: RollbackCommand) -> Notification:
    title, text = _command_wording(command)
    if command.reason:
        text = f"{text} Reason: {command.reason}"
    details = {
        "command_id": str(command.command_id),
        "failed_event_id": str(command.failed_event_id),
        "failed_phase": command.failed_phase,
        "rollback_to_phase": command.rollback_to_phase,
        "attempt": command.attempt,
        "reason": command.reason,
    }
    return Notification(
        command.command_id,
        str(command.user_id),
        command.workflow_id,
        NotificationKind(command.kind.value),
        f"{command.workflow_id}: {title}",
        text,
        command.issued_at,
        details,
    )


_VIOLATION_TITLES: Final = {
    ViolationKind.LATE_COMPLETED: "completed late",
    ViolationKind.LATE_FAILED: "failed late",
    ViolationKind.OVERDUE: "is overdue",
}


def from_violation(violation: SlaViolation) -> Notification:
    v = violation
    took = "has been running for" if v.kind is ViolationKind.OVERDUE else "took"
    text = (
        f"Phase {v.phase_number} {took} {_seconds(v.elapsed_ms)}; its SLA is "
        f"{_seconds(v.threshold_ms)}."
    )
    details = {
        "violation_id": str(v.violation_id),
        "phase_number": v.phase_number,
        "started_event_id": str(v.started_event_id),
        "started_at": v.started_at.isoformat(),
        "elapsed_ms": v.elapsed_ms,
        "threshold_ms": v.threshold_ms,
    }
    title = f"{v.workflow_id}: phase {v.phase_number} {_VIOLATION_TITLES[v.kind]}"
    return Notification(
        v.violation_id,
        str(v.user_id),
        v.workflow_id,
        NotificationKind(v.kind.value),
        title,
        text,
        v.detected_at,
        details,
    )
