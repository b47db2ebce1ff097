"""Time series requests (`/api/timeseries`, `report timeseries`), parsed and bounded.

Pure: ``now`` is passed in. Buckets start on multiples of the step since the Unix epoch
(UTC), so 1m buckets start on whole minutes and 1h buckets on whole hours; the window's
start is rounded down to a bucket boundary, so every bucket is whole. A request may ask
for at most MAX_BUCKETS buckets; a longer one is refused, naming ``since``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from models.report_filters import InvalidFilterError, ReportFilters, parse_filters

#: A day of 1-minute buckets fits, with room for a window not aligned to the minute.
MAX_BUCKETS: Final = 1500
#: Without ``since``, the window is the day before ``until`` (or now).
DEFAULT_WINDOW: Final = timedelta(hours=24)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class SeriesMetric(StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    VIOLATIONS = "violations"
    P95_DURATION = "p95_duration"


STEPS: Final = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "1h": timedelta(hours=1)}
DEFAULT_STEP: Final = "5m"


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """Buckets ``[start, start + step)``, ... up to ``until`` (exclusive)."""

    metric: SeriesMetric
    step: str
    start: datetime
    until: datetime
    filters: ReportFilters

    @property
    def interval(self) -> timedelta:
        return STEPS[self.step]

    @property
    def buckets(self) -> int:
        return bucket_count(self.start, self.until, self.interval)

    @property
    def last_bucket(self) -> datetime:
        return self.start + (self.buckets - 1) * self.interval


def floor_to(moment: datetime, step: timedelta) -> datetime:
    """The start of the bucket holding ``moment`` (as Postgres date_bin from EPOCH)."""
    return EPOCH + (moment - EPOCH) // step * step


def bucket_count(start: datetime, until: datetime, step: timedelta) -> int:
    return -(-(until - start) // step)  # ceiling: a partial last bucket is a bucket


def parse_series(
    *,
    metric: str | None,
    step: str | None,
    since: str | None,
    until: str | None,
    phase: str | None,
    user: str | None,
    now: datetime,
) -> SeriesQuery:
    """Raises InvalidFilterError naming the parameter that is wrong."""
    if metric is None:
        raise InvalidFilterError("metric", f"required; one of {_names(SeriesMetric)}")
    if metric not in SeriesMetric.__members__.values():
        raise InvalidFilterError("metric", f"must be one of {_names(SeriesMetric)}, got {metric!r}")
    chosen = DEFAULT_STEP if step is None else step
    if chosen not in STEPS:
        raise InvalidFilterError("step", f"must be one of {', '.join(STEPS)}, got {step!r}")
    filters = parse_filters(since=since, until=until, phase=phase, user=user, now=now)
    end = filters.until or now
    start = floor_to(filters.since or end - DEFAULT_WINDOW, STEPS[chosen])
    if start >= end:
        raise InvalidFilterError("since", "must be before until (or now)")
    count = bucket_count(start, end, STEPS[chosen])
    if count > MAX_BUCKETS:
        raise InvalidFilterError(
            "since",
            f"the window holds {count} buckets of {chosen}, at most {MAX_BUCKETS}: "
            "choose a later since, an earlier until or a larger step",
        )
    return SeriesQuery(SeriesMetric(metric), chosen, start, end, filters)


def _names(values: type[StrEnum]) -> str:
    return ", ".join(v.value for v in values)
