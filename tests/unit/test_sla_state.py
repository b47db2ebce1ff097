"""The SLA monitor's state machine, pure: starts, ends, retries, ends before starts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from models.events import PhaseEvent
from models.phases import PhaseStatus
from models.sla.state import SlaState, step
from models.sla.violation import ViolationKind

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
USER = uuid.UUID(int=7)
THRESHOLDS = dict.fromkeys(range(1, 8), 1000)


def event(
    status: PhaseStatus, at_ms: int, duration: int | None = None, workflow: str = "wf"
) -> PhaseEvent:
    return PhaseEvent(
        uuid.uuid4(),
        workflow,
        USER,
        2,
        status,
        T0 + timedelta(milliseconds=at_ms),
        duration_ms=duration,
    )


def fold(*events: PhaseEvent) -> tuple[SlaState, list[ViolationKind]]:
    state = SlaState()
    kinds = [v.kind for e in events if (v := step(state, e, 0, THRESHOLDS, T0)) is not None]
    return state, kinds


def test_start_then_on_time_end_leaves_nothing() -> None:
    state, kinds = fold(event(PhaseStatus.STARTED, 0), event(PhaseStatus.COMPLETED, 500, 500))
    assert (state.open, state.early, kinds) == ({}, {}, [])


def test_start_then_late_end() -> None:
    _, kinds = fold(event(PhaseStatus.STARTED, 0), event(PhaseStatus.FAILED, 1500, 1500))
    assert kinds == [ViolationKind.LATE_FAILED]


def test_end_before_start_is_judged_when_the_start_arrives() -> None:
    end = event(PhaseStatus.COMPLETED, 2000, 2000)
    state = SlaState()
    assert step(state, end, 0, THRESHOLDS, T0) is None
    assert list(state.early) == [("wf", 2)]
    start = event(PhaseStatus.STARTED, 0)
    verdict = step(state, start, 0, THRESHOLDS, T0)
    assert verdict is not None
    assert verdict.kind is ViolationKind.LATE_COMPLETED
    assert verdict.started_event_id == start.event_id
    assert (state.open, state.early) == ({}, {})


def test_a_retry_replaces_the_open_execution_and_an_older_start_is_ignored() -> None:
    first, retry = event(PhaseStatus.STARTED, 0), event(PhaseStatus.STARTED, 5000)
    state, _ = fold(first, retry, event(PhaseStatus.STARTED, 100))
    assert state.open[("wf", 2)].phase.started_event_id == retry.event_id


def test_an_end_older_than_the_open_start_waits_and_a_stale_early_end_is_dropped() -> None:
    state, kinds = fold(event(PhaseStatus.STARTED, 5000), event(PhaseStatus.COMPLETED, 100, 100))
    assert kinds == []
    assert ("wf", 2) in state.open
    assert ("wf", 2) in state.early
    # A newer start: the early end belonged to an older run and is forgotten.
    later = event(PhaseStatus.STARTED, 9000)
    assert step(state, later, 0, THRESHOLDS, T0) is None
    assert state.early == {}
    assert state.open[("wf", 2)].phase.started_event_id == later.event_id


def test_rolled_back_changes_nothing() -> None:
    state, kinds = fold(event(PhaseStatus.STARTED, 0), event(PhaseStatus.ROLLED_BACK, 9000))
    assert kinds == []
    assert ("wf", 2) in state.open
