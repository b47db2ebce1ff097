"""Stopping a Kafka consumer promptly, whatever its group is doing.

While its group rebalances, aiokafka's getmany waits for the new assignment whatever its
timeout, and a join the broker holds can last the rebalance timeout: a fetch gives way to a
stop. Then aiokafka's stop() waits for its coordination task, which may sit in that held
JoinGroup until every member has rejoined or the client's request timeout (40 s) ends it.
A process told to stop must not wait for that: past the bound the stop is cancelled (which
cancels the join in flight) and the broker drops the member when its session times out, as
after a crash; positions live in the sink, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

#: A clean stop (leave the group, close connections) takes milliseconds; only a join held by
#: the broker takes longer.
STOP_TIMEOUT_S = 3.0


async def stop_consumer(
    consumer: AIOKafkaConsumer, name: str, timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """Stop ``consumer`` (consumer group ``name``), abandoning a group join after ``timeout_s``."""
    assigned = bool(consumer.assignment())
    try:
        await asyncio.wait_for(consumer.stop(), timeout_s)
    except TimeoutError:
        state = (
            "while its group was rebalancing" if assigned else "before it was assigned partitions"
        )
        log.info(
            "%s: stopped %s (the group join was cut short after %.0f s; the broker "
            "drops this member when its session times out)",
            name,
            state,
            timeout_s,
        )


async def getmany_or_stop(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, *, timeout_ms: int, max_records: int
) -> dict[TopicPartition, list[Any]]:
    """``consumer.getmany(...)``, or nothing as soon as ``stop`` is set."""
    fetching = asyncio.ensure_future(
        consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    )
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((fetching, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not fetching.done():
        fetching.cancel()  # getmany drains records only once its wait ends: none are lost
        with contextlib.suppress(asyncio.CancelledError):
            await fetching
        return {}
    fetched: dict[TopicPartition, list[Any]] = fetching.result()
    return fetched
