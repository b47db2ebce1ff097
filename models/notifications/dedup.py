"""De-duplication of notifications: a redelivered record is recognised by its id
(``RecentIds``), and an incident (one workflow, one kind of trouble) is alerted once per
window (``Deduplicator``). Both are bounded in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

from models.notifications.value import Notification, NotificationKind


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
