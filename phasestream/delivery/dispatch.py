"""Hands each new notification to its user's WebSockets and offers it to the alert sinks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from models.notifications.dedup import RecentIds
from models.notifications.value import Notification, is_alert
from phasestream.delivery.metrics import NotifyMetrics
from phasestream.delivery.sink import AlertSink

log = logging.getLogger(__name__)


class Pusher(Protocol):
    """Where users are told (the WebSocket hub); how many connections took it."""

    async def push(self, notification: Notification) -> int: ...


class Dispatcher:
    """The notifier consumer's handler. Never waits on a sink: ``offer`` only queues."""

    def __init__(
        self,
        pusher: Pusher,
        sinks: Sequence[AlertSink],
        metrics: NotifyMetrics,
        recent: RecentIds | None = None,
    ) -> None:
        self._pusher = pusher
        self._sinks = sinks
        self._metrics = metrics
        self._recent = recent if recent is not None else RecentIds()
        self.notifications = self.redelivered = self.pushed = 0

    async def __call__(self, notifications: Sequence[Notification]) -> None:
        # One at a time, in order: a user sees a workflow's notifications as they happened.
        for notification in notifications:
            if not self._recent.add(notification.id):
                self.redelivered += 1
                self._metrics.redelivered.inc()
                log.debug("notification %s seen already: dropped", notification.id)
                continue
            self.notifications += 1
            self._metrics.notifications.labels(notification.kind.value).inc()
            self.pushed += await self._pusher.push(notification)
            if is_alert(notification):
                for sink in self._sinks:
                    sink.offer(notification)
