"""Phases and statuses of a workflow, as the event contract names them."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

FIRST_PHASE: Final = 1
LAST_PHASE: Final = 7
PHASES: Final = tuple(range(FIRST_PHASE, LAST_PHASE + 1))


class PhaseStatus(StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


STATUSES: Final = tuple(status.value for status in PhaseStatus)
TERMINAL_STATUSES: Final = frozenset({PhaseStatus.COMPLETED, PhaseStatus.FAILED})

#: Default SLA per phase in milliseconds (docs/architecture.md); the live values sit in a table.
DEFAULT_SLA_MS: Final = {
    1: 30_000,
    2: 60_000,
    3: 120_000,
    4: 90_000,
    5: 10_000,
    6: 15_000,
    7: 60_000,
}


def is_valid_phase(value: int) -> bool:
    return FIRST_PHASE <= value <= LAST_PHASE
