"""Rollback commands (contract version 1): what the rollback commander decides and publishes
to ``workflow.rollback-commands``. Ids are deterministic, so a replay issues nothing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal, cast
from uuid import UUID

import msgspec
import orjson

from models.compiled import CompiledContract
from models.errors import InvalidEventError
from models.json_object import enum_field, load_object
from models.validation import (
    int_field,
    optional_text,
    phase_field,
    timestamp_field,
    uuid_field,
    workflow_id_field,
)
from models.wire import Integer, Phase, TimestampText, UuidToken, WorkflowId, as_uuid, moment

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


def encode_command(command: RollbackCommand) -> bytes:
    return orjson.dumps(command)


FIELDS: Final = ("command_id", "kind", "workflow_id", "user_id", "failed_event_id",
                 "failed_phase", "rollback_to_phase", "reason", "issued_at", "attempt",
                 "schema_version")
_KINDS: Final = {kind.value: kind for kind in CommandKind}


class WireCommand(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A rollback command as written (contract version 1), as msgspec checks it."""

    command_id: UuidToken
    kind: CommandKind
    workflow_id: WorkflowId
    user_id: UuidToken
    failed_event_id: UuidToken
    failed_phase: Phase
    rollback_to_phase: Phase
    reason: str | None
    issued_at: TimestampText
    attempt: Integer
    schema_version: Literal[1]


def _command(wire: WireCommand) -> RollbackCommand | None:
    ids = as_uuid(wire.command_id), as_uuid(wire.user_id), as_uuid(wire.failed_event_id)
    issued_at = moment(wire.issued_at)
    if issued_at is None or None in ids:
        return None
    command_id, user_id, failed_event_id = cast("tuple[UUID, UUID, UUID]", ids)
    return RollbackCommand(command_id, wire.kind, wire.workflow_id, user_id, failed_event_id,
                           wire.failed_phase, wire.rollback_to_phase, wire.reason, issued_at,
                           wire.attempt)


def reference_decode_command(value: bytes) -> RollbackCommand:
    """The reference validator: orjson, then every field checked by hand."""
    payload = load_object(value, FIELDS, COMMAND_SCHEMA_VERSION)
    kind = enum_field("kind", payload["kind"], _KINDS)
    return RollbackCommand(
        uuid_field("command_id", payload["command_id"]), kind,
        workflow_id_field(payload["workflow_id"]), uuid_field("user_id", payload["user_id"]),
        uuid_field("failed_event_id", payload["failed_event_id"]),
        phase_field("failed_phase", payload["failed_phase"]),
        phase_field("rollback_to_phase", payload["rollback_to_phase"]),
        optional_text("reason", payload["reason"]),
        timestamp_field(payload["issued_at"], "issued_at"),
        int_field("attempt", payload["attempt"]))


COMMANDS: Final = CompiledContract(msgspec.json.Decoder(WireCommand), _command,
                                   reference_decode_command)


def decode_command(key: bytes | None, value: bytes | None) -> RollbackCommand:
    """Parse and validate one command; raise InvalidEventError naming field and reason."""
    command = COMMANDS.decode(value or b"")
    if key is not None and key != command.key:
        raise InvalidEventError("workflow_id", "does not match the record key")
    return command
