"""Notifications: what a user or an operator is told about a rollback command or an SLA
violation, and the pure decisions around telling them (redelivery, de-duplication, rate).

Every decision here takes the time as an argument (``now``, seconds of a monotonic clock),
so it is a plain function of its inputs and is tested without a clock or a server.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

import orjson

from models.commands import CommandKind, RollbackCommand
from models.sla.violation import SlaViolation, ViolationKind


class NotificationKind(StrEnum):
    ROLLBACK = "rollback"
    RETRY = "retry"
    GAVE_UP = "gave_up"
    LOOP_STOPPED = "loop_stopped"
    LATE_COMPLETED = "late_completed"
    LATE_FAILED = "late_failed"
    OVERDUE = "overdue"


@dataclass(frozen=True, slots=True)
class Notification:
    """One thing to tell ``user_id``; ``id`` is the command's or the violation's id, so a
    redelivered record yields the same notification and can be recognised."""

    id: UUID
    user_id: str  # canonical text of the UUID: what a token's subject is compared with
    workflow_id: str
    kind: NotificationKind
    title: str
    text: str
    occurred_at: datetime
    # JSON values only (str, int, None); excluded from hashing: a mapping is not hashable.
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def incident(self) -> tuple[str, NotificationKind]:
        """What de-duplication groups by: one workflow, one kind of trouble."""
        return self.workflow_id, self.kind


def as_json(notification: Notification) -> dict[str, Any]:
    n = notification
    return {"id": str(n.id), "user_id": n.user_id, "workflow_id": n.workflow_id,
            "kind": n.kind.value, "title": n.title, "text": n.text,
            "occurred_at": n.occurred_at.isoformat(), "details": dict(n.details)}


def encode_notification(notification: Notification) -> bytes:
    return orjson.dumps(as_json(notification))


def is_alert(notification: Notification) -> bool:
    """Whether Slack and e-mail hear of it too. A retry is routine (it ends in success or
    in ``gave_up``, which is alerted), so it only goes to the user's WebSocket."""
    return notification.kind is not NotificationKind.RETRY


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.1f} s"


def _command_wording(command: RollbackCommand) -> tuple[str, str]:
    c = command
    if c.kind is CommandKind.ROLLBACK:
        return (f"phase {c.failed_phase} failed, rolled back to phase {c.rollback_to_phase}",
                f"Phase {c.failed_phase} failed; the workflow goes back to phase "
                f"{c.rollback_to_phase}.")
    if c.kind is CommandKind.RETRY:
        return (f"retrying phase {c.rollback_to_phase} (attempt {c.attempt})",
                f"Phase {c.rollback_to_phase} is run again after phase {c.failed_phase} "
                f"failed (retry {c.attempt}).")
    if c.kind is CommandKind.GAVE_UP:
        return (f"gave up after phase {c.failed_phase} failed",
                "Every retry is used up: nothing more will be tried automatically.")
    return (f"rollback loop stopped at phase {c.failed_phase}",
            "The workflow was rolled back too often: no further rollback is issued.")


def from_command(command: RollbackCommand) -> Notification:
    title, text = _command_wording(command)
    if command.reason:
        text = f"{text} Reason: {command.reason}"
    details = {"command_id": str(command.command_id),
               "failed_event_id": str(command.failed_event_id),
               "failed_phase": command.failed_phase,
               "rollback_to_phase": command.rollback_to_phase, "attempt": command.attempt,
               "reason": command.reason}
    return Notification(command.command_id, str(command.user_id), command.workflow_id,
                        NotificationKind(command.kind.value),
                        f"{command.workflow_id}: {title}", text, command.issued_at, details)


_VIOLATION_TITLES: Final = {ViolationKind.LATE_COMPLETED: "completed late",
                            ViolationKind.LATE_FAILED: "failed late",
                            ViolationKind.OVERDUE: "is overdue"}


def from_violation(violation: SlaViolation) -> Notification:
    v = violation
    took = "has been running for" if v.kind is ViolationKind.OVERDUE else "took"
    text = (f"Phase {v.phase_number} {took} {_seconds(v.elapsed_ms)}; its SLA is "
            f"{_seconds(v.threshold_ms)}.")
    details = {"violation_id": str(v.violation_id), "phase_number": v.phase_number,
               "started_event_id": str(v.started_event_id),
               "started_at": v.started_at.isoformat(), "elapsed_ms": v.elapsed_ms,
               "threshold_ms": v.threshold_ms}
    title = f"{v.workflow_id}: phase {v.phase_number} {_VIOLATION_TITLES[v.kind]}"
    return Notification(v.violation_id, str(v.user_id), v.workflow_id,
                        NotificationKind(v.kind.value), title, text, v.detected_at, details)


class RecentIds:
    """The ids seen lately, least recently seen forgotten first: a redelivered record
    (at-least-once consumption) is recognised as long as its id is still remembered."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[UUID, None] = OrderedDict()

    def add(self, notification_id: UUID) -> bool:
        """Remember ``notification_id``; whether it is new."""
        if notification_id in self._ids:
            self._ids.move_to_end(notification_id)
            return False
        self._ids[notification_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)


class Deduplicator:
    """One alert per incident (workflow and kind) per window. The window opens with the
    alert that was let through; duplicates within it do not extend it. ``now`` must never
    go backwards (a monotonic clock)."""

    def __init__(self, window_s: float, max_incidents: int = 100_000) -> None:
        self._window_s = window_s
        self._max = max_incidents
        # Incident -> when its alert went out, oldest first: expiry pops from the front.
        self._sent: OrderedDict[tuple[str, NotificationKind], float] = OrderedDict()

    def is_duplicate(self, notification: Notification, now: float) -> bool:
        self._expire(now)
        return notification.incident in self._sent

    def record(self, notification: Notification, now: float) -> None:
        """Open the incident's window (call once the alert is really going out)."""
        self._sent[notification.incident] = now
        self._sent.move_to_end(notification.incident)
        if len(self._sent) > self._max:  # memory stays bounded under an incident storm
            self._sent.popitem(last=False)

    def admit(self, notification: Notification, now: float) -> bool:
        """Record and let through the first of an incident; refuse the rest of its window."""
        if self.is_duplicate(notification, now):
            return False
        self.record(notification, now)
        return True

    def __len__(self) -> int:
        return len(self._sent)

    def _expire(self, now: float) -> None:
        while self._sent:
            first, sent_at = next(iter(self._sent.items()))
            if now - sent_at < self._window_s:
                return
            del self._sent[first]


class RateLimiter:
    """A token bucket: up to ``burst`` alerts at once (default: a minute's worth), then
    ``per_minute`` alerts per minute, refilled continuously."""

    def __init__(self, per_minute: int, burst: int | None = None) -> None:
        self._capacity = float(burst if burst is not None else per_minute)
        self._per_second = per_minute / 60
        self._tokens = self._capacity
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        """Take a token if there is one; whether the alert may go."""
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            self._tokens = min(self._capacity, self._tokens + elapsed * self._per_second)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
