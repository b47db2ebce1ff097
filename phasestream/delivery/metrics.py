"""The notifier's Prometheus metrics: base units, bounded labels (sink, reason, kind,
topic), never a user or workflow id."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from models.notifications.value import NotificationKind

SUPPRESSION_REASONS: Final = ("duplicate", "rate_limited", "queue_full")


class NotifyMetrics:
    """What the consumer and the alert sinks do."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "phasestream_notify_notifications",
            "Notifications consumed (first delivery).",
            ["kind"],
            registry=registry,
        )
        self.redelivered = Counter(
            "phasestream_notify_redelivered",
            "Redelivered records recognised by id, dropped.",
            registry=registry,
        )
        self.invalid = Counter(
            "phasestream_notify_invalid",
            "Invalid records, dead-lettered, by source topic.",
            ["topic"],
            registry=registry,
        )
        self.delivered = Counter(
            "phasestream_notify_delivered", "Alerts delivered.", ["sink"], registry=registry
        )
        self.failures = Counter(
            "phasestream_notify_delivery_failures",
            "Failed delivery attempts.",
            ["sink"],
            registry=registry,
        )
        self.dropped = Counter(
            "phasestream_notify_dropped",
            "Alerts given up after their last attempt.",
            ["sink"],
            registry=registry,
        )
        self.suppressed = Counter(
            "phasestream_notify_suppressed",
            "Alerts not sent: duplicate, rate_limited or queue_full.",
            ["sink", "reason"],
            registry=registry,
        )
        self.assigned = Gauge(
            "phasestream_notify_assigned_partitions",
            "Partitions the notifier reads, their start positions fixed.",
            registry=registry,
        )
        for kind in NotificationKind:
            self.notifications.labels(kind.value)

    def register_sink(self, sink: str) -> None:
        """Every series of a sink exists from the start, at zero."""
        for metric in (self.delivered, self.failures, self.dropped):
            metric.labels(sink)
        for reason in SUPPRESSION_REASONS:
            self.suppressed.labels(sink, reason)


class HubMetrics:
    """What the WebSocket hub does."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "phasestream_notify_websocket_connections",
            "Open, authenticated WebSocket connections.",
            registry=registry,
        )
        self.pushed = Counter(
            "phasestream_notify_websocket_messages",
            "Notifications sent over WebSocket connections.",
            registry=registry,
        )
        self.refused = Counter(
            "phasestream_notify_websocket_refused",
            "WebSocket connections refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.dropped = Counter(
            "phasestream_notify_websocket_dropped",
            "WebSocket connections closed for not taking their messages.",
            registry=registry,
        )
