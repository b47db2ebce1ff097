"""The Postgres de-duplication store of subscribers: handled ids in the engine's transaction.

An engine that writes its own effects to Postgres gets an exactly-once effect the way
phasestream's projections do: the handled id and the engine's rows commit together, or
neither does. The table lives in the engine's database, so the store creates it
(``create_table``) instead of relying on phasestream's migrations.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Final
from uuid import UUID

import asyncpg

from models.dedup import Claim
from projections.database import Connection, translated

DEFAULT_TABLE: Final = "phasestream_handled_ids"
_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresHandledIds:
    """Claims ids with an insert in a transaction that the handler's writes share.

    A second subscriber claiming the same id concurrently waits on the first one's row
    and, once that commits, sees it handled: a rebalance never runs an effect twice.
    """

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, table: str = DEFAULT_TABLE) -> None:
        self._pool = pool
        self._table = _checked(table)

    async def create_table(self) -> None:
        """Create the table if it does not exist (safe to call from every process)."""
        async with translated(), self._pool.acquire() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (scope text NOT NULL, "
                "message_id uuid NOT NULL, handled_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (scope, message_id))"
            )

    @contextlib.asynccontextmanager
    async def claim(self, scope: str, message_id: UUID) -> AsyncIterator[Claim[Connection] | None]:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            if await claim_id(conn, scope, message_id, table=self._table):
                yield Claim(conn)
            else:
                yield None


async def claim_id(
    conn: Connection, scope: str, message_id: UUID, *, table: str = DEFAULT_TABLE
) -> bool:
    """Record ``message_id`` as handled in ``conn``'s transaction; False if it was already.

    For engines that run their own transaction: call it first inside it, and skip the
    effect when it returns False.
    """
    inserted = await conn.fetchval(
        f"INSERT INTO {_checked(table)} (scope, message_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING true",
        scope,
        message_id,
    )
    return inserted is True


def _checked(table: str) -> str:
    # The name goes into SQL text: only plain identifiers.
    if not _NAME.match(table):
        raise ValueError(f"table {table!r}: use lower-case letters, digits and _")
    return table
