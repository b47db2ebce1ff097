"""The analysts' filter and argument text (CLI flags, API query parameters), parsed.

Pure: the caller passes ``now``, so relative windows ("24h") are plain functions of it.
Every refusal is an InvalidFilterError that names the parameter and says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final
from uuid import UUID

from models.errors import PhasestreamError
from models.phases import FIRST_PHASE, LAST_PHASE, is_valid_phase

_RELATIVE: Final = re.compile(r"(\d{1,9})(s|m|h|d|w)")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
#: The largest amount of each unit in a relative time: a window of a century or two back,
#: far inside what a datetime (and Postgres) can hold. phasestream/openapi.json's
#: ``since``/``until`` pattern says the same, so a client validating against it agrees.
MAX_RELATIVE: Final = {"s": 999_999, "m": 999_999, "h": 999_999, "d": 99_999, "w": 9_999}
#: The years a timestamp may name (as written, before its offset): an offset moves the
#: instant by less than a day, so it always stays inside datetime's and Postgres' range.
FIRST_YEAR: Final = 1000
LAST_YEAR: Final = 8999
_DURATION: Final = re.compile(r"(\d{1,12}(?:\.\d{1,3})?)(ms|s|m|h)")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
#: threshold_ms is an INTEGER column.
MAX_THRESHOLD_MS: Final = 2_147_483_647
MAX_WORKFLOW_ID: Final = 255
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100


class InvalidFilterError(PhasestreamError):
    """A filter or argument value that cannot be used; ``name`` is the parameter."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ReportFilters:
    """A window [since, until) of event time, and optionally one phase and one user."""

    since: datetime | None = None
    until: datetime | None = None
    phase: int | None = None
    user: UUID | None = None


@dataclass(frozen=True, slots=True)
class Page:
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def parse_filters(
    *, since: str | None, until: str | None, phase: str | None, user: str | None, now: datetime
) -> ReportFilters:
    start = None if since is None else parse_time("since", since, now)
    end = None if until is None else parse_time("until", until, now)
    if start is not None and end is not None and start >= end:
        raise InvalidFilterError("until", f"must be after since ({_iso(start)}), got {_iso(end)}")
    return ReportFilters(
        start,
        end,
        None if phase is None else parse_phase(phase),
        None if user is None else parse_user(user),
    )


def parse_time(name: str, text: str, now: datetime) -> datetime:
    """``24h``, ``7d``, ``30m``, ``45s``, ``2w`` (that long before ``now``) or RFC 3339."""
    value = text.strip()
    relative = _RELATIVE.fullmatch(value)
    if relative:
        amount, unit = int(relative[1]), relative[2]
        if amount > MAX_RELATIVE[unit]:
            raise InvalidFilterError(
                name,
                f"at most {MAX_RELATIVE[unit]}{unit} back from now, got {text!r}; "
                "give an RFC 3339 timestamp for an older start",
            )
        return now - timedelta(seconds=amount * _UNIT_SECONDS[unit])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidFilterError(
            name, f"expected a duration like 24h, 7d, 30m or an RFC 3339 timestamp, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        # A naive time is ambiguous between the analyst's zone and the server's: refuse it.
        raise InvalidFilterError(name, f"the timestamp needs an offset (Z or +hh:mm): {text!r}")
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise InvalidFilterError(
            name, f"the year must be from {FIRST_YEAR} to {LAST_YEAR}, got {text!r}"
        )
    return moment


def parse_phase(text: str) -> int:
    value = text.strip()
    if not re.fullmatch(r"[0-9]{1,2}", value) or not is_valid_phase(int(value)):
        raise InvalidFilterError(
            "phase", f"must be a phase from {FIRST_PHASE} to {LAST_PHASE}, got {text!r}"
        )
    return int(value)


def parse_user(text: str) -> UUID:
    try:
        return UUID(text.strip())
    except ValueError:
        raise InvalidFilterError("user", f"must be a UUID, got {text!r}") from None


def parse_workflow_id(text: str) -> str:
    """As the event contract: 1-255 characters, no NUL (PostgreSQL cannot compare one)."""
    if not 1 <= len(text) <= MAX_WORKFLOW_ID or "\x00" in text:
        raise InvalidFilterError(
            "workflow_id", f"must be 1-{MAX_WORKFLOW_ID} characters without NUL"
        )
    return text


def parse_duration_ms(name: str, text: str) -> int:
    """``90s``, ``2m``, ``1500ms``, ``1.5s``, ``1h``: a positive whole number of ms."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise InvalidFilterError(name, f"expected a duration like 90s, 2m or 1500ms, got {text!r}")
    exact = Decimal(match[1]) * _UNIT_MS[match[2]]
    if exact != exact.to_integral_value():
        raise InvalidFilterError(name, f"must be a whole number of milliseconds, got {text!r}")
    if not 0 < exact <= MAX_THRESHOLD_MS:
        raise InvalidFilterError(
            name, f"must be between 1 ms and {MAX_THRESHOLD_MS} ms, got {text!r}"
        )
    return int(exact)


def parse_percentile(text: str) -> Decimal:
    """A percentile in (0, 100], e.g. ``95`` or ``99.9``."""
    value = _decimal("percentile", text.strip())
    if not 0 < value <= 100:
        raise InvalidFilterError("percentile", f"must be in (0, 100], got {text!r}")
    return value


def parse_headroom(text: str) -> Decimal:
    """``20%`` (or ``20``) → 0.20: the share added on top of the percentile, 0 to 1000 %."""
    value = _decimal("headroom", text.strip().removesuffix("%"))
    if not 0 <= value <= 1000:
        raise InvalidFilterError("headroom", f"must be from 0% to 1000%, got {text!r}")
    return value / 100


def parse_page(limit: str | None, offset: str | None) -> Page:
    size = DEFAULT_LIMIT if limit is None else _int("limit", limit)
    start = 0 if offset is None else _int("offset", offset)
    if not 1 <= size <= MAX_LIMIT:
        raise InvalidFilterError("limit", f"must be from 1 to {MAX_LIMIT}, got {limit!r}")
    if start < 0:
        raise InvalidFilterError("offset", f"must be 0 or more, got {offset!r}")
    return Page(size, start)


def _decimal(name: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidFilterError(name, f"must be a number, got {text!r}") from None
    if not value.is_finite():
        raise InvalidFilterError(name, f"must be a finite number, got {text!r}")
    return value


def _int(name: str, text: str) -> int:
    # isdecimal alone would accept other scripts' digits; int() of those is surprising.
    if not re.fullmatch(r"-?[0-9]{1,9}", text.strip()):
        raise InvalidFilterError(name, f"must be a whole number, got {text!r}")
    return int(text)


def _iso(moment: datetime) -> str:
    return moment.isoformat()
