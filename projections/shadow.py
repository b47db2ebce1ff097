"""A projection's shadow table: rebuilt beside the live one, then swapped in atomically.

Readers keep the live table, whole, until one transaction renames the shadow into its
place (``phasestream_swap_table``, migration 0007: it also re-points the views, which
Postgres binds to a table's oid, not its name) and hands the replay's positions to the
live consumer. So a reader sees either the old table or the new one, never a half-built one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final

from projections.database import Connection
from projections.sink_base import quote_ident

SUFFIX: Final = "_shadow"
#: How long the swap waits for readers and writers to let go of the live table; while it
#: waits, new queries queue behind it, so a stuck reader must fail the swap, not stall all.
LOCK_TIMEOUT: Final = "30s"


#: Copies into the shadow, in the swap's transaction, what the live consumer wrote meanwhile.
TopUp = Callable[[Connection], Awaitable[object]]


def shadow_name(table: str) -> str:
    return table + SUFFIX


async def create_shadow(conn: Connection, table: str) -> str:
    """An empty copy of ``table`` (columns, defaults, constraints, indexes, partitioning)."""
    shadow = shadow_name(table)
    async with conn.transaction():
        # Left over by a replay that stopped halfway: it is only ever a partial copy.
        await conn.execute(f"DROP TABLE IF EXISTS {quote_ident(shadow)}")
        key = await conn.fetchval("SELECT pg_get_partkeydef(to_regclass($1))", quote_ident(table))
        partitioned = f" PARTITION BY {key}" if key else ""
        await conn.execute(
            f"CREATE TABLE {quote_ident(shadow)} "
            f"(LIKE {quote_ident(table)} INCLUDING ALL){partitioned}"
        )
    return shadow


async def swap_in(
    conn: Connection,
    *,
    table: str,
    shadow: str,
    topic: str,
    live_consumer: str,
    replay_consumer: str,
    companions: Sequence[str] = (),
    top_up: TopUp | None = None,
    live_since: datetime | None = None,
) -> None:
    """Put the shadow in the live table's place and the replay's positions in the live
    consumer's, in one transaction.

    The live consumer may be running. Once the live tables are locked, ``top_up`` copies
    into the shadow what the live consumer wrote meanwhile (so no row it committed is lost
    with the old table), and where its position moved since ``live_since`` (the replay's
    start: it read this log) past the replay's, it keeps its own, its rows being in the
    shadow now. Elsewhere the replay's position replaces it: a live batch still in flight
    fails its compare-and-set and re-reads from there, and a partition the replay never
    stored is forgotten, so it is read from the beginning. ``companions`` are tables
    rebuilt with the projection (e.g. the audit's event ids): their shadows swap in too.
    """
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # Companions first: a live batch locks them before the table (no lock-order cycle).
        live = ", ".join(quote_ident(name) for name in (*companions, table))
        await conn.execute(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE")
        if top_up is not None:
            await top_up(conn)
        for companion in companions:
            await conn.execute(
                "SELECT phasestream_swap_table($1, $2)", companion, shadow_name(companion)
            )
        await conn.execute("SELECT phasestream_swap_table($1, $2)", table, shadow)
        await conn.execute(
            "DELETE FROM phasestream_consumer_positions AS p WHERE consumer = $1 "
            "AND topic = $2 AND NOT coalesce(p.updated_at >= $4::timestamptz AND "
            "p.next_offset > coalesce((SELECT r.next_offset FROM "
            "phasestream_consumer_positions AS r WHERE r.consumer = $3 AND r.topic = p.topic "
            "AND r.partition = p.partition), 0), false)",
            live_consumer,
            topic,
            replay_consumer,
            live_since,
        )
        await conn.execute(
            "INSERT INTO phasestream_consumer_positions (consumer, topic, partition, "
            "next_offset, highwater, last_event_at) SELECT $1, topic, partition, next_offset, "
            "highwater, last_event_at FROM phasestream_consumer_positions "
            "WHERE consumer = $2 AND topic = $3 ON CONFLICT DO NOTHING",
            live_consumer,
            replay_consumer,
            topic,
        )
        await forget_replay(conn, replay_consumer)


async def drop_shadow(
    conn: Connection, shadow: str, replay_consumer: str, companions: Sequence[str] = ()
) -> None:
    """Undo an unfinished replay: the live table and its consumer were never touched."""
    async with conn.transaction():
        for name in (shadow, *map(shadow_name, companions)):
            await conn.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")
        await forget_replay(conn, replay_consumer)


async def forget_replay(conn: Connection, replay_consumer: str) -> None:
    await conn.execute(
        "DELETE FROM phasestream_consumer_positions WHERE consumer = $1", replay_consumer
    )
