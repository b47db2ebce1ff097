"""The overdue query's arguments: one cutoff per (partition, phase), the same boundary as
the pure policy (``judge_open``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from models.sla.policy import OpenPhase, judge_open
from projections.sla.monitor import due_query_args

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def test_one_row_per_partition_and_phase_with_its_cutoff_and_mark() -> None:
    parts, phases, cutoffs, marks, limit = due_query_args(
        {0: T0, 2: T0 + S}, {1: 1000, 4: 5000}, grace_ms=500, limit=10
    )
    assert (parts, phases, limit) == ([0, 0, 2, 2], [1, 4, 1, 4], 10)
    assert cutoffs == [T0 - 1.5 * S, T0 - 5.5 * S, T0 - 0.5 * S, T0 - 4.5 * S]
    assert marks == [T0, T0, T0 + S, T0 + S]


def test_the_cutoff_is_where_judge_open_starts_to_report() -> None:
    # The query takes phases started strictly before the cutoff: exactly those judged overdue.
    _, _, (cutoff,), (mark,), _ = due_query_args({0: T0}, {3: 2000}, grace_ms=250, limit=1)

    def judged(started_at: datetime) -> bool:
        phase = OpenPhase(uuid.UUID(int=1), "wf-1", uuid.UUID(int=2), 3, started_at)
        return judge_open(phase, 2000, mark, 250) is not None

    assert not judged(cutoff)
    assert judged(cutoff - timedelta(microseconds=1))
