"""Which dead letters were redriven already: ``dlq_redrives``, one row per letter sent back."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from models.redrive import LetterPlace
from projections.database import Connection


async def redriven(conn: Connection, dlq_topic: str) -> set[LetterPlace]:
    rows = await conn.fetch(
        "SELECT dlq_partition, dlq_offset FROM dlq_redrives WHERE dlq_topic = $1", dlq_topic
    )
    return {(row["dlq_partition"], row["dlq_offset"]) for row in rows}


async def record_redriven(
    conn: Connection, dlq_topic: str, sent: Iterable[tuple[LetterPlace, uuid.UUID]]
) -> None:
    """Record letters the broker acknowledged; a letter recorded before stays as it was."""
    await conn.executemany(
        "INSERT INTO dlq_redrives (dlq_topic, dlq_partition, dlq_offset, event_id) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        [(dlq_topic, partition, offset, event_id) for (partition, offset), event_id in sent],
    )
