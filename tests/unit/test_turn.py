"""The Turn that orders two overlapping writes: what the write after one waits for."""

from __future__ import annotations

import asyncio

from models.ports import Turn


async def test_the_write_after_waits_for_the_claim_then_the_commit() -> None:
    earlier = Turn()
    later = Turn(earlier)
    claimed = asyncio.create_task(earlier.wait_claimed())
    committed = asyncio.create_task(earlier.wait_committed())
    await asyncio.sleep(0)
    assert not claimed.done()
    assert not committed.done()
    earlier.claimed()
    assert await claimed is True
    await asyncio.sleep(0)
    assert not committed.done()
    earlier.settle(True)
    assert await committed is True
    assert later.after is earlier


async def test_a_failure_releases_both_waits_and_the_first_settle_counts() -> None:
    earlier = Turn(Turn())
    earlier.settle(False)  # a transaction failed, before its claim
    earlier.settle(True)  # its retry committed: the write after has given up already
    assert await earlier.wait_claimed() is False
    assert await earlier.wait_committed() is False
    assert earlier.after is not None  # its retries still wait for the write before it


async def test_a_committed_turn_lets_go_of_the_one_before() -> None:
    first = Turn()
    second = Turn(first)
    second.settle(True)
    assert second.after is None  # the chain of turns never grows past the writes in flight
