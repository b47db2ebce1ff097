"""Stopping a Kafka consumer within a bound, whatever its group is doing.

aiokafka's stop() first waits for its coordination task, which may sit in a JoinGroup that the
broker holds until every member has rejoined (up to the rebalance timeout) or the client's
request timeout (40 s) ends it. A process told to stop must not wait for that: past the bound
the stop is cancelled (which cancels the join in flight) and the broker ends the membership
when its session times out, as after a crash; positions live in the sink, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)

#: A clean stop (leave the group, close connections) takes milliseconds; only a join held by
#: the broker takes longer.
STOP_TIMEOUT_S = 3.0


async def stop_consumer(consumer: AIOKafkaConsumer, name: str,
                        timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop ``consumer`` (consumer group ``name``), abandoning a group join after ``timeout_s``."""
    assigned = bool(consumer.assignment())
    try:
        await asyncio.wait_for(consumer.stop(), timeout_s)
    except TimeoutError:
        state = "while its group was rebalancing" if assigned else \
            "before it was assigned partitions"
        log.info("%s: stopped %s (the group join was cut short after %.0f s; the broker "
                 "drops this member when its session times out)", name, state, timeout_s)
