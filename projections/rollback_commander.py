"""The rollback commander's Postgres side: ledger, workflow history, outbox, positions.

Per batch, in one transaction: skip failures already decided (the ledger knows their
ids: a replay decides nothing again), lock and load the history of the workflows left,
decide (models.rollback), record the commands, put the immediate ones and the rolled_back
events in the outbox, keep retries in the ledger until due, move the positions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg

from models.command_codec import encode_command
from models.commands import CommandKind, RollbackCommand
from models.event_codec import encode_event
from models.events import PhaseEvent
from models.phases import PhaseStatus
from models.ports import Batch, OutboxItem
from models.rollback import Decision, RollbackPolicy, WorkflowHistory, decide
from projections.database import Connection, as_uuid, in_transaction, translate_errors
from projections.outbox import put
from projections.sink_base import PostgresSink

Clock = Callable[[], datetime]
#: Which of these failed events the ledger decided before: by an index (migration 0015),
#: as the ledger only grows.
DECIDED_BEFORE: Final = (
    "SELECT DISTINCT failed_event_id FROM rollback_commands WHERE failed_event_id = ANY($1::uuid[])"
)


class RollbackCommander(PostgresSink[PhaseEvent]):
    """PositionedSink of the rollback commander (consumer group phasestream-rollback)."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        policy: RollbackPolicy | None = None,
        *,
        commands_topic: str = "workflow.rollback-commands",
        events_topic: str = "workflow.phase-events",
        clock: Clock = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(pool)
        self.policy = policy or RollbackPolicy()
        self.commands_topic, self.events_topic = commands_topic, events_topic
        self._clock, self._jitter = clock, jitter

    async def write_rows(self, conn: Connection, batch: Batch[PhaseEvent]) -> None:
        failed = [e for e in batch.events if e.status is PhaseStatus.FAILED]
        if not failed:
            return
        decided = {
            as_uuid(r["failed_event_id"])
            for r in await conn.fetch(DECIDED_BEFORE, [e.event_id for e in failed])
        }
        fresh = [e for e in failed if e.event_id not in decided]
        if fresh:
            await self._decide(conn, fresh)

    async def _decide(self, conn: Connection, failed: Sequence[PhaseEvent]) -> None:
        histories = await _load_histories(conn, {e.workflow_id for e in failed})
        now, decisions = self._clock(), []
        for event in failed:
            history = histories.get(event.workflow_id, WorkflowHistory())
            decision = decide(event, history, self.policy, now, self._jitter())
            histories[event.workflow_id] = decision.history
            decisions.append(decision)
        await _record(conn, decisions, now)
        await put(conn, [item for d in decisions for item in self._outbox_items(d)])
        await _save_histories(conn, histories)

    def _outbox_items(self, decision: Decision) -> list[OutboxItem]:
        items = [
            OutboxItem(c.command_id, c.key, encode_command(c), self.commands_topic)
            for c in decision.immediate
        ]
        if decision.rolled_back is not None:
            event = decision.rolled_back
            items.append(
                OutboxItem(event.event_id, event.key, encode_event(event), self.events_topic)
            )
        return items

    async def release_due_retries(self, limit: int = 1000) -> list[RollbackCommand]:
        """Move retries whose time has come from the ledger to the outbox, once each."""
        return await translate_errors(lambda: self._release(limit))

    async def _release(self, limit: int) -> list[RollbackCommand]:
        async with in_transaction(self.pool) as conn:
            rows = await conn.fetch(
                "SELECT * FROM rollback_commands WHERE issued_at IS NULL AND due_at <= now() "
                "ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
            commands = [_command(row) for row in rows]
            await put(
                conn,
                [
                    OutboxItem(c.command_id, c.key, encode_command(c), self.commands_topic)
                    for c in commands
                ],
            )
            await conn.execute(
                "UPDATE rollback_commands SET issued_at = now() WHERE command_id = ANY($1::uuid[])",
                [c.command_id for c in commands],
            )
            return commands


async def _load_histories(conn: Connection, workflows: set[str]) -> dict[str, WorkflowHistory]:
    rows = await conn.fetch(
        "SELECT workflow_id, rollbacks, retries FROM rollback_workflow_state "
        "WHERE workflow_id = ANY($1::text[]) FOR UPDATE",
        list(workflows),
    )
    return {r["workflow_id"]: WorkflowHistory(r["rollbacks"], r["retries"]) for r in rows}


async def _save_histories(conn: Connection, histories: dict[str, WorkflowHistory]) -> None:
    await conn.executemany(
        "INSERT INTO rollback_workflow_state (workflow_id, rollbacks, retries) "
        "VALUES ($1, $2, $3) ON CONFLICT (workflow_id) DO UPDATE SET rollbacks = "
        "EXCLUDED.rollbacks, retries = EXCLUDED.retries, updated_at = now()",
        [(wf, h.rollbacks, h.retries) for wf, h in histories.items()],
    )


async def _record(conn: Connection, decisions: Sequence[Decision], now: datetime) -> None:
    rows = [
        (
            c.command_id,
            c.kind.value,
            c.workflow_id,
            c.user_id,
            c.failed_event_id,
            c.failed_phase,
            c.rollback_to_phase,
            c.attempt,
            c.reason,
            c.issued_at,
            d.retry_due_at if c.kind is CommandKind.RETRY else None,
            None if c.kind is CommandKind.RETRY else now,
        )
        for d in decisions
        for c in d.commands
    ]
    await conn.executemany(
        "INSERT INTO rollback_commands (command_id, kind, workflow_id, user_id, "
        "failed_event_id, failed_phase, rollback_to_phase, attempt, reason, decided_at, "
        "due_at, issued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        "ON CONFLICT (command_id) DO NOTHING",
        rows,
    )


def _command(row: Any) -> RollbackCommand:
    return RollbackCommand(
        as_uuid(row["command_id"]),
        CommandKind(row["kind"]),
        row["workflow_id"],
        as_uuid(row["user_id"]),
        as_uuid(row["failed_event_id"]),
        row["failed_phase"],
        row["rollback_to_phase"],
        row["reason"],
        datetime.now(UTC),
        row["attempt"],
    )
