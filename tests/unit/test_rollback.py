"""Rollback and retry decisions, pure: every phase and status, loop cap, backoff."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from jsonschema import Draft202012Validator

from models.command_codec import decode_command, encode_command
from models.commands import CommandKind, command_id
from models.errors import InvalidEventError
from models.events import PhaseEvent
from models.phases import PHASES, PhaseStatus
from models.rollback import RetryPolicy, RollbackPolicy, WorkflowHistory, decide
from models.schema import rollback_command_schema

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
FRESH = WorkflowHistory()


def failure(phase: int, status: PhaseStatus = PhaseStatus.FAILED) -> PhaseEvent:
    return PhaseEvent(
        uuid.uuid4(),
        "wf-1",
        uuid.UUID(int=5),
        phase,
        status,
        NOW,
        duration_ms=10,
        error_message="disk full",
    )


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("status", list(PhaseStatus))
def test_only_a_failure_after_phase_1_rolls_back(phase: int, status: PhaseStatus) -> None:
    event = failure(phase, status)
    decision = decide(event, FRESH, RollbackPolicy(), NOW, 0.5)
    if status is PhaseStatus.FAILED and phase > 1:
        (command,) = decision.commands
        assert (command.kind, command.failed_phase, command.rollback_to_phase) == (
            CommandKind.ROLLBACK,
            phase,
            phase - 1,
        )
        assert command.command_id == command_id(event.event_id, CommandKind.ROLLBACK)
        assert command.reason == "disk full"
        rolled = decision.rolled_back
        assert rolled is not None
        assert (
            rolled.status,
            rolled.phase_number,
            rolled.previous_phase,
            rolled.rollback_triggered,
            rolled.rollback_to_phase,
        ) == (PhaseStatus.ROLLED_BACK, phase, phase, True, phase - 1)
        assert decision.history == WorkflowHistory(1, 0)
    else:
        assert decision.commands == ()
        assert decision.rolled_back is None


def test_replaying_a_failure_gives_the_same_ids() -> None:
    event = failure(4)
    first = decide(event, FRESH, RollbackPolicy(), NOW, 0.1)
    again = decide(event, FRESH, RollbackPolicy(), NOW + timedelta(hours=1), 0.9)
    assert [c.command_id for c in first.commands] == [c.command_id for c in again.commands]
    assert first.rolled_back is not None
    assert again.rolled_back is not None
    assert first.rolled_back.event_id == again.rolled_back.event_id


def test_disabled_issues_nothing() -> None:
    assert decide(failure(3), FRESH, RollbackPolicy(enabled=False), NOW, 0.5).commands == ()


def test_a_rollback_loop_is_stopped_and_reported() -> None:
    policy = RollbackPolicy(max_per_workflow=2)
    decision = decide(failure(3), WorkflowHistory(rollbacks=2), policy, NOW, 0.5)
    assert [c.kind for c in decision.commands] == [CommandKind.LOOP_STOPPED]
    assert decision.rolled_back is None
    assert decision.history == WorkflowHistory(rollbacks=2)


def test_retries_are_scheduled_with_backoff_then_give_up() -> None:
    policy = RollbackPolicy(
        retry=RetryPolicy(enabled=True, interval_ms=1000, max_attempts=3, full_jitter=False)
    )
    history, delays = FRESH, []
    for _ in range(3):
        decision = decide(failure(3), history, policy, NOW, 0.5)
        retry = decision.retry
        assert retry is not None
        assert retry.rollback_to_phase == 2
        assert decision.retry_due_at is not None
        delays.append((decision.retry_due_at - NOW) // timedelta(milliseconds=1))
        assert retry.attempt == len(delays)
        history = decision.history
    assert delays == [1000, 2000, 4000]
    last = decide(failure(3), history, policy, NOW, 0.5)
    assert [c.kind for c in last.commands] == [CommandKind.ROLLBACK, CommandKind.GAVE_UP]
    assert last.retry is None


def test_backoff_is_monotone_capped_and_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(interval_ms=1000, backoff_rate=2.0, max_delay_ms=10_000)
    caps = [
        RetryPolicy(interval_ms=1000, max_delay_ms=10_000, full_jitter=False).delay_ms(n, 0)
        for n in range(1, 9)
    ]
    assert caps == sorted(caps)
    assert caps[-1] == 10_000
    assert caps[:4] == [1000, 2000, 4000, 8000]
    for attempt in range(1, 9):
        cap = caps[attempt - 1]
        for draw in (0.0, 0.25, 0.5, 0.999999):
            assert 0 <= policy.delay_ms(attempt, draw) < cap or cap == 0


def test_command_round_trip_and_key_check() -> None:
    decision = decide(failure(5), FRESH, RollbackPolicy(), NOW, 0.5)
    command = decision.commands[0]
    assert decode_command(b"wf-1", encode_command(command)) == command
    with pytest.raises(InvalidEventError, match="record key"):
        decode_command(b"other", encode_command(command))


def test_command_schema_agrees_with_the_decoder() -> None:
    schema = rollback_command_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    decisions = [
        decide(
            failure(3),
            WorkflowHistory(retries=r),
            RollbackPolicy(max_per_workflow=9, retry=RetryPolicy(enabled=True, max_attempts=1)),
            NOW,
            0.5,
        )
        for r in (0, 1)
    ]
    good = [orjson.loads(encode_command(c)) for d in decisions for c in d.commands]
    assert {g["kind"] for g in good} == {"rollback", "retry", "gave_up"}
    bad = [
        {**good[0], "kind": "undo"},
        {**good[0], "failed_phase": 8},
        {**good[0], "extra": 1},
        {k: v for k, v in good[0].items() if k != "reason"},
        {**good[0], "issued_at": "2026-11-27T09:00:00"},
        {**good[0], "attempt": -1},
        {**good[0], "command_id": "not-a-uuid"},
    ]
    for payload in good:
        assert validator.is_valid(payload)
        decode_command(None, orjson.dumps(payload))
    for payload in bad[:-2]:
        assert not validator.is_valid(payload), payload
        with pytest.raises(InvalidEventError):
            decode_command(None, orjson.dumps(payload))
    for payload in bad[-2:]:
        assert not validator.is_valid(payload), payload
