"""What a subscriber decodes each topic with, and the deterministic id it de-duplicates by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from models.command_codec import decode_command
from models.commands import RollbackCommand
from models.event_codec import decode_record
from models.events import PhaseEvent
from models.sla.violation import SlaViolation
from models.sla.violation_codec import decode_violation

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Contract(Generic[T]):
    """A topic's contract: the compiled decoder the consumers use, and the value's id."""

    name: str
    #: Decodes a record's key and value, or raises InvalidEventError naming field and reason.
    decode: Callable[[bytes | None, bytes | None], T]
    message_id: Callable[[T], UUID]
    #: The value's kind (a command's or violation's kind, an event's status), for filters.
    kind: Callable[[T], str]
    workflow_id: Callable[[T], str]


def _decode_event(key: bytes | None, value: bytes | None) -> PhaseEvent:
    return decode_record(key, value)


COMMANDS: Contract[RollbackCommand] = Contract(
    "rollback-command",
    decode_command,
    lambda c: c.command_id,
    lambda c: c.kind.value,
    lambda c: c.workflow_id,
)
VIOLATIONS: Contract[SlaViolation] = Contract(
    "sla-violation",
    decode_violation,
    lambda v: v.violation_id,
    lambda v: v.kind.value,
    lambda v: v.workflow_id,
)
PHASE_EVENTS: Contract[PhaseEvent] = Contract(
    "phase-event",
    _decode_event,
    lambda e: e.event_id,
    lambda e: e.status.value,
    lambda e: e.workflow_id,
)
#: Every contract, by name.
CONTRACTS: dict[str, Contract[Any]] = {c.name: c for c in (COMMANDS, VIOLATIONS, PHASE_EVENTS)}
