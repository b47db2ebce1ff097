"""The demo's workflows: in time order, with failures, re-runs, chains and slow phases."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from models.events import PhaseEvent
from models.phases import DEFAULT_SLA_MS, PhaseStatus
from phasestream.demo import MAX_RERUNS, DemoClock, workflow_events, workflow_plan

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def plans(count: int = 3000) -> list[list[PhaseEvent]]:
    rng = random.Random(7)
    return [workflow_plan(rng, T0) for _ in range(count)]


def test_each_workflow_is_started_end_pairs_in_time_order() -> None:
    for events in plans(500):
        assert events[0].timestamp == T0
        assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
        assert len({e.workflow_id for e in events}) == 1
        for started, ended in zip(events[::2], events[1::2], strict=True):
            assert started.status is PhaseStatus.STARTED
            assert ended.status in {PhaseStatus.COMPLETED, PhaseStatus.FAILED}
            assert ended.phase_number == started.phase_number
            assert ended.duration_ms == (ended.timestamp - started.timestamp) / timedelta(
                milliseconds=1
            )


def test_a_failed_phase_is_followed_by_the_phase_before_again() -> None:
    reruns = 0
    for events in plans():
        ends = events[1::2]
        for ended, after in zip(ends, events[2::2], strict=False):
            if ended.status is PhaseStatus.FAILED:
                reruns += 1
                assert after.phase_number == ended.phase_number - 1
                assert after.timestamp - ended.timestamp >= timedelta(seconds=2)
    assert reruns > 50


def test_some_workflows_roll_back_again_and_again_but_never_endlessly() -> None:
    failures = Counter(sum(e.status is PhaseStatus.FAILED for e in events) for events in plans())
    assert max(failures) <= MAX_RERUNS + 1
    chains = sum(n for failed, n in failures.items() if failed >= 2)
    gave_up = sum(n for failed, n in failures.items() if failed >= 4)
    assert chains >= 30
    assert gave_up >= 10
    assert failures[0] > 0.75 * 3000  # most run through


def test_most_phases_end_well_within_their_sla_and_a_few_run_past_it() -> None:
    ends = [e for events in plans() for e in events[1::2]]
    late = sum((e.duration_ms or 0) > DEFAULT_SLA_MS[e.phase_number] for e in ends)
    assert 0.03 < late / len(ends) < 0.10
    within_half = sum((e.duration_ms or 0) < DEFAULT_SLA_MS[e.phase_number] / 2 for e in ends)
    assert within_half / len(ends) > 0.8


def test_a_finished_workflow_ends_at_the_time_asked() -> None:
    events = workflow_events(random.Random(3), T0)
    assert events[-1].timestamp == T0
    assert events[0].timestamp < T0


def test_the_clock_releases_events_when_they_are_due() -> None:
    clock = DemoClock()
    rng = random.Random(1)
    first, second = workflow_plan(rng, T0), workflow_plan(rng, T0 + timedelta(seconds=1))
    clock.add(first)
    clock.add(second)
    assert clock.in_flight() == 2
    assert clock.pop_due(T0 - timedelta(seconds=1)) == []
    assert [e.workflow_id for e in clock.pop_due(T0)] == [first[0].workflow_id]
    released = clock.pop_due(T0 + timedelta(days=1))
    assert len(released) == len(first) + len(second) - 1
    assert [e.timestamp for e in released] == sorted(e.timestamp for e in released)
    assert len(clock) == 0
