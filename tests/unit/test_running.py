"""The pure running-phase decisions: state boundaries, time left, per-phase loads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.report_filters import InvalidFilterError
from models.running import (
    RunningState,
    judge_running,
    overdue_by_ms,
    parse_flag,
    parse_running,
    phase_loads,
)

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("elapsed_ms", "share", "state", "left_ms"),
    [
        (0, 0.8, RunningState.OK, 10_000),
        (7_999, 0.8, RunningState.OK, 2_001),
        (8_000, 0.8, RunningState.AT_RISK, 2_000),  # at the share: at risk
        (10_000, 0.8, RunningState.AT_RISK, 0),  # exactly at the threshold: not yet overdue
        (10_001, 0.8, RunningState.OVERDUE, -1),  # strictly past it, as models.sla.policy judges
        (25_000, 0.8, RunningState.OVERDUE, -15_000),
        (5_000, 0.5, RunningState.AT_RISK, 5_000),
        (9_999, 1.0, RunningState.OK, 1),  # share 1: never at risk before the deadline
    ],
)
def test_judge_running(elapsed_ms: int, share: float, state: RunningState, left_ms: int) -> None:
    progress = judge_running(T0, 10_000, T0 + elapsed_ms * MS, share)
    assert (progress.state, progress.elapsed_ms, progress.left_ms) == (state, elapsed_ms, left_ms)


def test_overdue_by() -> None:
    assert overdue_by_ms(12_500, 10_000) == 2_500
    assert overdue_by_ms(10_000, 10_000) is None
    assert overdue_by_ms(3, 10_000) is None


def test_phase_loads_count_states_and_the_oldest_age() -> None:
    now = T0 + timedelta(seconds=100)
    thresholds = dict.fromkeys(range(1, 8), 50_000)
    running = [
        (2, T0 + timedelta(seconds=90)),  # 10 s: ok
        (2, T0 + timedelta(seconds=55)),  # 45 s of 50: at risk
        (2, T0),  # 100 s: overdue, and the oldest
        (5, T0 + timedelta(seconds=99)),
    ]
    loads = phase_loads(running, thresholds, now, 0.8)
    assert loads[2].by_state == {
        RunningState.OK: 1,
        RunningState.AT_RISK: 1,
        RunningState.OVERDUE: 1,
    }
    assert loads[2].oldest_age_s == 100.0
    assert loads[5].oldest_age_s == 1.0
    assert loads[1].oldest_age_s is None
    assert sum(loads[1].by_state.values()) == 0
    assert set(loads) == set(range(1, 8))


def test_parse_running_names_the_bad_filter() -> None:
    asked = parse_running(
        phase="3", user=None, at_risk="true", now=T0, lookback=timedelta(hours=1), share=0.8
    )
    assert (asked.phase, asked.at_risk, asked.share) == (3, True, 0.8)
    for phase, at_risk, name in (("9", None, "phase"), ("2", "maybe", "at_risk")):
        with pytest.raises(InvalidFilterError) as caught:
            parse_running(
                phase=phase,
                user=None,
                at_risk=at_risk,
                now=T0,
                lookback=timedelta(hours=1),
                share=0.8,
            )
        assert caught.value.name == name
    assert parse_flag("x", None) is False
    assert parse_flag("x", "0") is False
