"""Bytes in and out of the rollback command contract (version 1): orjson encoding, the
compiled decoder and its reference validator, the key check.
"""

from __future__ import annotations

from typing import Final, Literal, cast
from uuid import UUID

import msgspec
import orjson

from models.commands import COMMAND_SCHEMA_VERSION, CommandKind, RollbackCommand
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

FIELDS: Final = (
    "command_id",
    "kind",
    "workflow_id",
    "user_id",
    "failed_event_id",
    "failed_phase",
    "rollback_to_phase",
    "reason",
    "issued_at",
    "attempt",
    "schema_version",
)
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
    return RollbackCommand(
        command_id,
        wire.kind,
        wire.workflow_id,
        user_id,
        failed_event_id,
        wire.failed_phase,
        wire.rollback_to_phase,
        wire.reason,
        issued_at,
        wire.attempt,
    )


def reference_decode_command(value: bytes) -> RollbackCommand:
    """The reference validator: orjson, then every field checked by hand."""
    payload = load_object(value, FIELDS, COMMAND_SCHEMA_VERSION)
    kind = enum_field("kind", payload["kind"], _KINDS)
    return RollbackCommand(
        uuid_field("command_id", payload["command_id"]),
        kind,
        workflow_id_field(payload["workflow_id"]),
        uuid_field("user_id", payload["user_id"]),
        uuid_field("failed_event_id", payload["failed_event_id"]),
        phase_field("failed_phase", payload["failed_phase"]),
        phase_field("rollback_to_phase", payload["rollback_to_phase"]),
        optional_text("reason", payload["reason"]),
        timestamp_field(payload["issued_at"], "issued_at"),
        int_field("attempt", payload["attempt"]),
    )


COMMANDS: Final = CompiledContract(
    msgspec.json.Decoder(WireCommand), _command, reference_decode_command
)


def encode_command(command: RollbackCommand) -> bytes:
    """The wire form: UTF-8 JSON, fields in contract order, timestamps in RFC 3339."""
    return orjson.dumps(command)


def decode_command(key: bytes | None, value: bytes | None) -> RollbackCommand:
    """Parse and validate one command; raise InvalidEventError naming field and reason."""
    command = COMMANDS.decode(value or b"")
    if key is not None and key != command.key:
        raise InvalidEventError("workflow_id", "does not match the record key")
    return command
