"""Consumer positions stored beside the rows they describe, moved compare-and-set."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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


async def move_positions(
    conn: Connection, consumer: str, moves: Mapping[PartitionRef, PositionMove]
) -> None:
    """Move each partition from its expected offset; raise StalePositionError otherwise.

    Must run inside the transaction that writes the rows, so a failed move undoes them.
    """
    for ref, move in moves.items():
        if move.expected is None:
            status = await conn.execute(
                "INSERT INTO phasestream_consumer_positions (consumer, topic, partition, "
                "next_offset, highwater, last_event_at) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT DO NOTHING",
                consumer,
                ref.topic,
                ref.partition,
                move.next_offset,
                move.highwater,
                move.last_event_at,
            )
        else:
            # A batch without events (all dead-lettered) or without a fetched highwater
            # keeps what was stored; greatest() also keeps the newest time when events
            # arrive out of order (it ignores nulls).
            status = await conn.execute(
                "UPDATE phasestream_consumer_positions SET next_offset = $5, updated_at = now(), "
                "highwater = coalesce($6, highwater), "
                "last_event_at = greatest(last_event_at, $7) "
                "WHERE consumer = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
                consumer,
                ref.topic,
                ref.partition,
                move.expected,
                move.next_offset,
                move.highwater,
                move.last_event_at,
            )
        if not status.endswith(" 1"):
            raise StalePositionError(
                f"{consumer} on {ref.topic}[{ref.partition}] expected next offset "
                f"{move.expected}, but another consumer moved it"
            )


async def forget_topics(conn: Connection | asyncpg.Pool[Any], topics: Iterable[str]) -> int:
    """Drop every stored position on these topics (their log was lost: a fresh broker)."""
    status = await conn.execute(
        "DELETE FROM phasestream_consumer_positions WHERE topic = ANY($1::text[])", list(topics)
    )
    return int(status.split()[-1])
