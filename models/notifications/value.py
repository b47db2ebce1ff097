"""A notification: one thing to tell a user, its JSON form, and whether it is an alert."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import orjson


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
    return {
        "id": str(n.id),
        "user_id": n.user_id,
        "workflow_id": n.workflow_id,
        "kind": n.kind.value,
        "title": n.title,
        "text": n.text,
        "occurred_at": n.occurred_at.isoformat(),
        "details": dict(n.details),
    }


def encode_notification(notification: Notification) -> bytes:
    return orjson.dumps(as_json(notification))


def is_alert(notification: Notification) -> bool:
    """Whether Slack and e-mail hear of it too. A retry is routine (it ends in success or
    in ``gave_up``, which is alerted), so it only goes to the user's WebSocket."""
    return notification.kind is not NotificationKind.RETRY
