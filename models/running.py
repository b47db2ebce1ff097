"""Running phases: how far each one is towards its deadline, and its state.

Pure: the caller passes ``now``. ``overdue`` means strictly past the threshold (as the SLA
judgements in models.sla.policy); ``at_risk`` means at or past ``at_risk_share`` of it and not yet
overdue; anything earlier is ``ok``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final
from uuid import UUID

from models.phases import PHASES
from models.report_filters import InvalidFilterError, parse_phase, parse_user

DEFAULT_AT_RISK_SHARE: Final = 0.8
MS: Final = timedelta(milliseconds=1)


class RunningState(StrEnum):
    OK = "ok"
    AT_RISK = "at_risk"
    OVERDUE = "overdue"


@dataclass(frozen=True, slots=True)
class Progress:
    """Where one running phase stands at ``now``; ``left_ms`` < 0 is how long overdue."""

    elapsed_ms: int
    left_ms: int
    state: RunningState


def at_risk_after(threshold_ms: int, share: float) -> timedelta:
    """How long a phase runs before it counts as at risk (the SQL filter uses the same)."""
    return timedelta(milliseconds=threshold_ms * share)


def judge_running(
    started_at: datetime, threshold_ms: int, now: datetime, share: float = DEFAULT_AT_RISK_SHARE
) -> Progress:
    """The state of a phase started at ``started_at`` and not finished by ``now``."""
    elapsed = now - started_at
    threshold = threshold_ms * MS
    if elapsed > threshold:
        state = RunningState.OVERDUE
    elif elapsed >= at_risk_after(threshold_ms, share):
        state = RunningState.AT_RISK
    else:
        state = RunningState.OK
    elapsed_ms = elapsed // MS
    return Progress(elapsed_ms, threshold_ms - elapsed_ms, state)


def overdue_by_ms(duration_ms: int, threshold_ms: int) -> int | None:
    """How far past its deadline a finished phase ended, or None if it ended in time."""
    return duration_ms - threshold_ms if duration_ms > threshold_ms else None


@dataclass(frozen=True, slots=True)
class PhaseLoad:
    """Per phase: running phases by state and the oldest one's age (None: none running)."""

    by_state: dict[RunningState, int]
    oldest_age_s: float | None


def phase_loads(
    running: Iterable[tuple[int, datetime]],
    thresholds_ms: Mapping[int, int],
    now: datetime,
    share: float = DEFAULT_AT_RISK_SHARE,
) -> dict[int, PhaseLoad]:
    """Every phase's load from (phase, started_at) of the phases running at ``now``."""
    counts = {p: dict.fromkeys(RunningState, 0) for p in PHASES}
    oldest: dict[int, datetime] = {}
    for phase, started_at in running:
        state = judge_running(started_at, thresholds_ms[phase], now, share).state
        counts[phase][state] += 1
        oldest[phase] = min(started_at, oldest.get(phase, started_at))
    return {
        p: PhaseLoad(
            counts[p], None if p not in oldest else max(0.0, (now - oldest[p]).total_seconds())
        )
        for p in PHASES
    }


@dataclass(frozen=True, slots=True)
class RunningQuery:
    """Which running phases to list; ``at_risk`` keeps only at_risk and overdue ones.
    Starts older than ``now - lookback`` are abandoned, not running."""

    now: datetime
    lookback: timedelta
    share: float = DEFAULT_AT_RISK_SHARE
    phase: int | None = None
    user: UUID | None = None
    at_risk: bool = False


def parse_running(
    *,
    phase: str | None,
    user: str | None,
    at_risk: str | bool | None,
    now: datetime,
    lookback: timedelta,
    share: float,
) -> RunningQuery:
    """The filters of ``report running`` and ``/api/running``; InvalidFilterError names
    the one that is wrong."""
    flag = at_risk if isinstance(at_risk, bool) else parse_flag("at_risk", at_risk)
    return RunningQuery(
        now,
        lookback,
        share,
        None if phase is None else parse_phase(phase),
        None if user is None else parse_user(user),
        flag,
    )


def parse_flag(name: str, text: str | None) -> bool:
    """``true``/``false`` (also 1/0, yes/no); absent is false."""
    if text is None:
        return False
    value = text.strip().lower()
    if value in {"true", "1", "yes"}:
        return True
    if value in {"false", "0", "no"}:
        return False
    raise InvalidFilterError(name, f"must be true or false, got {text!r}")
