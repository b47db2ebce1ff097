"""A downstream engine in its own process, for the kill -9 tests of the subscriber SDK.

``python -m tests.subscriber_worker BROKER TOPIC GROUP DLQ DATABASE_URL postgres|none``:
handles rollback commands by inserting their ids into ``engine_effects`` (no key, so a
second effect of one command shows as a second row): through the Postgres store's
transaction with ``postgres``, in autocommit with ``none`` (plain at-least-once).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg

from projections.handled_ids import PostgresHandledIds
from streams.backoff import Backoff
from streams.subscribe import COMMANDS, Delivery, NoDedup, Subscriber

EFFECT = "INSERT INTO engine_effects (command_id, pid) VALUES ($1, $2)"


async def main(broker: str, topic: str, group: str, dlq: str, *, url: str, mode: str) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    pid = asyncio.get_running_loop().time()  # distinct per process run, for diagnostics
    store: Any = PostgresHandledIds(pool) if mode == "postgres" else NoDedup()
    if mode == "postgres":
        await store.create_table()

    async def handle(delivery: Delivery[Any, Any]) -> None:
        conn = delivery.context if mode == "postgres" else pool
        await conn.execute(EFFECT, delivery.value.command_id, str(pid))
        await asyncio.sleep(0.002)  # an engine's work: spreads the stream over seconds

    async with Subscriber(
        broker,
        topic,
        group_id=group,
        contract=COMMANDS,
        handled=store,
        dlq_topic=dlq,
        session_timeout_ms=2000,
        max_wait_ms=50,
        max_records=50,
        backoff=Backoff(0.05, 0.5),
    ) as subscriber:
        print("subscriber started", flush=True)
        await subscriber.run(handle)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5], url=sys.argv[5], mode=sys.argv[6]))
