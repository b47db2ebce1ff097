"""Whether an offered alert is queued or suppressed, and why: a duplicate incident first (it
spends no token), then a full queue, then the rate limit. Decided without waiting, on the
clock it is given; nothing is sent here."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from models.notifications.dedup import Deduplicator
from models.notifications.rate_limit import RateLimiter
from models.notifications.suppression import suppression
from models.notifications.value import Notification, NotificationKind
from phasestream.delivery.metrics import NotifyMetrics
from phasestream.delivery.sink import AlertSink

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)


def alert(workflow_id: str, kind: NotificationKind = NotificationKind.OVERDUE) -> Notification:
    return Notification(uuid.uuid4(), str(uuid.UUID(int=1)), workflow_id, kind, "t", "x", T0)


class Fixture:
    def __init__(self, *, per_minute: int = 60, burst: int = 2, queue_size: int = 10) -> None:
        self.now = 0.0
        self.registry = CollectorRegistry()
        self.recorder = Recorder()
        self.sink = AlertSink(
            self.recorder,
            dedup=Deduplicator(600),
            limiter=RateLimiter(per_minute, burst),
            metrics=NotifyMetrics(self.registry),
            max_attempts=1,
            queue_size=queue_size,
            clock=lambda: self.now,
        )

    def suppressed(self, reason: str) -> float | None:
        return self.registry.get_sample_value(
            "phasestream_notify_suppressed_total", {"sink": "recorder", "reason": reason}
        )

    def deliver_queued(self) -> None:
        stop = asyncio.Event()
        stop.set()
        asyncio.run(self.sink.run(stop, drain_s=5))


def test_duplicates_are_suppressed_without_spending_a_token() -> None:
    f = Fixture(burst=2)
    assert f.sink.offer(alert("wf-1"))
    assert [f.sink.offer(alert("wf-1")) for _ in range(3)] == [False] * 3
    assert f.sink.offer(alert("wf-2"))  # the second token is still there
    assert not f.sink.offer(alert("wf-3"))
    assert (f.suppressed("duplicate"), f.suppressed("rate_limited")) == (3, 1)
    assert (f.sink.suppressed, f.sink.queued) == (4, 2)


def test_another_kind_of_trouble_is_another_incident() -> None:
    f = Fixture()
    assert f.sink.offer(alert("wf-1", NotificationKind.OVERDUE))
    assert f.sink.offer(alert("wf-1", NotificationKind.GAVE_UP))


def test_a_full_queue_suppresses_without_spending_a_token() -> None:
    f = Fixture(burst=2, queue_size=1)
    assert f.sink.offer(alert("wf-1"))
    assert not f.sink.offer(alert("wf-2"))
    assert f.suppressed("queue_full") == 1
    f.deliver_queued()
    assert [n.workflow_id for n in f.recorder.sent] == ["wf-1"]
    assert f.sink.offer(alert("wf-2"))  # queue_full did not open its window nor take a token
    f.deliver_queued()
    assert not f.sink.offer(alert("wf-3"))
    assert f.suppressed("rate_limited") == 1


def test_a_rate_limited_alert_opens_no_window_and_goes_once_tokens_refill() -> None:
    f = Fixture(per_minute=2, burst=1)
    assert f.sink.offer(alert("wf-1"))
    assert not f.sink.offer(alert("wf-2"))
    f.now = 29.0  # 2 a minute: one token takes 30 s
    assert not f.sink.offer(alert("wf-2"))
    f.now = 59.0
    assert f.sink.offer(alert("wf-2"))
    assert (f.suppressed("rate_limited"), f.suppressed("duplicate")) == (2, 0)


def test_an_incident_may_alert_again_once_its_window_has_passed() -> None:
    f = Fixture(burst=5)
    assert f.sink.offer(alert("wf-1"))
    f.now = 599.0
    assert not f.sink.offer(alert("wf-1"))
    f.now = 600.0
    assert f.sink.offer(alert("wf-1"))


def test_the_decision_spends_a_token_only_on_what_it_lets_through() -> None:
    dedup, limiter = Deduplicator(window_s=60), RateLimiter(per_minute=60, burst=1)
    first, again = alert("wf-1"), alert("wf-1")
    assert suppression(first, 0.0, dedup=dedup, queue_full=False, limiter=limiter) is None
    dedup.record(first, 0.0)  # what the sink does with an alert it queues
    # The bucket is empty now: a duplicate and a full queue are named as such, not as
    # rate-limited, and neither takes a token the next distinct alert would need.
    assert suppression(again, 0.5, dedup=dedup, queue_full=False, limiter=limiter) == ("duplicate")
    other = alert("wf-2")
    assert suppression(other, 0.5, dedup=dedup, queue_full=True, limiter=limiter) == ("queue_full")
    assert suppression(other, 0.5, dedup=dedup, queue_full=False, limiter=limiter) == (
        "rate_limited"
    )
    assert suppression(other, 1.5, dedup=dedup, queue_full=False, limiter=limiter) is None
