"""Broker failover under the whole pipeline: a three-broker Apache Kafka loses leaders.

The cluster (phasestream/local_kafka.py) is three combined KRaft nodes; the test's topics
have replication factor 3 and min.insync.replicas=2, and every producer uses acks=all.
While the four consumers of the pipeline storm (audit, sla, metrics, rollback) consume a
steady stream, the broker leading the busiest partition of the phase-events topic is
killed with SIGKILL and started again, a few times, and then every broker is restarted
in turn (a rolling restart). Before each fault every partition is fully replicated again,
as an operator would wait.

Then the checker of the pipeline storm (tests/faults/checker.py, the consumers from
tests/faults/pipeline.py) must find nothing lost
and nothing duplicated in any sink, and every event whose publish the broker
acknowledged must be in the audit table. The test prints, per fault, how long the audit
and metrics consumers stalled: from the kill to the next batch they applied from the
partition the killed broker led.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import KafkaError

from models.events import PhaseEvent
from phasestream.consumers import rollback_policy
from phasestream.local_kafka import KafkaCluster, start_kafka
from phasestream.settings import Settings
from phasestream.wiring import create_topics
from streams.publisher import PhaseEventPublisher
from tests.durable.broker_tools import admin_client, end_offsets
from tests.faults.checker import check, expect
from tests.faults.pipeline import (
    SEED,
    pipeline_settings,
    quiet,
    set_thresholds,
    started,
    stop_all,
    workers,
)
from tests.faults.scenario import THRESHOLDS, Scenario
from tests.faults.workers import tails
from tests.waiting import eventually

# Six broker restarts: 4.3 min measured on a saturated machine (load 9-15 on 2 cores).
pytestmark = [pytest.mark.integration, pytest.mark.kafka_cluster, pytest.mark.timeout(600)]

BROKERS = 3
KILLS = 3
#: Waves of the steady stream: few workflows each, close together, so that every
#: partition has records arriving when its leader dies.
WORKFLOWS_PER_WAVE = 4
WAVE_PAUSE_S = (0.2, 0.4)
#: A failed send is sent again (whole wave) for this long before the test gives up.
RESEND_FOR_S = 120.0
#: The consumers whose stall is measured, with the table their batches land in.
WATCHED = ("audit", "metrics")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    with start_kafka(
        tmp_path / "kafka", brokers=BROKERS, extra_props={"min.insync.replicas": "2"}
    ) as started:
        yield started


@dataclass(frozen=True)
class Failover:
    what: str  # "kill -9 of broker 2 (leader of partition 4)"
    stalls: dict[str, float]  # consumer -> seconds from the kill to its next batch there

    def __str__(self) -> str:
        stalls = ", ".join(f"{name} {s:.2f} s" for name, s in self.stalls.items())
        return f"{self.what}: {stalls}"


class SteadyPublisher:
    """Publishes waves until told to stop, sending a wave again when the broker did not
    take it; remembers every event whose publish was acknowledged."""

    def __init__(self, settings: Settings, scenario: Scenario, rng: random.Random) -> None:
        self.settings, self.scenario, self.rng = settings, scenario, rng
        self.acknowledged: set[uuid.UUID] = set()
        self.failed_sends = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with PhaseEventPublisher(
            self.settings.bootstrap_servers,
            self.settings.phase_events_topic,
            idempotent=self.settings.kafka_idempotent_producer,
        ) as publisher:
            number = 0
            while not self.stop.is_set():
                wave = self.scenario.wave(number, WORKFLOWS_PER_WAVE)
                await self._send(publisher, wave)
                self.acknowledged.update(e.event_id for e in wave)
                number += 1
                await asyncio.sleep(self.rng.uniform(*WAVE_PAUSE_S))

    async def _send(self, publisher: PhaseEventPublisher, wave: list[PhaseEvent]) -> None:
        deadline = time.monotonic() + RESEND_FOR_S
        while True:
            try:
                await publisher.publish_many(wave)
                return
            except KafkaError:
                self.failed_sends += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


# --- the cluster's state --------------------------------------------------------------


async def partition_states(servers: str, topic: str) -> dict[int, tuple[int, int]]:
    """Each partition's (leader node, in-sync replica count); leader -1 while there is none."""
    async with admin_client(servers) as admin:
        described = await admin.describe_topics([topic])
    return {
        p["partition"]: (p["leader"], len(p["isr"]))
        for t in described
        if t["topic"] == topic
        for p in t["partitions"]
    }


