"""Consumer positions stored beside the rows they describe, moved compare-and-set."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import asyncpg

from models.errors import StalePositionError
from models.ports import PartitionRef, PositionMove
from projections.database import Connection


async def load_positions(
    conn: Connection | asyncpg.Pool[Any], consumer: str, partitions: Iterable[PartitionRef]
) -> dict[PartitionRef, int]:
    refs = list(partitions)
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM phasestream_consumer_positions "
        "WHERE consumer = $1 AND (topic, partition) IN "
        "(SELECT * FROM unnest($2::text[], $3::int[]))",
        consumer,
        [r.topic for r in refs],
        [r.partition for r in refs],
    )
    return {PartitionRef(r["topic"], r["partition"]): r["next_offset"] for r in rows}


#: Every move of a batch in one statement: a round trip per partition cost more than the
#: rows under load (each one waits for a core twice). Fresh partitions are inserted, the
#: others moved from their expected offset; the partitions it names are the ones moved.
_MOVE: Final = (
    "WITH m AS (SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], "
    "$6::bigint[], $7::timestamptz[]) AS m(topic, part, expected, next_offset, highwater, "
    "last_event_at)), "
    "inserted AS (INSERT INTO phasestream_consumer_positions (consumer, topic, partition, "
    "next_offset, highwater, last_event_at) SELECT $1, topic, part, next_offset, highwater, "
    "last_event_at FROM m WHERE expected IS NULL ON CONFLICT DO NOTHING "
    "RETURNING topic, partition), "
    # A batch without events (all dead-lettered) or without a fetched highwater keeps what
    # was stored; greatest() also keeps the newest time when events arrive out of order.
    "updated AS (UPDATE phasestream_consumer_positions AS p SET next_offset = m.next_offset, "
    "updated_at = now(), highwater = coalesce(m.highwater, p.highwater), "
    "last_event_at = greatest(p.last_event_at, m.last_event_at) FROM m "
    "WHERE p.consumer = $1 AND p.topic = m.topic AND p.partition = m.part "
    "AND p.next_offset = m.expected RETURNING p.topic, p.partition) "
    "SELECT topic, partition FROM inserted UNION ALL SELECT topic, partition FROM updated"
)


async def move_positions(
    conn: Connection, consumer: str, moves: Mapping[PartitionRef, PositionMove]
) -> None:
    """Move each partition from its expected offset; raise StalePositionError otherwise.

    Must run inside the transaction that writes the rows, so a failed move undoes them.
    """
    refs = list(moves)
    if not refs:
        return
    rows = await conn.fetch(
        _MOVE,
        consumer,
        [r.topic for r in refs],
        [r.partition for r in refs],
        [moves[r].expected for r in refs],
        [moves[r].next_offset for r in refs],
        [moves[r].highwater for r in refs],
        [moves[r].last_event_at for r in refs],
    )
    moved = {PartitionRef(r["topic"], r["partition"]) for r in rows}
    for ref in refs:
        if ref not in moved:
            raise StalePositionError(
                f"{consumer} on {ref.topic}[{ref.partition}] expected next offset "
                f"{moves[ref].expected}, but another consumer moved it"
            )


async def forget_topics(conn: Connection | asyncpg.Pool[Any], topics: Iterable[str]) -> int:
    """Drop every stored position on these topics (their log was lost: a fresh broker)."""
    status = await conn.execute(
        "DELETE FROM phasestream_consumer_positions WHERE topic = ANY($1::text[])", list(topics)
    )
    return int(status.split()[-1])
