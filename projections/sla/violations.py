"""The projection of ``workflow.sla-violations`` into Postgres, exactly once."""

from __future__ import annotations

from models.ports import Batch
from models.sla.violation import SlaViolation
from projections.database import Connection
from projections.sink_base import PostgresSink


class ViolationSink(PostgresSink[SlaViolation]):
    """PositionedSink for ``workflow_phase_sla_violation_events`` (id = violation_id)."""

    default_table = "workflow_phase_sla_violation_events"

    async def write_rows(self, conn: Connection, batch: Batch[SlaViolation]) -> None:
        await conn.executemany(
            f"INSERT INTO {self.quoted_table} (violation_id, kind, workflow_id, "
            "user_id, phase_number, started_event_id, started_at, detected_at, elapsed_ms, "
            "threshold_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (violation_id) DO NOTHING",
            [
                (
                    v.violation_id,
                    v.kind.value,
                    v.workflow_id,
                    v.user_id,
                    v.phase_number,
                    v.started_event_id,
                    v.started_at,
                    v.detected_at,
                    v.elapsed_ms,
                    v.threshold_ms,
                )
                for v in batch.events
            ],
        )
