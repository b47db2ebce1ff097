"""The pure SLA decisions, table-driven: boundaries, grace, out-of-order ends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from models.errors import InvalidEventError
from models.events import PhaseEvent
from models.phases import PhaseStatus
from models.sla.policy import OpenPhase, judge_finished, judge_open, open_phase
from models.sla.violation import ViolationKind, violation_id
from models.sla.violation_codec import decode_violation, encode_violation

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
STARTED = PhaseEvent(uuid.UUID(int=1), "wf-1", uuid.UUID(int=2), 3, PhaseStatus.STARTED, T0)
PHASE = open_phase(STARTED)
MS = timedelta(milliseconds=1)


def finished(status: PhaseStatus, after_ms: int, duration_ms: int | None) -> PhaseEvent:
    return PhaseEvent(
        uuid.uuid4(),
        "wf-1",
        STARTED.user_id,
        3,
        status,
        T0 + after_ms * MS,
        duration_ms=duration_ms,
    )


@pytest.mark.parametrize(
    ("status", "after_ms", "duration_ms", "threshold", "expected"),
    [
        (PhaseStatus.COMPLETED, 1000, 1000, 1000, None),  # exactly at the threshold: within
        (PhaseStatus.COMPLETED, 1001, 1001, 1000, ViolationKind.LATE_COMPLETED),
        (PhaseStatus.FAILED, 5000, 5000, 1000, ViolationKind.LATE_FAILED),
        (PhaseStatus.FAILED, 500, 500, 1000, None),
        # The producer's own duration wins over the event-time difference.
        (PhaseStatus.COMPLETED, 5000, 900, 1000, None),
        (PhaseStatus.COMPLETED, 900, 5000, 1000, ViolationKind.LATE_COMPLETED),
        # No duration sent: the event-time difference is the duration.
        (PhaseStatus.COMPLETED, 1500, None, 1000, ViolationKind.LATE_COMPLETED),
        (PhaseStatus.COMPLETED, 1000, None, 1000, None),
        # An end stamped before its start (clock skew) counts as zero, never negative.
        (PhaseStatus.COMPLETED, -50, None, 1000, None),
        # rolled_back is not an end of execution for the SLA.
        (PhaseStatus.ROLLED_BACK, 9000, 9000, 1000, None),
    ],
)
def test_judge_finished(
    status: PhaseStatus,
    after_ms: int,
    duration_ms: int | None,
    threshold: int,
    expected: ViolationKind | None,
) -> None:
    verdict = judge_finished(PHASE, finished(status, after_ms, duration_ms), threshold, T0)
    assert (verdict.kind if verdict else None) == expected
    if verdict is not None:
        assert verdict.elapsed_ms > threshold
        assert verdict.violation_id == violation_id(STARTED.event_id, expected or verdict.kind)
        assert (verdict.started_event_id, verdict.started_at) == (STARTED.event_id, T0)


@pytest.mark.parametrize(
    ("now_ms", "threshold", "grace", "overdue"),
    [
        (999, 1000, 0, False),
        (1000, 1000, 0, False),  # exactly at the deadline: not yet exceeded
        (1001, 1000, 0, True),
        (1500, 1000, 2000, False),  # past the deadline but within grace: wait for late ends
        (3000, 1000, 2000, False),
        (3001, 1000, 2000, True),
    ],
)
def test_judge_open(now_ms: int, threshold: int, grace: int, overdue: bool) -> None:
    verdict = judge_open(PHASE, threshold, T0 + now_ms * MS, grace)
    assert (verdict is not None) == overdue
    if verdict is not None:
        assert verdict.kind is ViolationKind.OVERDUE
        assert verdict.elapsed_ms == now_ms
        assert verdict.detected_at == T0 + now_ms * MS


def test_late_arrival_within_grace_gives_no_violation_beyond_grace_overdue_stands() -> None:
    threshold, grace = 1000, 2000
    end_in_time = finished(PhaseStatus.COMPLETED, 800, 800)
    # Arrives 2.5 s after the start: within deadline + grace, so nothing was reported yet,
    # and its event time says it was in time.
    assert judge_open(PHASE, threshold, T0 + 2500 * MS, grace) is None
    assert judge_finished(PHASE, end_in_time, threshold, T0 + 2500 * MS) is None
    # Had it arrived after deadline + grace, the phase would have been reported overdue.
    assert judge_open(PHASE, threshold, T0 + 3500 * MS, grace) is not None


def test_violation_ids_are_deterministic_and_distinct_per_kind() -> None:
    ids = {violation_id(STARTED.event_id, kind) for kind in ViolationKind}
    assert len(ids) == 3
    assert violation_id(STARTED.event_id, ViolationKind.OVERDUE) == violation_id(
        uuid.UUID(int=1), ViolationKind.OVERDUE
    )
    other = OpenPhase(uuid.UUID(int=9), "wf-1", STARTED.user_id, 3, T0)
    assert judge_open(other, 1, T0 + MS * 5, 0) != judge_open(PHASE, 1, T0 + MS * 5, 0)


def test_violation_round_trip_and_rejections() -> None:
    verdict = judge_open(PHASE, 1000, T0 + 5000 * MS, 0)
    assert verdict is not None
    assert decode_violation(b"wf-1", encode_violation(verdict)) == verdict
    with pytest.raises(InvalidEventError, match="kind"):
        decode_violation(None, encode_violation(verdict).replace(b"overdue", b"slowish"))
    with pytest.raises(InvalidEventError, match="workflow_id"):
        decode_violation(b"wf-2", encode_violation(verdict))
