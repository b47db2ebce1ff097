"""Creating the topics phasestream uses, idempotently."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.kafka import KafkaCluster

log = logging.getLogger(__name__)

TOPIC_EXISTS_CODE = TopicAlreadyExistsError.errno
TOPIC_CONFIGS = {"cleanup.policy": "delete"}


async def partition_numbers(
    cluster: KafkaCluster, topic: str, *, client_id: str = "phasestream-admin"
) -> list[int]:
    """The topic's partitions, in order; empty when the broker knows no such topic.

    Asked by name (a Metadata request for the topic): a consumer's cluster view after
    ``topics()`` holds no partitions on Apache Kafka, which answers the client's empty
    bootstrap request with no topics (the local broker answered with all of them).
    """
    admin = AIOKafkaAdminClient(**cluster.client_kwargs(client_id))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        p["partition"]
        for t in described
        if t["topic"] == topic and t["error_code"] == 0
        for p in t["partitions"]
    )


async def ensure_topics(
    cluster: KafkaCluster, names: Iterable[str], *, partitions: int, replication_factor: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; return the names that were created."""
    admin = AIOKafkaAdminClient(**cluster.client_kwargs("phasestream-admin"))
    await admin.start()
    try:
        # Explicitly delete, never compact: keyed by workflow, a compacted topic would keep
        # one event per workflow, and a replay would lose history without a word.
        wanted = [
            NewTopic(n, partitions, replication_factor, topic_configs=TOPIC_CONFIGS) for n in names
        ]
        response = await admin.create_topics(wanted)
        created = []
        for name, code, message in response.topic_errors:
            if code == 0:
                created.append(name)
                log.info("created topic %s with %d partitions", name, partitions)
            elif code == TOPIC_EXISTS_CODE:
                log.info("topic %s exists already", name)
            else:
                raise RuntimeError(f"could not create topic {name}: error {code}: {message}")
        return created
    finally:
        await admin.close()
