"""The pipeline storm's faults: what a fault would hit right now, a kill -9 storm of one
worker, the rollback commander's relay pinned between sending and forgetting, and every
Postgres connection cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from phasestream.settings import Settings
from tests.faults.scenario import Scenario
from tests.faults.workers import Worker

Risk = Callable[[], Awaitable[dict[str, int]]]


def at_risk(
    conn: asyncpg.Connection[asyncpg.Record], settings: Settings, scenario: Scenario
) -> dict[str, Risk]:
    """Per consumer, what a fault would hit right now, asked on ``conn`` (one at a time):
    a kill is aimed at a moment where every quantity is > 0 (the rollback commander's:
    retries scheduled while commands wait in the outbox, so that the kill may land between
    a send and its removal)."""
    pending = (
        "SELECT count(*) FROM sla_open_phases AS o JOIN workflow_phase_sla_thresholds "
        "AS t USING (phase_number) WHERE NOT o.overdue_reported AND o.started_at + "
        "(t.threshold_ms + $1) * interval '1 ms' > now()"
    )
    scheduled = "SELECT count(*) FROM rollback_commands WHERE kind = 'retry' AND issued_at IS NULL"

    async def count(sql: str, *args: object) -> int:
        value: int = await conn.fetchval(sql, *args)
        return value

    async def backlog(sql: str) -> dict[str, int]:
        return {"backlog": len(scenario.events) - await count(sql)}

    async def deadlines() -> dict[str, int]:
        return {"deadlines": await count(pending, settings.sla_grace_ms)}

    async def retries() -> dict[str, int]:
        return {
            "retries": await count(scheduled),
            "outbox": await count("SELECT count(*) FROM phasestream_outbox"),
        }

    return {
        "audit": lambda: backlog(
            "SELECT count(*) FROM workflow_phase_logs WHERE status <> 'rolled_back'"
        ),
        "metrics": lambda: backlog(
            "SELECT count(*) FROM metrics_data "
            "WHERE metric_name <> 'workflow_phase_rolled_back_total'"
        ),
        "sla": deadlines,
        "rollback": retries,
    }


@dataclass(frozen=True)
class Kill:
    consumer: str
    number: int
    exposed: dict[str, int]  # what was at risk at the kill

    def __str__(self) -> str:
        return f"{self.consumer}#{self.number}{self.exposed}"


Pin = Callable[[], contextlib.AbstractAsyncContextManager[bool]]


async def kill_storm(
    worker: Worker,
    risk: Risk,
    rng: random.Random,
    kills: int,
    record: list[Kill],
    *,
    pin: Pin | None = None,
) -> None:
    """Kill -9 ``worker`` ``kills`` times and restart it: each kill at a random moment once
    it consumes, preferably while it has work at risk; with ``pin``, every other kill
    instead while ``pin`` holds it at a chosen point."""
    plan = [
        (rng.uniform(0.2, 2.0), rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.5)) for _ in range(kills)
    ]
    for number, (delay, jitter, pause) in enumerate(plan):
        await worker.until_assigned(timeout_s=15)  # else killed while joining: a kill too
        await asyncio.sleep(delay)
        if pin is not None and number % 2:
            async with pin() as pinned:
                exposed = await risk() | {"pinned": int(pinned)}
                code = await worker.kill()
        else:
            for _ in range(400):  # up to ~4 s for work to be at risk
                if all((await risk()).values()):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(jitter)
            exposed = await risk()
            code = await worker.kill()
        assert code == -signal.SIGKILL, worker.tail()
        record.append(Kill(worker.name, number, exposed))
        await asyncio.sleep(pause)
        worker.start()
    # Ready before the test's SIGTERM: a SIGTERM while it still imports ends it by the
    # signal's default action (exit -15), not by its handler.
    await worker.until_ready()


@contextlib.asynccontextmanager
async def relay_pinned(
    conn: asyncpg.Connection[asyncpg.Record], timeout_s: float = 6.0
) -> AsyncIterator[bool]:
    """Pin the rollback commander's outbox relay where it has sent items and not yet
    forgotten them: hold share locks on the outbox's rows (and on their send-attempt rows,
    where the relay records those), taken again every few milliseconds, until the relay
    blocks on one (forgetting items, or recording an attempt). Yields whether it did within
    ``timeout_s``. When the block ends, after the caller's kill, the blocked statements'
    backends are terminated, then the locks released: a backend waiting for a lock does
    not notice that its client died, and would otherwise complete the statement."""
    attempts = await conn.fetchval("SELECT to_regclass('phasestream_outbox_attempts') IS NOT NULL")
    locks = ["SELECT count(*) FROM (SELECT 1 FROM phasestream_outbox FOR SHARE SKIP LOCKED) AS o"]
    if attempts:
        locks.append(
            "SELECT count(*) FROM (SELECT 1 FROM phasestream_outbox_attempts WHERE "
            "id IN (SELECT id FROM phasestream_outbox) FOR SHARE SKIP LOCKED) AS a"
        )
    blocked = "SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
    deadline = time.monotonic() + timeout_s
    transaction = conn.transaction()
    await transaction.start()
    pinned = False
    try:
        while True:
            for lock in locks:
                await conn.fetchval(lock)
            await asyncio.sleep(0.02)
            pinned = bool(await conn.fetch(blocked))
            if pinned or time.monotonic() > deadline:
                break
            await transaction.rollback()
            transaction = conn.transaction()
            await transaction.start()
        yield pinned
    finally:
        if pinned:
            # With a timeout, pg_terminate_backend waits until the backend is gone.
            await conn.fetchval(
                f"SELECT count(pg_terminate_backend(pid, 5000)) FROM ({blocked}) AS b"
            )
        await transaction.rollback()


@dataclass(frozen=True)
class Cut:
    terminated: int  # backends terminated
    busy: int  # of which in a query or a transaction
    exposed: dict[str, int]  # SLA deadlines pending, retries scheduled

    def __str__(self) -> str:
        return f"{self.terminated}({self.busy} busy){self.exposed}"


async def cut_connections(
    admin: asyncpg.Connection[asyncpg.Record], database: str, risks: dict[str, Risk]
) -> Cut:
    """Terminate every other backend connected to ``database``."""
    exposed = await risks["sla"]() | await risks["rollback"]()
    row = await admin.fetchrow(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS terminated, "
        "count(*) FILTER (WHERE state <> 'idle') AS busy FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    assert row is not None
    return Cut(row["terminated"], row["busy"], exposed)