async def fully_replicated(servers: str, topics: list[str], timeout_s: float = 90) -> None:
    """Until every partition of ``topics`` has a leader and all its replicas in sync."""

    async def lagging() -> dict[str, dict[int, tuple[int, int]]]:
        found = {}
        for topic in topics:
            try:
                states = await partition_states(servers, topic)
            except KafkaError as exc:
                return {f"{topic}: {exc!r}": {}}
            bad = {p: s for p, s in states.items() if s[0] < 0 or s[1] < BROKERS}
            if bad or not states:
                found[topic] = bad
        return found

    await eventually(
        lagging,
        lambda bad: not bad,
        timeout_s=timeout_s,
        what="every partition led and fully in sync",
    )


@dataclass(frozen=True)
class Watch:
    """The watched consumers' stored positions in one topic, asked on ``conn``."""

    conn: asyncpg.Connection[asyncpg.Record]
    groups: dict[str, str]  # consumer -> its group (the positions' owner)
    topic: str

    async def positions(self, partition: int) -> dict[str, int]:
        """Each consumer's stored position in ``partition`` (0 before its first batch)."""
        rows = await self.conn.fetch(
            "SELECT consumer, next_offset FROM phasestream_consumer_positions "
            "WHERE topic = $1 AND partition = $2",
            self.topic,
            partition,
        )
        stored = {r["consumer"]: r["next_offset"] for r in rows}
        return {name: stored.get(group, 0) for name, group in self.groups.items()}

    async def stalls(
        self, partition: int, began: float, before: dict[str, int]
    ) -> dict[str, float]:
        """Seconds from ``began`` until each consumer stored a position past ``before``."""
        stalls: dict[str, float] = {}
        deadline = time.monotonic() + 90
        while len(stalls) < len(self.groups):
            now = await self.positions(partition)
            for name, offset in now.items():
                if name not in stalls and offset > before[name]:
                    stalls[name] = time.monotonic() - began
            assert time.monotonic() < deadline, (
                f"no batch of partition {partition} applied within 90 s of the fault: "
                f"positions {before} -> {now}"
            )
            await asyncio.sleep(0.02)
        return stalls


