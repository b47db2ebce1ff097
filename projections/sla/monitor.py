"""The SLA monitor's Postgres side: its state, its outbox and its positions, together.

Per batch, in one transaction: lock and load the state of the keys the batch touches,
fold the events over it (models.sla.state), write the state back, put the violations in
the outbox, move the positions. The overdue check is a second kind of transaction: it
claims open phases past deadline + grace (SKIP LOCKED), marks them reported and puts an
``overdue`` violation in the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from models.events import PhaseEvent
from models.ports import Batch
from models.sla.policy import judge_open
from models.sla.state import SlaState, key_of, step
from models.sla.violation import SlaViolation
from models.sla.violation_codec import encode_violation
from projections.database import Connection, as_uuid, in_transaction, translate_errors
from projections.sink_base import PostgresSink
from projections.sla.state_rows import load_state, open_phase, save_state
from projections.sla.thresholds import ThresholdCache

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]

#: One index range scan per (partition, phase): started before that pair's cutoff.
_DUE: Final = """
SELECT o.workflow_id, o.phase_number, o.started_event_id, o.user_id, o.started_at, c.mark
FROM unnest($1::int[], $2::int[], $3::timestamptz[], $4::timestamptz[])
     AS c(part, phase, cutoff, mark)
CROSS JOIN LATERAL (
    SELECT * FROM sla_open_phases AS o
    WHERE o.source_partition = c.part AND o.phase_number = c.phase
      AND NOT o.overdue_reported AND o.started_at < c.cutoff
    ORDER BY o.started_at
    LIMIT $5
    FOR UPDATE SKIP LOCKED) AS o
LIMIT $5"""


def due_query_args(
    watermarks: Mapping[int, datetime], thresholds: Mapping[int, int], grace_ms: int, limit: int
) -> list[Any]:
    """The arguments of the overdue query: per (partition, phase) its cutoff and mark."""
    cutoffs = [
        (part, phase, mark - timedelta(milliseconds=ms + grace_ms), mark)
        for part, mark in watermarks.items()
        for phase, ms in thresholds.items()
    ]
    return [*map(list, zip(*cutoffs, strict=True)), limit]


async def put_in_outbox(conn: Connection, violations: Sequence[SlaViolation]) -> None:
    """Put the violations never decided before in the outbox (the ledger remembers every
    one ever decided, so judging the same events again publishes nothing twice)."""
    if not violations:
        return
    new = await conn.fetch(
        "INSERT INTO sla_violations_decided (violation_id) SELECT unnest($1::uuid[]) "
        "ON CONFLICT DO NOTHING RETURNING violation_id",
        [v.violation_id for v in violations],
    )
    fresh = {as_uuid(r["violation_id"]) for r in new}
    await conn.executemany(
        "INSERT INTO sla_violation_outbox (violation_id, workflow_id, payload) "
        "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        [
            (v.violation_id, v.workflow_id, encode_violation(v))
            for v in violations
            if v.violation_id in fresh
        ],
    )


class SlaMonitor(PostgresSink[PhaseEvent]):
    """PositionedSink of the SLA monitor (consumer group phasestream-sla)."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        reload_s: float = 30.0,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(pool)
        self.thresholds = ThresholdCache(reload_s)
        self._clock = clock

    async def write_rows(self, conn: Connection, batch: Batch[PhaseEvent]) -> None:
        keys = {key_of(e) for e in batch.events}
        state = await load_state(conn, keys)
        before = SlaState(dict(state.open), dict(state.early))
        thresholds = await self.thresholds.get(conn)
        now = self._clock()
        violations = []
        for ref, events in batch.by_partition.items():
            for event in events:
                verdict = step(state, event, ref.partition, thresholds, now)
                if verdict is not None:
                    violations.append(verdict)
        await save_state(conn, before, state)
        await put_in_outbox(conn, violations)

    async def report_overdue(
        self, watermarks: Mapping[int, datetime], grace_ms: int, limit: int = 5000
    ) -> list[SlaViolation]:
        """Claim the open phases of these partitions that are past deadline + grace."""
        if not watermarks:
            return []
        return await translate_errors(lambda: self._report_overdue(watermarks, grace_ms, limit))

    async def _report_overdue(
        self, watermarks: Mapping[int, datetime], grace_ms: int, limit: int
    ) -> list[SlaViolation]:
        async with in_transaction(self.pool) as conn:
            # The planner's estimate for this small query can trigger JIT compilation,
            # which costs more than the query itself (measured: +300 ms).
            await conn.execute("SET LOCAL jit = off")
            thresholds = await self.thresholds.get(conn)
            rows = await conn.fetch(_DUE, *due_query_args(watermarks, thresholds, grace_ms, limit))
            verdicts = (_judge_due(row, thresholds[row["phase_number"]], grace_ms) for row in rows)
            violations = [v for v in verdicts if v is not None]
            await put_in_outbox(conn, violations)
            await conn.execute(
                "UPDATE sla_open_phases SET overdue_reported = TRUE WHERE (workflow_id, "
                "phase_number) IN (SELECT * FROM unnest($1::text[], $2::int[]))",
                [r["workflow_id"] for r in rows],
                [r["phase_number"] for r in rows],
            )
            return violations

    async def forget_early_ends(self, older_than_s: float) -> int:
        """Drop ends whose start never came (e.g. it predates the log); they are logged."""
        status = await translate_errors(
            lambda: self.pool.execute(
                "DELETE FROM sla_early_terminals WHERE received_at < now() - $1 * interval '1 s'",
                older_than_s,
            )
        )
        dropped = int(status.split()[-1])
        if dropped:
            log.warning("dropped %d phase ends whose start never arrived", dropped)
        return dropped


def _judge_due(row: Any, threshold_ms: int, grace_ms: int) -> SlaViolation | None:
    return judge_open(open_phase(row), threshold_ms, row["mark"], grace_ms)
