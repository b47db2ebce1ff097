"""The SLA violation outbox, as the relay sees it: take some, then remove what was sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from models.ports import OutboxItem
from projections.database import translate_errors


class ViolationOutbox:
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
