"""The alert rate limit: a token bucket per sink, refilled continuously."""

from __future__ import annotations


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
