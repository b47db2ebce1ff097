"""The audit projector's Postgres sink: rows and positions in one transaction.

Write order inside the transaction: COPY the batch into a per-connection temp table,
INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING into the audit table (the event id is
the key, so replays are no-ops), then move the positions compare-and-set. The commit
makes all three durable at once; any failure leaves none of them.
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg
import orjson

from models.events import PhaseEvent
from models.ports import Batch
from projections.database import Connection
from projections.sink_base import PostgresSink

COLUMNS: Final = ("id", "workflow_id", "user_id", "phase_number", "status", "timestamp",
                  "duration_ms", "previous_phase", "error_message", "error_stack", "metadata",
                  "rollback_triggered", "rollback_to_phase")
_COLUMN_LIST: Final = ", ".join(f'"{c}"' for c in COLUMNS)
STAGE: Final = "phasestream_audit_stage"


def audit_row(event: PhaseEvent) -> tuple[Any, ...]:
    return (event.event_id, event.workflow_id, event.user_id, event.phase_number,
            event.status.value, event.timestamp, event.duration_ms, event.previous_phase,
            event.error_message, event.error_stack, orjson.dumps(event.metadata).decode(),
            event.rollback_triggered, event.rollback_to_phase)


async def _create_stage(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} "
        f"(LIKE workflow_phase_logs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")


class AuditSink(PostgresSink[PhaseEvent]):
    """PositionedSink for ``workflow_phase_logs``."""

    init = staticmethod(_create_stage)

    async def write_rows(self, conn: Connection, batch: Batch[PhaseEvent]) -> None:
        await conn.copy_records_to_table(
            STAGE, records=[audit_row(e) for e in batch.events], columns=COLUMNS)
        await conn.execute(
            f"INSERT INTO workflow_phase_logs ({_COLUMN_LIST}) "
            f"SELECT {_COLUMN_LIST} FROM {STAGE} ON CONFLICT (id) DO NOTHING")
