"""Outboxes as the relay sees them: take some, then remove what the broker acknowledged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from models.ports import OutboxItem
from projections.database import Connection, translate_errors


class ViolationOutbox:
    """The SLA monitor's outbox (all of it goes to the violations topic)."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def take(self, limit: int) -> list[OutboxItem]:
        rows = await translate_errors(lambda: self._pool.fetch(
            "SELECT violation_id, workflow_id, payload FROM sla_violation_outbox "
            "ORDER BY created_at LIMIT $1", limit))
        return [OutboxItem(r["violation_id"], r["workflow_id"].encode(), bytes(r["payload"]))
                for r in rows]

    async def remove(self, ids: Sequence[UUID]) -> None:
        await translate_errors(lambda: self._pool.execute(
            "DELETE FROM sla_violation_outbox WHERE violation_id = ANY($1::uuid[])", list(ids)))


class Outbox:
    """``phasestream_outbox``: messages for any topic, in the order they were decided."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def take(self, limit: int) -> list[OutboxItem]:
        rows = await translate_errors(lambda: self._pool.fetch(
            "SELECT id, topic, key, payload FROM phasestream_outbox ORDER BY created_at "
            "LIMIT $1", limit))
        return [OutboxItem(r["id"], bytes(r["key"]), bytes(r["payload"]), r["topic"])
                for r in rows]

    async def remove(self, ids: Sequence[UUID]) -> None:
        await translate_errors(lambda: self._pool.execute(
            "DELETE FROM phasestream_outbox WHERE id = ANY($1::uuid[])", list(ids)))


async def put(conn: Connection, items: Sequence[OutboxItem]) -> None:
    """Add items inside the caller's transaction; an id already there is not added twice."""
    if items:
        await conn.executemany(
            "INSERT INTO phasestream_outbox (id, topic, key, payload) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (id) DO NOTHING",
            [(item.id, item.topic, item.key, item.value) for item in items])
