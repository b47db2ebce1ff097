"""The retry delays of streams/backoff.py: pure."""

from __future__ import annotations

from streams.backoff import Backoff


def test_delays_stay_capped_however_long_the_outage() -> None:
    backoff = Backoff(initial_s=0.2, max_s=10.0)
    for attempt in (1, 10, 1_025, 10**6):
        assert 0.1 <= backoff.delay(attempt) <= 10.0
    assert backoff.delay(10**6) >= 5.0  # past the cap: between half and all of it
