"""Waiting for what the pipeline writes: poll a probe until a condition holds (with a
deadline, never a fixed sleep), and count or read rows in Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    timeout_s: float = 30.0,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``done`` holds for its value; fail with the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s:.0f} s; last value: {value!r}")
        await asyncio.sleep(0.1)


async def count_rows(
    db: str, sql: str = "SELECT count(*) FROM workflow_phase_logs", *args: Any
) -> int:
    conn = await asyncpg.connect(db)
    try:
        value: int = await conn.fetchval(sql, *args)
        return value
    finally:
        await conn.close()


async def fetch_rows(db: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()
