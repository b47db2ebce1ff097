"""The audit projector's Postgres sink: rows and positions in one transaction.

Write order inside the transaction: COPY the batch into a per-connection temp table,
create any month partition the batch needs and lacks, INSERT ... SELECT ... ON CONFLICT
(id, "timestamp") DO NOTHING into the audit table (a replayed event carries its first
delivery's id and timestamp, so it is a no-op), then move the positions compare-and-set.
The commit makes all of them durable at once; any failure leaves none of them.

Partition upkeep (months ahead, retention) runs in its own short transaction before the
first batch and then once per ``maintenance_interval_s``: a DROP of an old month must not
hold the audit table's lock for as long as a batch does.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import asyncpg
import orjson

from models.errors import RejectedRecordError
from models.events import PhaseEvent
from models.ports import Batch
from projections.database import Connection, translate_errors
from projections.sink_base import PostgresSink

log = logging.getLogger(__name__)

COLUMNS: Final = ("id", "workflow_id", "user_id", "phase_number", "status", "timestamp",
                  "duration_ms", "previous_phase", "error_message", "error_stack", "metadata",
                  "rollback_triggered", "rollback_to_phase")
_COLUMN_LIST: Final = ", ".join(f'"{c}"' for c in COLUMNS)
STAGE: Final = "phasestream_audit_stage"
AUDIT_TABLE: Final = "workflow_phase_logs"
MONTHS_AHEAD: Final = 3
DAY_S: Final = 86_400.0


def audit_row(event: PhaseEvent) -> tuple[Any, ...]:
    return (event.event_id, event.workflow_id, event.user_id, event.phase_number,
            event.status.value, event.timestamp, event.duration_ms, event.previous_phase,
            event.error_message, event.error_stack, orjson.dumps(event.metadata).decode(),
            event.rollback_triggered, event.rollback_to_phase)


async def _create_stage(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} "
        f"(LIKE {AUDIT_TABLE} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")


async def maintain_partitions(pool: asyncpg.Pool[Any], *, table: str = AUDIT_TABLE,
                              months_ahead: int = MONTHS_AHEAD,
                              retention_months: int = 0) -> list[str]:
    """Create the partitions ahead and drop those past retention; the names dropped."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT phasestream_ensure_log_partitions($1, $2)",
                           months_ahead, table)
        rows = await conn.fetch(
            "SELECT name FROM phasestream_drop_log_partitions($1, $2) AS name",
            retention_months, table)
    return [r["name"] for r in rows]


class AuditSink(PostgresSink[PhaseEvent]):
    """PositionedSink for ``workflow_phase_logs`` (or a replay's shadow of it)."""

    init = staticmethod(_create_stage)
    default_table = AUDIT_TABLE

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, table: str | None = None,
                 retention_months: int = 0, months_ahead: int = MONTHS_AHEAD,
                 maintenance_interval_s: float = DAY_S) -> None:
        super().__init__(pool, table=table)
        self.retention_months = retention_months
        self.months_ahead = months_ahead
        self.maintenance_interval_s = maintenance_interval_s
        self._maintained_at: float | None = None

    async def apply(self, consumer: str, batch: Batch[PhaseEvent]) -> None:
        await self.maintain_if_due()
        await super().apply(consumer, batch)

    async def maintain_if_due(self) -> None:
        now = time.monotonic()
        if self._maintained_at is not None and \
                now - self._maintained_at < self.maintenance_interval_s:
            return
        try:
            dropped = await translate_errors(lambda: maintain_partitions(
                self.pool, table=self.table, months_ahead=self.months_ahead,
                retention_months=self.retention_months))
        except (asyncpg.PostgresError, RejectedRecordError) as exc:
            # Upkeep must never stop the projection: batches create the partitions they
            # need themselves, and retention can wait for the next run.
            log.warning("%s: partition upkeep failed (%s: %s); retrying in an hour",
                        self.table, type(exc).__name__, exc)
            self._maintained_at = now - self.maintenance_interval_s + 3600.0
            return
        self._maintained_at = now
        if dropped:
            log.info("%s: retention (%d months) dropped partitions %s", self.table,
                     self.retention_months, ", ".join(dropped))

    async def write_rows(self, conn: Connection, batch: Batch[PhaseEvent]) -> None:
        await conn.copy_records_to_table(
            STAGE, records=[audit_row(e) for e in batch.events], columns=COLUMNS)
        await conn.execute(
            "SELECT phasestream_ensure_log_partition($1, m) FROM (SELECT DISTINCT "
            f"date_trunc('month', \"timestamp\" AT TIME ZONE 'UTC')::date AS m FROM {STAGE}) "
            "AS months", self.table)
        await conn.execute(
            f"INSERT INTO {self.quoted_table} ({_COLUMN_LIST}) "
            f'SELECT {_COLUMN_LIST} FROM {STAGE} ON CONFLICT (id, "timestamp") DO NOTHING')
