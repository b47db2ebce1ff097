"""Parsing the analysts' filter and argument text: pure, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest

from models.errors import PhasestreamError
from models.report_filters import (
    InvalidFilterError,
    Page,
    ReportFilters,
    parse_duration_ms,
    parse_filters,
    parse_headroom,
    parse_page,
    parse_percentile,
    parse_phase,
    parse_time,
    parse_user,
    parse_workflow_id,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        (" 1h ", timedelta(hours=1)),
    ],
)
def test_relative_times_count_back_from_now(text: str, delta: timedelta) -> None:
    assert parse_time("since", text, NOW) == NOW - delta


def test_rfc3339_timestamps_keep_their_offset() -> None:
    assert parse_time("since", "2026-11-27T08:30:00.125Z", NOW) == datetime(
        2026, 11, 27, 8, 30, 0, 125_000, tzinfo=UTC
    )
    plus_two = parse_time("until", "2026-11-27T10:00:00+02:00", NOW)
    assert plus_two == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    assert plus_two.utcoffset() == timezone(timedelta(hours=2)).utcoffset(None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("yesterday", "expected a duration like 24h, 7d, 30m or an RFC 3339 timestamp"),
        ("24", "expected a duration"),
        ("-1h", "expected a duration"),
        ("1y", "expected a duration"),
        ("2026-11-27T08:30:00", "the timestamp needs an offset"),
        ("2026-11-27", "the timestamp needs an offset"),
        ("2026-13-01T00:00:00Z", "expected"),
    ],
)
def test_bad_times_name_the_parameter(text: str, reason: str) -> None:
    with pytest.raises(InvalidFilterError, match=r"^since: ") as caught:
        parse_time("since", text, NOW)
    assert caught.value.name == "since"
    assert reason in caught.value.reason
    assert isinstance(caught.value, PhasestreamError)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("999999999w", "at most 9999w back from now"),
        ("800000d", "at most 99999d back"),
        ("1000000s", "at most 999999s"),
        ("1000000h", "at most 999999h"),
        ("9999-12-31T23:59:59-23:59", "the year must be from 1000 to 8999"),
        ("0001-01-01T00:00:00+23:59", "the year must be from 1000 to 8999"),
    ],
)
def test_times_beyond_the_bounds_are_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidFilterError, match=r"^until: ") as caught:
        parse_time("until", text, NOW)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "text",
    [
        "9999w",
        "99999d",
        "999999h",
        "999999m",
        "999999s",
        "0s",
        "1000-01-01T00:00:00+23:59",
        "8999-12-31T23:59:59.999999-23:59",
    ],
)
def test_times_at_the_bounds_are_accepted(text: str) -> None:
    moment = parse_time("since", text, NOW)
    assert moment.astimezone(UTC) <= NOW or moment.year == 8999


def test_parse_filters_all_and_none() -> None:
    assert parse_filters(since=None, until=None, phase=None, user=None, now=NOW) == ReportFilters()
    user = "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f"
    assert parse_filters(since="7d", until="1h", phase="3", user=user, now=NOW) == ReportFilters(
        NOW - timedelta(days=7), NOW - timedelta(hours=1), 3, UUID(user)
    )


@pytest.mark.parametrize(("since", "until"), [("1h", "2h"), ("1h", "1h")])
def test_until_must_be_after_since(since: str, until: str) -> None:
    with pytest.raises(InvalidFilterError, match=r"^until: must be after since"):
        parse_filters(since=since, until=until, phase=None, user=None, now=NOW)


@pytest.mark.parametrize("text", ["0", "8", "-1", "three", "3.0", "", "٣", "03x"])
def test_bad_phases(text: str) -> None:
    with pytest.raises(InvalidFilterError, match=r"^phase: must be a phase from 1 to 7"):
        parse_phase(text)


def test_phases_and_users() -> None:
    assert [parse_phase(str(n)) for n in range(1, 8)] == list(range(1, 8))
    assert parse_user("6F1C1D2E-8A4B-4C4F-9F6E-1A2B3C4D5E6F") == UUID(
        "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f"
    )
    with pytest.raises(InvalidFilterError, match=r"^user: must be a UUID, got 'bob'$"):
        parse_user("bob")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90s", 90_000),
        ("2m", 120_000),
        ("1500ms", 1500),
        ("1.5s", 1500),
        ("1h", 3_600_000),
        ("0.001s", 1),
        ("2147483647ms", 2_147_483_647),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms("duration", text) == ms


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("90", "expected a duration like 90s"),
        ("2 min", "expected"),
        ("-5s", "expected"),
        ("0s", "must be between 1 ms"),
        ("0.5ms", "whole number of milliseconds"),
        ("2147483648ms", "must be between 1 ms and 2147483647 ms"),
        ("1e3s", "expected"),
    ],
)
def test_bad_durations(text: str, reason: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        parse_duration_ms("duration", text)
    assert reason in caught.value.reason


def test_percentile_and_headroom() -> None:
    assert parse_percentile("95") == Decimal(95)
    assert parse_percentile("99.9") == Decimal("99.9")
    assert parse_headroom("20%") == Decimal("0.2")
    assert parse_headroom("0") == 0
    for bad in ("0", "101", "nan", "x", "-5"):
        with pytest.raises(InvalidFilterError, match=r"^percentile: "):
            parse_percentile(bad)
    for bad in ("-1%", "lots", "inf", "1001%"):
        with pytest.raises(InvalidFilterError, match=r"^headroom: "):
            parse_headroom(bad)


def test_pages() -> None:
    assert parse_page(None, None) == Page(100, 0)
    assert parse_page("1000", "5") == Page(1000, 5)
    for limit, offset, name in [
        ("0", None, "limit"),
        ("1001", None, "limit"),
        ("x", None, "limit"),
        (None, "-1", "offset"),
        (None, "1.5", "offset"),
        (None, "", "offset"),
    ]:
        with pytest.raises(InvalidFilterError) as caught:
            parse_page(limit, offset)
        assert caught.value.name == name


def test_workflow_ids() -> None:
    assert parse_workflow_id("wf-42") == "wf-42"
    for bad in ("", "x" * 256, "a\x00b"):
        with pytest.raises(InvalidFilterError, match=r"^workflow_id: "):
            parse_workflow_id(bad)
