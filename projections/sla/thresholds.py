"""SLA thresholds from ``workflow_phase_sla_thresholds``, reloaded now and then.

The table is the one source of truth shared by the SQL view, the monitor and the alerts.
"""

from __future__ import annotations

import time

from models.phases import DEFAULT_SLA_MS
from projections.database import Connection


async def load_thresholds(conn: Connection) -> dict[int, int]:
    rows = await conn.fetch("SELECT phase_number, threshold_ms FROM workflow_phase_sla_thresholds")
    # A phase missing from the table keeps its default rather than failing every check.
    return DEFAULT_SLA_MS | {r["phase_number"]: r["threshold_ms"] for r in rows}


class ThresholdCache:
    """The thresholds, re-read from the table at most every ``reload_s`` seconds."""

    def __init__(self, reload_s: float) -> None:
        self._reload_s = reload_s
        self._loaded_at = float("-inf")
        self._values: dict[int, int] = dict(DEFAULT_SLA_MS)

    async def get(self, conn: Connection) -> dict[int, int]:
        if time.monotonic() - self._loaded_at >= self._reload_s:
            self._values = await load_thresholds(conn)
            self._loaded_at = time.monotonic()
        return self._values
