"""`phasestream topics create` on a real broker: logs that are never compacted.

Every phasestream topic is keyed by workflow id. Compaction keeps only the newest record
per key, so a compacted phase-event topic would leave one event per workflow and a replay
(`phasestream replay`) would rebuild a projection with the history gone, without an error.
The dead-letter, violation and command topics are records of what happened, too. So the
topics the CLI creates must be `cleanup.policy=delete` logs, on the configured partitions
and replication, as the broker itself reports them (describe_configs, describe_topics).
The embedded broker stores topic configs without applying them, hence Apache Kafka only.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from phasestream.settings import Settings
from tests.conftest import settings_env
from tests.durable.broker_tools import topic_configs, topic_layout

pytestmark = [pytest.mark.integration, pytest.mark.durable_broker]


def cli_topics_create(settings: Settings) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "phasestream", "topics", "create"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


async def test_topics_create_makes_logs_that_are_never_compacted(settings: Settings) -> None:
    tag = settings.phase_events_topic.removesuffix(".phase-events")
    fresh = settings.model_copy(
        update={
            "phase_events_topic": f"{tag}-cli.phase-events",
            "dlq_topic": f"{tag}-cli.dlq",
            "sla_violations_topic": f"{tag}-cli.sla-violations",
            "rollback_commands_topic": f"{tag}-cli.rollback-commands",
            "topic_partitions": 3,
        }
    )
    topics = [
        fresh.phase_events_topic,
        fresh.dlq_topic,
        fresh.sla_violations_topic,
        fresh.rollback_commands_topic,
    ]
    cli_topics_create(fresh)
    cli_topics_create(fresh)  # idempotent: the second run changes nothing

    layout = await topic_layout(fresh.bootstrap_servers, topics)
    assert layout == {t: [fresh.topic_replication_factor] * fresh.topic_partitions for t in topics}
    configs = await topic_configs(fresh.bootstrap_servers, topics)
    assert set(configs) == set(topics)
    for topic, config in configs.items():
        assert "cleanup.policy" in config, f"{topic}: the broker reports no cleanup.policy"
        policies = set(config["cleanup.policy"].split(","))
        assert policies == {"delete"}, f"{topic}: cleanup.policy={config['cleanup.policy']}"
