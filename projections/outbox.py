"""Outboxes as the relay sees them: claim the oldest items, record send attempts, forget.

A claim is one transaction holding the items' rows FOR UPDATE SKIP LOCKED: relays of
several processes never claim the same item, and one that pauses keeps its items until
its connection ends. Attempts are written on another connection and committed before the
send, so they survive the claim's transaction being cut off.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

import asyncpg

from models.ports import OutboxItem, SendAttempt
from projections.database import (
    Connection,
    in_transaction,
    translate_errors,
    translated,
)

ATTEMPTS: Final = "phasestream_outbox_attempts"


@dataclass(slots=True)
class _Claim:
    pool: asyncpg.Pool[Any]
    table: str
    items: Sequence[OutboxItem]
    in_doubt: dict[UUID, SendAttempt]
    done: list[UUID] = field(default_factory=list)

    async def attempting(self, attempts: Sequence[SendAttempt]) -> None:
        # least(): an earlier attempt may have landed at an earlier offset.
        await translate_errors(
            lambda: self.pool.executemany(
                f"INSERT INTO {ATTEMPTS} (outbox, id, topic, partition, from_offset) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (outbox, id) DO UPDATE SET "
                "topic = excluded.topic, partition = excluded.partition, "
                f"from_offset = least({ATTEMPTS}.from_offset, excluded.from_offset), "
                "attempted_at = excluded.attempted_at",
                [(self.table, a.id, a.topic, a.partition, a.from_offset) for a in attempts],
            )
        )

    async def published(self, ids: Sequence[UUID]) -> None:
        self.done.extend(ids)


class PostgresOutbox:
    """An outbox table; ``columns`` selects id, topic (NULL: the relay's), key, payload."""

    def __init__(self, pool: asyncpg.Pool[Any], table: str, id_column: str, columns: str) -> None:
        self._pool = pool
        self._table = table
        self._id = id_column
        self._columns = columns

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[_Claim]:
        async with translated(), in_transaction(self._pool) as conn:
            claim = await self._claim(conn, limit)
            yield claim
            if claim.done:
                await self._forget(conn, claim.done)

    @property
    def claim_query(self) -> str:
        """The oldest $1 items not claimed by another relay, with their attempts ($2: the
        table's name); each outbox has an index on ``created_at`` for it."""
        return (
            f"SELECT {self._columns}, a.topic AS attempt_topic, a.partition, a.from_offset "
            f"FROM {self._table} AS o LEFT JOIN {ATTEMPTS} AS a "
            f"ON a.outbox = $2 AND a.id = o.{self._id} "
            "ORDER BY o.created_at LIMIT $1 FOR UPDATE OF o SKIP LOCKED"
        )

    async def _claim(self, conn: Connection, limit: int) -> _Claim:
        rows = await conn.fetch(self.claim_query, limit, self._table)
        items = [
            OutboxItem(r["id"], bytes(r["key"]), bytes(r["payload"]), r["topic"]) for r in rows
        ]
        in_doubt = {
            r["id"]: SendAttempt(r["id"], r["attempt_topic"], r["partition"], r["from_offset"])
            for r in rows
            if r["attempt_topic"] is not None
        }
        return _Claim(self._pool, self._table, items, in_doubt)

    async def _forget(self, conn: Connection, ids: Sequence[UUID]) -> None:
        await conn.execute(
            f"DELETE FROM {self._table} WHERE {self._id} = ANY($1::uuid[])", list(ids)
        )
        await conn.execute(
            f"DELETE FROM {ATTEMPTS} WHERE outbox = $1 AND id = ANY($2::uuid[])",
            self._table,
            list(ids),
        )


def violation_outbox(pool: asyncpg.Pool[Any]) -> PostgresOutbox:
    """The SLA monitor's outbox (all of it goes to the violations topic)."""
    return PostgresOutbox(
        pool,
        "sla_violation_outbox",
        "violation_id",
        "o.violation_id AS id, NULL::text AS topic, "
        "convert_to(o.workflow_id, 'UTF8') AS key, o.payload",
    )


def outbox(pool: asyncpg.Pool[Any]) -> PostgresOutbox:
    """``phasestream_outbox``: messages for any topic, in the order they were decided."""
    return PostgresOutbox(pool, "phasestream_outbox", "id", "o.id, o.topic, o.key, o.payload")


async def put(conn: Connection, items: Sequence[OutboxItem]) -> None:
    """Add items inside the caller's transaction; an id already there is not added twice."""
    if items:
        await conn.executemany(
            "INSERT INTO phasestream_outbox (id, topic, key, payload) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (id) DO NOTHING",
            [(item.id, item.topic, item.key, item.value) for item in items],
        )
