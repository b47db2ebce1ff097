"""Rollback commands (contract version 1): what the rollback commander decides and publishes
to ``workflow.rollback-commands``. Ids are deterministic, so a replay issues nothing twice.
The contract's codec is ``models/command_codec.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final
from uuid import UUID

COMMAND_SCHEMA_VERSION: Final = 1
#: Namespace of command ids: uuid5(namespace, f"{failed_event_id}:{kind}[:{attempt}]").
COMMAND_NAMESPACE: Final = UUID("8c0f6b0e-2f9a-5d41-b7e3-1c9d2a4e6f80")


class CommandKind(StrEnum):
    ROLLBACK = "rollback"  # undo phase N: go back to phase N-1
    RETRY = "retry"  # run phase N-1 again (automatic re-queue)
    GAVE_UP = "gave_up"  # retries exhausted: nothing more will be tried
    LOOP_STOPPED = "loop_stopped"  # the workflow was rolled back too often: no rollback


@dataclass(frozen=True, slots=True)
class RollbackCommand:
    command_id: UUID
    kind: CommandKind
    workflow_id: str
    user_id: UUID
    failed_event_id: UUID
    failed_phase: int
    rollback_to_phase: int
    reason: str | None
    issued_at: datetime
    attempt: int = 0  # the retry's number (1, 2, ...); 0 for other kinds
    schema_version: int = COMMAND_SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        return self.workflow_id.encode()


def command_id(failed_event_id: UUID, kind: CommandKind, attempt: int = 0) -> UUID:
    suffix = f":{attempt}" if attempt else ""
    return uuid.uuid5(COMMAND_NAMESPACE, f"{failed_event_id}:{kind.value}{suffix}")
