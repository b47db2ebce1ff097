"""The SLA monitor's state machine: a pure fold of phase events over the open phases.

The adapter loads the state of the keys a batch touches, folds the batch's events over it
in log order, and writes back the state and the violations in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from models.events import PhaseEvent
from models.phases import TERMINAL_STATUSES, PhaseStatus
from models.sla.policy import OpenPhase, judge_finished, open_phase
from models.sla.violation import SlaViolation

Key = tuple[str, int]  # (workflow_id, phase_number)


def key_of(event: PhaseEvent) -> Key:
    return (event.workflow_id, event.phase_number)


@dataclass(frozen=True, slots=True)
class OpenEntry:
    phase: OpenPhase
    partition: int
    overdue_reported: bool = False


@dataclass(slots=True)
class SlaState:
    """The open phases and the early ends (ends seen before their start) of some keys."""

    open: dict[Key, OpenEntry] = field(default_factory=dict)
    early: dict[Key, PhaseEvent] = field(default_factory=dict)


def step(
    state: SlaState, event: PhaseEvent, partition: int, thresholds: Mapping[int, int], now: datetime
) -> SlaViolation | None:
    """Apply one event to the state; return the violation it reveals, if any."""
    if event.status is PhaseStatus.STARTED:
        return _started(state, event, partition, thresholds, now)
    if event.status in TERMINAL_STATUSES:
        return _finished(state, event, thresholds, now)
    return None  # rolled_back: the failure that caused it already ended the execution


def _started(
    state: SlaState, event: PhaseEvent, partition: int, thresholds: Mapping[int, int], now: datetime
) -> SlaViolation | None:
    key = key_of(event)
    current = state.open.get(key)
    if current is not None and current.phase.started_at > event.timestamp:
        return None  # an older start, replayed or reordered: the newer one stands
    entry = OpenEntry(open_phase(event), partition)
    early = state.early.pop(key, None)
    if early is not None and early.timestamp >= event.timestamp:
        state.open.pop(key, None)  # its end came first: the execution is already over
        return judge_finished(entry.phase, early, thresholds[event.phase_number], now)
    state.open[key] = entry  # an early end older than this start belonged to another run
    return None


def _finished(
    state: SlaState, event: PhaseEvent, thresholds: Mapping[int, int], now: datetime
) -> SlaViolation | None:
    key = key_of(event)
    current = state.open.get(key)
    if current is None or current.phase.started_at > event.timestamp:
        state.early[key] = event  # out of order: wait for the start
        return None
    del state.open[key]
    return judge_finished(current.phase, event, thresholds[event.phase_number], now)
