"""The pure notification decisions: building, redelivery, de-duplication, rate; tokens."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from models.commands import CommandKind, RollbackCommand, command_id
from models.notifications.dedup import Deduplicator, RecentIds
from models.notifications.rate_limit import RateLimiter
from models.notifications.value import Notification, NotificationKind, encode_notification, is_alert
from models.notifications.wording import from_command, from_violation
from models.sla.violation import SlaViolation, ViolationKind, violation_id

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
USER = uuid.UUID("6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f")
FAILED = uuid.UUID(int=7)


def command(
    kind: CommandKind = CommandKind.ROLLBACK,
    workflow: str = "wf-1",
    attempt: int = 0,
    reason: str | None = "TimeoutError: upstream",
    failed: uuid.UUID = FAILED,
) -> RollbackCommand:
    return RollbackCommand(
        command_id(failed, kind, attempt), kind, workflow, USER, failed, 3, 2, reason, T0, attempt
    )


def violation(
    kind: ViolationKind = ViolationKind.OVERDUE,
    workflow: str = "wf-1",
) -> SlaViolation:
    started = uuid.UUID(int=9)
    return SlaViolation(
        violation_id(started, kind), kind, workflow, USER, 5, started, T0, T0, 12_500, 10_000
    )


@pytest.mark.parametrize(
    ("kind", "title"),
    [
        (CommandKind.ROLLBACK, "wf-1: phase 3 failed, rolled back to phase 2"),
        (CommandKind.RETRY, "wf-1: retrying phase 2 (attempt 2)"),
        (CommandKind.GAVE_UP, "wf-1: gave up after phase 3 failed"),
        (CommandKind.LOOP_STOPPED, "wf-1: rollback loop stopped at phase 3"),
    ],
)
def test_a_command_becomes_a_notification_of_its_kind(kind: CommandKind, title: str) -> None:
    attempt = 2 if kind is CommandKind.RETRY else 0
    cmd = command(kind, attempt=attempt)
    n = from_command(cmd)
    assert (n.id, n.user_id, n.workflow_id, n.kind.value) == (
        cmd.command_id,
        str(USER),
        "wf-1",
        kind.value,
    )
    assert n.title == title
    assert n.text.endswith("Reason: TimeoutError: upstream")
    assert n.occurred_at == T0
    assert n.details == {
        "command_id": str(cmd.command_id),
        "failed_event_id": str(FAILED),
        "failed_phase": 3,
        "rollback_to_phase": 2,
        "attempt": attempt,
        "reason": "TimeoutError: upstream",
    }


@pytest.mark.parametrize(
    ("kind", "title", "took"),
    [
        (ViolationKind.LATE_COMPLETED, "wf-1: phase 5 completed late", "took 12.5 s"),
        (ViolationKind.LATE_FAILED, "wf-1: phase 5 failed late", "took 12.5 s"),
        (ViolationKind.OVERDUE, "wf-1: phase 5 is overdue", "has been running for 12.5 s"),
    ],
)
def test_a_violation_becomes_a_notification_of_its_kind(
    kind: ViolationKind, title: str, took: str
) -> None:
    v = violation(kind)
    n = from_violation(v)
    assert (n.id, n.user_id, n.kind.value, n.title) == (
        v.violation_id,
        str(USER),
        kind.value,
        title,
    )
    assert n.text == f"Phase 5 {took}; its SLA is 10.0 s."
    assert n.details["elapsed_ms"] == 12_500
    assert n.details["threshold_ms"] == 10_000


def test_the_json_form_is_plain_json_with_every_field() -> None:
    n = from_command(command(reason=None))
    decoded = orjson.loads(encode_notification(n))
    assert decoded == {
        "id": str(n.id),
        "user_id": str(USER),
        "workflow_id": "wf-1",
        "kind": "rollback",
        "title": n.title,
        "text": n.text,
        "occurred_at": "2026-11-27T08:00:00+00:00",
        "details": dict(n.details),
    }
    assert "Reason" not in n.text


def test_every_kind_but_retry_is_an_alert() -> None:
    kinds = {k: is_alert(from_command(command(k, attempt=1))) for k in CommandKind}
    assert kinds == {
        CommandKind.ROLLBACK: True,
        CommandKind.RETRY: False,
        CommandKind.GAVE_UP: True,
        CommandKind.LOOP_STOPPED: True,
    }
    assert all(is_alert(from_violation(violation(k))) for k in ViolationKind)
    assert {k.value for k in NotificationKind} == {k.value for k in CommandKind} | {
        k.value for k in ViolationKind
    }


def test_recent_ids_recognise_a_redelivery_and_forget_the_least_recently_seen() -> None:
    recent = RecentIds(capacity=2)
    a, b, c = (uuid.UUID(int=i) for i in (1, 2, 3))
    assert recent.add(a)
    assert recent.add(b)
    assert not recent.add(a)  # a redelivery; a is now the most recently seen
    assert recent.add(c)  # b, the least recently seen, is forgotten
    assert len(recent) == 2
    assert not recent.add(a)
    assert recent.add(b)


def alert(
    workflow: str = "wf-1",
    kind: CommandKind = CommandKind.ROLLBACK,
    failed: uuid.UUID | None = None,
) -> Notification:
    return from_command(command(kind, workflow, failed=failed or uuid.uuid4()))


def test_one_alert_per_workflow_and_kind_within_the_window() -> None:
    dedup = Deduplicator(window_s=600)
    assert dedup.admit(alert(), now=0.0)
    assert not dedup.admit(alert(), now=1.0)  # another command, same incident
    assert not dedup.admit(alert(), now=599.9)
    assert dedup.admit(alert("wf-2"), now=2.0)  # another workflow
    assert dedup.admit(alert(kind=CommandKind.GAVE_UP), now=3.0)  # another kind
    assert dedup.admit(alert(), now=600.0)  # the window has passed: a new incident


def test_suppressed_duplicates_do_not_extend_the_window() -> None:
    dedup = Deduplicator(window_s=10)
    assert dedup.admit(alert(), now=0.0)
    for second in range(1, 10):
        assert not dedup.admit(alert(), now=float(second))
    assert dedup.admit(alert(), now=10.0)


def test_checking_does_not_record_only_recording_does() -> None:
    dedup = Deduplicator(window_s=10)
    assert not dedup.is_duplicate(alert(), now=0.0)
    assert not dedup.is_duplicate(alert(), now=0.0)  # e.g. refused by the rate limit
    dedup.record(alert(), now=1.0)
    assert dedup.is_duplicate(alert(), now=10.9)
    assert not dedup.is_duplicate(alert(), now=11.0)


def test_the_deduplicator_stays_bounded() -> None:
    dedup = Deduplicator(window_s=600, max_incidents=3)
    for i in range(5):
        assert dedup.admit(alert(f"wf-{i}"), now=float(i))
    assert len(dedup) == 3  # the oldest incidents are forgotten first
    assert dedup.is_duplicate(alert("wf-4"), now=5.0)


def test_the_rate_limit_allows_a_burst_then_refills_per_minute() -> None:
    limiter = RateLimiter(per_minute=30)
    assert [limiter.allow(0.0) for _ in range(31)] == [True] * 30 + [False]
    assert not limiter.allow(1.9)  # 30/min is one every 2 s
    assert limiter.allow(2.0)
    assert not limiter.allow(2.0)
    assert [limiter.allow(1000.0) for _ in range(31)].count(True) == 30  # capped at burst


def test_a_smaller_burst_and_a_clock_going_backwards() -> None:
    limiter = RateLimiter(per_minute=60, burst=1)
    assert limiter.allow(10.0)
    assert not limiter.allow(5.0)  # no refill from a clock that went backwards
    assert limiter.allow(6.0)


def test_notifications_are_values() -> None:
    n = from_command(command())
    assert n == replace(n)
    assert hash(n) == hash(replace(n, details={"other": 1}))  # details are not hashed
