"""What every Postgres projection shares: a pool, stored positions, one transaction per batch."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

import asyncpg

from models.ports import Batch, PartitionRef
from projections.database import (
    Connection,
    in_transaction,
    keep_session,
    open_pool,
    translate_errors,
)
from projections.positions import load_positions, move_positions

T = TypeVar("T")
S = TypeVar("S", bound="PostgresSink[Any]")
# asyncpg is generic only in its stubs, hence the string.
Init: TypeAlias = "Callable[[asyncpg.Connection[asyncpg.Record]], Coroutine[Any, Any, None]]"


def quote_ident(name: str) -> str:
    """A table name as a SQL identifier (names cannot be bound parameters)."""
    return '"' + name.replace('"', '""') + '"'


class PostgresSink(Generic[T]):
    """A PositionedSink: subclasses write a batch's rows; positions move in the same
    transaction, compare-and-set, after the rows."""

    init: Init | None = None  # per-connection set-up (e.g. a temp staging table)
    #: The table a projection writes; ``table=`` points it elsewhere (a replay's shadow).
    default_table: ClassVar[str] = ""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, table: str | None = None) -> None:
        self.pool = pool
        self.table = table or self.default_table

    @property
    def quoted_table(self) -> str:
        return quote_ident(self.table)

    @classmethod
    async def connect(cls: type[S], dsn: str, **options: Any) -> S:
        """Open the pool; ``options`` go to the constructor. A sink keeps no session state
        between its transactions, so its connections are returned to the pool as they are."""
        pool = await translate_errors(lambda: open_pool(dsn, init=cls.init, reset=keep_session))
        return cls(pool, **options)

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self: S) -> S:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def positions(
        self, consumer: str, partitions: Iterable[PartitionRef]
    ) -> dict[PartitionRef, int]:
        return await translate_errors(lambda: load_positions(self.pool, consumer, partitions))

    async def apply(self, consumer: str, batch: Batch[T]) -> None:
        await translate_errors(lambda: self._apply(consumer, batch))

    async def _apply(self, consumer: str, batch: Batch[T]) -> None:
        async with in_transaction(self.pool) as conn:
            if batch.events:
                await self.write_rows(conn, batch)
            await move_positions(conn, consumer, batch.moves)

    async def write_rows(self, conn: Connection, batch: Batch[T]) -> None:
        raise NotImplementedError

    async def rebuilt(self) -> None:
        """A replay's hook: ``table`` was just rebuilt from the log, before it is swapped in
        (e.g. partitions the live table has ahead of the events). Nothing by default."""