@contextlib.asynccontextmanager
async def watching(db: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    conn = await asyncpg.connect(db)
    try:
        yield conn
    finally:
        await conn.close()


async def busiest_leader(servers: str, topic: str) -> tuple[int, int]:
    """The partition of ``topic`` with the most records, and the broker leading it."""
    ends = await end_offsets(servers, topic)
    partition = max(ends, key=lambda p: (ends[p], -p))
    leader, _ = (await partition_states(servers, topic))[partition]
    return partition, leader


async def fault(
    cluster: KafkaCluster, node_id: int, partition: int, watch: Watch, *, clean: bool
) -> dict[str, float]:
    """Take ``node_id`` down (kill -9, or a clean stop), measure the stalls on
    ``partition``, then start it again."""
    before = await watch.positions(partition)
    began = time.monotonic()
    await asyncio.to_thread(cluster.stop if clean else cluster.kill, node_id)
    stalls = await watch.stalls(partition, began, before)
    await asyncio.to_thread(cluster.start, node_id)
    return stalls


# --- the scenario ---------------------------------------------------------------------


async def test_leader_kills_and_a_rolling_restart_lose_and_duplicate_nothing(
    settings: Settings, cluster: KafkaCluster, tmp_path: Path
) -> None:
    print(f"seed {SEED}")
    configured = pipeline_settings(settings).model_copy(
        update={
            "kafka_bootstrap_servers": cluster.bootstrap_servers,
            "topic_replication_factor": BROKERS,
        }
    )
    servers, topic = configured.bootstrap_servers, configured.phase_events_topic
    topics = [
        topic,
        configured.dlq_topic,
        configured.sla_violations_topic,
        configured.rollback_commands_topic,
    ]
    await create_topics(configured)
    await fully_replicated(servers, topics)
    db = configured.database_url or ""
    await set_thresholds(db)
    scenario = Scenario(random.Random(f"{SEED}-data-failover"))
    rng = random.Random(f"{SEED}-failover")
    running = workers(configured, tmp_path)
    groups = {name: running[name].group for name in WATCHED}
    publisher = SteadyPublisher(configured, scenario, rng)
    failovers: list[Failover] = []
    publishing: asyncio.Task[None] | None = None
    try:
        await started(running, timeout_s=60)
        publishing = asyncio.create_task(publisher.run())
        async with watching(db) as conn:
            watch = Watch(conn, groups, topic)
            await asyncio.sleep(2)  # every partition has records and stored positions
            for number in range(KILLS):
                partition, leader = await busiest_leader(servers, topic)
                stalls = await fault(cluster, leader, partition, watch, clean=False)
                failovers.append(
                    Failover(
                        f"kill -9 #{number + 1} of broker {leader} (leader of partition "
                        f"{partition})",
                        stalls,
                    )
                )
                print(failovers[-1], flush=True)
                await fully_replicated(servers, topics)
                assert not publishing.done(), publishing
            for node in cluster.nodes:  # the rolling restart
                led = [
                    p
                    for p, (leader, _) in (await partition_states(servers, topic)).items()
                    if leader == node.node_id
                ]
                partition = led[0] if led else 0
                stalls = await fault(cluster, node.node_id, partition, watch, clean=True)
                failovers.append(
                    Failover(
                        f"rolling restart of broker {node.node_id} (partition {partition})", stalls
                    )
                )
                print(failovers[-1], flush=True)
                await fully_replicated(servers, topics)
        publisher.stop.set()
        await asyncio.wait_for(publishing, timeout=RESEND_FOR_S)
        expected = expect(
            scenario.published(),
            thresholds=THRESHOLDS,
            grace_ms=configured.sla_grace_ms,
            policy=rollback_policy(configured),
        )
        stuck = await quiet(configured, expected, running, timeout_s=90)
        context = (
            f"seed {SEED}, {len(scenario.events)} events published "
            f"({publisher.failed_sends} wave sends failed and were repeated); "
            f"failovers (stall from the fault to the next applied batch): "
            f"{'; '.join(map(str, failovers))}"
        )
        report = await check(configured, expected, context)
        landed = await audit_ids(db)
    finally:
        if publishing is not None and not publishing.done():
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
        codes = await stop_all(running)
    print(report)
    assert stuck is None, f"{stuck}\n{report}\n{tails(running.values())}"
    assert report.ok, f"{report}\n{tails(running.values())}"
    assert set(codes.values()) == {0}, f"{codes}\n{report.context}\n{tails(running.values())}"
    assert len(failovers) == KILLS + BROKERS, report.context
    # Every acknowledged publish is in the table (the publisher re-sent what failed, so
    # every published event was acknowledged in the end).
    assert publisher.acknowledged == {e.event_id for e in scenario.events}
    missing = publisher.acknowledged - landed
    assert not missing, f"{len(missing)} acknowledged events not in the audit table"


async def audit_ids(db: str) -> set[uuid.UUID]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch("SELECT id FROM workflow_phase_logs")
    finally:
        await conn.close()
    return {r["id"] for r in rows}
