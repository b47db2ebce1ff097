"""The seed's ``metrics_data`` table, filled exactly once per phase transition."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson

from models.events import PhaseEvent
from models.metric_rows import MetricRow, metric_row
from models.ports import Batch
from projections.database import Connection
from projections.sink_base import PostgresSink

COLUMNS: Final = (
    "id",
    "metric_name",
    "metric_type",
    "value",
    "labels",
    "error_message",
    "metadata",
    "recorded_at",
)


class MetricsDataSink(PostgresSink[PhaseEvent]):
    """PositionedSink for ``metrics_data`` (id = the event's id)."""

    default_table = "metrics_data"

    async def write_rows(self, conn: Connection, batch: Batch[PhaseEvent]) -> None:
        rows = [_record(metric_row(e)) for e in batch.events]
        if len({r[0] for r in rows}) != len(rows) or not await self._copied(conn, rows):
            await self._insert_missing(conn, rows)

    async def _insert_missing(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        await conn.executemany(
            f"INSERT INTO {self.quoted_table} ({', '.join(COLUMNS)}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            rows,
        )

    async def _copied(self, conn: Connection, rows: list[tuple[Any, ...]]) -> bool:
        """COPY a batch of distinct ids; False if one was recorded before (a redelivery),
        which ``_insert_missing`` then skips. Row by row, the backend spends about twice
        the CPU per event (bench/metrics_sink.py). In a savepoint: the refused COPY leaves
        the batch's transaction usable."""
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(self.table, records=rows, columns=COLUMNS)
        except asyncpg.UniqueViolationError:
            return False
        return True


def _record(r: MetricRow) -> tuple[Any, ...]:
    return (
        r.id,
        r.metric_name,
        r.metric_type,
        r.value,
        orjson.dumps(r.labels).decode(),
        r.error_message,
        orjson.dumps(r.metadata).decode(),
        r.event.timestamp,
    )


async def open_phase_counts(conn: Connection) -> dict[int, int]:
    """Phases in flight per phase number, from the SLA monitor's state."""
    rows = await conn.fetch(
        "SELECT phase_number, count(*) AS n FROM sla_open_phases GROUP BY phase_number"
    )
    return {r["phase_number"]: r["n"] for r in rows}


async def open_phase_starts(conn: Connection) -> list[tuple[int, datetime]]:
    """(phase, started_at) of every phase in flight, from the SLA monitor's state: cheap
    enough to read every few seconds, where the audit log's answer is a scan."""
    rows = await conn.fetch("SELECT phase_number, started_at FROM sla_open_phases")
    return [(r["phase_number"], r["started_at"]) for r in rows]
