"""Whether an alert is sent or held back, and why: the one decision an alert sink makes
before it queues an alert, in the order that keeps the counts honest."""

from __future__ import annotations

from typing import Literal

from models.notifications.dedup import Deduplicator
from models.notifications.rate_limit import RateLimiter
from models.notifications.value import Notification

Suppression = Literal["duplicate", "queue_full", "rate_limited"]


def suppression(
    notification: Notification,
    now: float,
    *,
    dedup: Deduplicator,
    queue_full: bool,
    limiter: RateLimiter,
) -> Suppression | None:
    """Why ``notification`` is not sent (None: send it). Duplicates are judged first and a
    full queue second: neither may spend a token of the rate limit, which ``allow`` does."""
    if dedup.is_duplicate(notification, now):
        return "duplicate"
    if queue_full:
        return "queue_full"
    if not limiter.allow(now):
        return "rate_limited"
    return None
