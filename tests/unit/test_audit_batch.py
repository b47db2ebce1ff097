"""The audit sink's pure batch helpers: which events repeat an id with other fields, and
where the refused ones sit in their partitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from msgspec.structs import replace

from models.events import PhaseEvent
from models.phases import PhaseStatus
from models.ports import Batch, PartitionRef, PositionMove
from projections.audit_sink import refused_positions, repeated_within

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(n: int, workflow_id: str = "wf-1") -> PhaseEvent:
    return PhaseEvent(uuid.UUID(int=n), workflow_id, uuid.UUID(int=99), 1, PhaseStatus.STARTED, T0)


def test_an_exact_repeat_is_not_a_conflict() -> None:
    first = event(1)
    assert repeated_within([first, first, replace(first)], set()) == set()


def test_the_same_id_with_other_fields_is_refused_after_its_first() -> None:
    first = event(1)
    other, third = replace(first, workflow_id="wf-2"), replace(first, phase_number=2)
    assert repeated_within([first, event(2), other, third], set()) == {2, 3}


def test_a_skipped_event_neither_counts_as_first_nor_is_reported() -> None:
    first = event(1)
    other = replace(first, workflow_id="wf-2")
    assert repeated_within([first, other], {0}) == set()
    assert repeated_within([first, other, replace(first)], {0}) == {2}


def test_different_ids_never_conflict() -> None:
    assert repeated_within([event(n) for n in range(5)], set()) == set()


A, B = PartitionRef("events", 0), PartitionRef("events", 3)


def test_flat_indexes_become_positions_within_each_partition() -> None:
    batch = Batch(
        {A: [event(1), event(2)], B: [event(3), event(4), event(5)]},
        {A: PositionMove(None, 2), B: PositionMove(7, 10)},
    )
    assert refused_positions(batch, {1, 2, 4}) == frozenset({(A, 1), (B, 0), (B, 2)})
    assert refused_positions(batch, set()) == frozenset()


def test_an_empty_partition_shifts_nothing() -> None:
    batch = Batch(
        {A: [], B: [event(1), event(2)]}, {A: PositionMove(None, 0), B: PositionMove(None, 2)}
    )
    assert refused_positions(batch, {0, 1}) == frozenset({(B, 0), (B, 1)})
