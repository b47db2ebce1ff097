"""Rollback and retry decisions: plain functions of a failed event, a workflow's history,
the policy, the time and a jitter draw.

"Phase 3 failed, so roll back to phase 2, retry in 4 s" is decided here; the adapter makes
the decision durable and publishes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from models.commands import COMMAND_NAMESPACE, CommandKind, RollbackCommand, command_id
from models.events import PhaseEvent
from models.phases import FIRST_PHASE, PhaseStatus


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter; defaults close to AWS Step Functions'."""

    enabled: bool = False
    interval_ms: int = 1000
    backoff_rate: float = 2.0
    max_attempts: int = 3
    max_delay_ms: int = 60_000
    full_jitter: bool = True  # Step Functions' JitterStrategy FULL; False is NONE

    def delay_ms(self, attempt: int, jitter: float) -> int:
        """Attempt n (from 1) waits min(max delay, interval * rate^(n-1)), or with full
        jitter a uniform share of it (``jitter`` is a draw from [0, 1))."""
        cap = min(self.max_delay_ms, self.interval_ms * self.backoff_rate ** (attempt - 1))
        return int(jitter * cap) if self.full_jitter else int(cap)


@dataclass(frozen=True, slots=True)
class RollbackPolicy:
    enabled: bool = True
    max_per_workflow: int = 5
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class WorkflowHistory:
    """What the commander remembers of one workflow."""

    rollbacks: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    commands: tuple[RollbackCommand, ...] = ()
    rolled_back: PhaseEvent | None = None  # goes back into the phase-event log
    retry_due_at: datetime | None = None  # when the RETRY among ``commands`` is due
    history: WorkflowHistory = field(default_factory=WorkflowHistory)

    @property
    def immediate(self) -> tuple[RollbackCommand, ...]:
        return tuple(c for c in self.commands if c.kind is not CommandKind.RETRY)

    @property
    def retry(self) -> RollbackCommand | None:
        return next((c for c in self.commands if c.kind is CommandKind.RETRY), None)


def decide(
    failed: PhaseEvent,
    history: WorkflowHistory,
    policy: RollbackPolicy,
    now: datetime,
    jitter: float,
) -> Decision:
    """A failed phase N > 1 rolls back to N-1 (unless the workflow loops); phase 1 does not."""
    if (
        failed.status is not PhaseStatus.FAILED
        or failed.phase_number == FIRST_PHASE
        or not policy.enabled
    ):
        return Decision(history=history)
    if history.rollbacks >= policy.max_per_workflow:
        return Decision((_command(failed, CommandKind.LOOP_STOPPED, now),), history=history)
    rollback = _command(failed, CommandKind.ROLLBACK, now)
    rolled = WorkflowHistory(history.rollbacks + 1, history.retries)
    if not policy.retry.enabled:
        return Decision((rollback,), rolled_back_event(failed, rollback), history=rolled)
    attempt = history.retries + 1
    if attempt > policy.retry.max_attempts:
        gave_up = _command(failed, CommandKind.GAVE_UP, now, history.retries)
        return Decision((rollback, gave_up), rolled_back_event(failed, rollback), history=rolled)
    retry = _command(failed, CommandKind.RETRY, now, attempt)
    due = now + timedelta(milliseconds=policy.retry.delay_ms(attempt, jitter))
    return Decision(
        (rollback, retry),
        rolled_back_event(failed, rollback),
        due,
        WorkflowHistory(rolled.rollbacks, attempt),
    )


def _command(
    failed: PhaseEvent, kind: CommandKind, now: datetime, attempt: int = 0
) -> RollbackCommand:
    return RollbackCommand(
        command_id(failed.event_id, kind, attempt if kind is CommandKind.RETRY else 0),
        kind,
        failed.workflow_id,
        failed.user_id,
        failed.event_id,
        failed.phase_number,
        max(FIRST_PHASE, failed.phase_number - 1),
        failed.error_message,
        now,
        attempt,
    )


def rolled_back_event(failed: PhaseEvent, rollback: RollbackCommand) -> PhaseEvent:
    """The ``rolled_back`` event of phase N, so the audit log and the metrics record it."""
    return PhaseEvent(
        event_id=uuid.uuid5(COMMAND_NAMESPACE, f"{failed.event_id}:rolled_back"),
        workflow_id=failed.workflow_id,
        user_id=failed.user_id,
        phase_number=failed.phase_number,
        status=PhaseStatus.ROLLED_BACK,
        timestamp=rollback.issued_at,
        previous_phase=failed.phase_number,
        error_message=failed.error_message,
        metadata={"command_id": str(rollback.command_id), "failed_event_id": str(failed.event_id)},
        rollback_triggered=True,
        rollback_to_phase=rollback.rollback_to_phase,
    )
