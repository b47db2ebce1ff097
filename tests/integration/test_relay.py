"""The outbox relay puts each item on its topic exactly once: after a send interrupted
between the broker's acknowledgement and forgetting the item, and with several relays."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from models.ports import OutboxItem
from phasestream.kafka_cluster import kafka_cluster
from phasestream.settings import Settings
from projections.database import open_pool
from projections.outbox import outbox
from streams.kafka import producer_config
from streams.relay import ID_HEADER, OutboxRelay
from tests.topics import read_to_highwater
from tests.waiting import count_rows

pytestmark = pytest.mark.integration


class Crash(Exception):
    """Stands for the process dying at the injected point."""


class CrashingRelay(OutboxRelay):
    """Dies after sending the first ``sent`` items of a claim, before forgetting any."""

    def __init__(self, *args: Any, sent: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sent = sent

    async def _deliver(
        self, items: Sequence[OutboxItem], targets: Sequence[TopicPartition]
    ) -> None:
        await super()._deliver(items[: self._sent], targets[: self._sent])
        raise Crash


async def put_items(db: str, topic: str, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    conn = await asyncpg.connect(db)
    try:
        await conn.executemany(
            "INSERT INTO phasestream_outbox (id, topic, key, payload) VALUES ($1, $2, $3, $4)",
            [(i, topic, f"wf-{n % 17}".encode(), b'{"n": %d}' % n) for n, i in enumerate(ids)],
        )
    finally:
        await conn.close()
    return ids


async def published(settings: Settings, topic: str, at_least: int = 0) -> Counter[str]:
    records = await read_to_highwater(settings, topic, at_least=at_least)
    return Counter(dict(r.headers)[ID_HEADER].decode() for r in records)


async def relay_until_empty(
    settings: Settings, relay_type: type[OutboxRelay] = OutboxRelay, **options: Any
) -> OutboxRelay:
    db = settings.database_url or ""
    pool = await open_pool(db)
    producer = AIOKafkaProducer(
        **producer_config(kafka_cluster(settings), client_id="relay-test", linger_ms=5)
    )
    await producer.start()
    try:
        relay = relay_type(
            outbox(pool),
            producer,
            settings.rollback_commands_topic,
            cluster=kafka_cluster(settings),
            interval_s=0.05,
            batch=options.pop("batch", 100),
            **options,
        )
        while await relay.relay_once():
            pass
        return relay
    finally:
        await producer.stop()
        await pool.close()


async def test_every_item_once_with_its_id_on_its_keys_partition(settings: Settings) -> None:
    topic = settings.rollback_commands_topic
    ids = await put_items(settings.database_url or "", topic, 250)
    relay = await relay_until_empty(settings)
    assert relay.published == 250
    records = await read_to_highwater(settings, topic)
    assert Counter(dict(r.headers)[ID_HEADER].decode() for r in records) == Counter(
        str(i) for i in ids
    )
    partitions = list(range(settings.topic_partitions))
    for record in records:  # where Kafka's default partitioner puts the key
        assert record.partition == DefaultPartitioner()(record.key, partitions, partitions)
    db = settings.database_url or ""
    assert await count_rows(db, "SELECT count(*) FROM phasestream_outbox") == 0
    assert await count_rows(db, "SELECT count(*) FROM phasestream_outbox_attempts") == 0


@pytest.mark.parametrize("sent", [0, 37, 100])
async def test_a_send_interrupted_before_forgetting_is_not_repeated(
    settings: Settings, sent: int
) -> None:
    topic = settings.rollback_commands_topic
    db = settings.database_url or ""
    ids = await put_items(db, topic, 100)
    with pytest.raises(Crash):
        await relay_until_empty(settings, CrashingRelay, sent=sent)
    # The claim rolled back, the attempts stayed, and `sent` items are on the topic.
    assert await count_rows(db, "SELECT count(*) FROM phasestream_outbox") == 100
    assert await count_rows(db, "SELECT count(*) FROM phasestream_outbox_attempts") == 100
    assert sum((await published(settings, topic)).values()) == sent

    relay = await relay_until_empty(settings)
    assert (relay.published, relay.found_published) == (100 - sent, sent)
    assert await published(settings, topic) == Counter(str(i) for i in ids)
    assert await count_rows(db, "SELECT count(*) FROM phasestream_outbox_attempts") == 0


async def test_relays_running_together_never_send_an_item_twice(settings: Settings) -> None:
    topic = settings.rollback_commands_topic
    ids = await put_items(settings.database_url or "", topic, 3000)
    relays = await asyncio.gather(*(relay_until_empty(settings, batch=50) for _ in range(3)))
    assert sum(r.published for r in relays) == 3000
    assert all(r.published > 0 for r in relays)  # they really shared the work
    assert await published(settings, topic, at_least=3000) == Counter(str(i) for i in ids)
