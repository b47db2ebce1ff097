"""Time series requests: metric and step checked, buckets aligned and bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.report_filters import InvalidFilterError
from models.timeseries import MAX_BUCKETS, SeriesMetric, SeriesQuery, floor_to, parse_series

NOW = datetime(2026, 11, 27, 8, 17, 42, tzinfo=UTC)


def series(**given: str | None) -> SeriesQuery:
    args: dict[str, str | None] = {
        "metric": "started",
        "step": None,
        "since": None,
        "until": None,
        "phase": None,
        "user": None,
    }
    return parse_series(**(args | given), now=NOW)


def test_defaults_are_a_day_of_five_minutes_aligned_to_the_step() -> None:
    asked = parse_series(
        metric="p95_duration", step=None, since=None, until=None, phase="2", user=None, now=NOW
    )
    assert asked.metric is SeriesMetric.P95_DURATION
    assert asked.start == datetime(2026, 11, 26, 8, 15, tzinfo=UTC)
    assert asked.until == NOW
    assert asked.buckets == 289  # 24 h of 5 min, and the partial bucket holding now
    assert asked.last_bucket == datetime(2026, 11, 27, 8, 15, tzinfo=UTC)
    assert asked.filters.phase == 2


def test_a_day_of_minutes_fits_and_more_is_refused_naming_since() -> None:
    day = parse_series(
        metric="failed", step="1m", since="24h", until=None, phase=None, user=None, now=NOW
    )
    assert day.buckets == 1441
    with pytest.raises(InvalidFilterError) as caught:
        parse_series(
            metric="failed", step="1m", since="2d", until=None, phase=None, user=None, now=NOW
        )
    assert caught.value.name == "since"
    assert str(MAX_BUCKETS) in caught.value.reason


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ({"metric": None}, "metric"),
        ({"metric": "throughput"}, "metric"),
        ({"step": "2m"}, "step"),
        ({"since": "yesterday"}, "since"),
        ({"phase": "9"}, "phase"),
        ({"since": "2026-11-27T09:00:00Z"}, "since"),  # after now: an empty window
    ],
)
def test_bad_parameters_are_named(given: dict[str, str | None], name: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        series(**given)
    assert caught.value.name == name


def test_floor_to_matches_date_bin_from_the_epoch() -> None:
    assert floor_to(NOW, timedelta(hours=1)) == datetime(2026, 11, 27, 8, tzinfo=UTC)
    assert floor_to(NOW, timedelta(minutes=1)) == datetime(2026, 11, 27, 8, 17, tzinfo=UTC)
