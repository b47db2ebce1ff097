"""A worker told to stop while the broker holds its group join stops anyway, exit code 0.

While a join is in flight aiokafka's getmany waits for the assignment whatever its timeout,
and its stop() waits for the join to end (up to its 40 s request timeout): both outlast
Worker.stop's 30 s before the fix. On Apache Kafka a member that does not answer the
rebalance (SIGSTOPped, with a 60 s rebalance timeout) holds the others' JoinGroup; Tansu
holds even a lone member's first join for its rebalance timeout.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher
from tests.conftest import settings_env
from tests.events import many_events
from tests.faults.workers import Worker, tails
from tests.waiting import eventually

pytestmark = pytest.mark.integration

#: The holder's session and so its rebalance timeout: longer than Worker.stop's 30 s wait.
HOLDER_SESSION_MS = 60_000


async def group_state(settings: Settings) -> str:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id="phasestream-tests"
    )
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([settings.audit_consumer_group])
    finally:
        await admin.close()
    _, _, state, *_ = described[0].groups[0]
    return str(state)


@pytest.mark.durable_broker  # Tansu's DescribeGroups never shows the rebalance
async def test_sigterm_while_the_group_join_is_held_stops_the_worker(
    settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(settings)
    holder = Worker(
        "audit",
        settings.audit_consumer_group,
        env | {"PHASESTREAM_CONSUMER_SESSION_TIMEOUT_MS": str(HOLDER_SESSION_MS)},
        tmp_path,
        label="holder",
    )
    joiner = Worker("audit", settings.audit_consumer_group, env, tmp_path, label="joiner")
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(many_events(100, workflows=10))  # assignment shows by lag
    holder.start()
    try:
        assert await holder.until_assigned(timeout_s=30), holder.tail()
        assert holder.process is not None
        holder.process.send_signal(signal.SIGSTOP)  # it will not rejoin: the join is held
        joiner.start()
        await joiner.until_ready()
        await eventually(
            lambda: group_state(settings),
            lambda s: s == "PreparingRebalance",
            timeout_s=30,
            what="the joiner's JoinGroup held by the broker",
        )
        code = await joiner.stop()
        assert code == 0, tails([joiner])
        assert "stopped before it was assigned" in joiner.logs[-1].read_text(), joiner.tail()
    finally:
        if holder.process is not None and holder.alive():
            holder.process.send_signal(signal.SIGCONT)
        codes = [await w.stop() for w in (holder, joiner)]
    assert codes[0] == 0, tails([holder])


@pytest.mark.embedded_broker
async def test_sigterm_while_tansu_holds_the_first_join_stops_the_worker(
    settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(settings) | {
        "PHASESTREAM_CONSUMER_SESSION_TIMEOUT_MS": str(HOLDER_SESSION_MS)
    }
    joiner = Worker("audit", settings.audit_consumer_group, env, tmp_path, label="lone")
    joiner.start()
    try:
        await joiner.until_ready()
        # drive() logs this once the consumer is started and subscribed: its join is sent.
        await eventually(lambda: consuming(joiner), bool, timeout_s=30, what="consuming")
        code = await joiner.stop()
        assert code == 0, tails([joiner])
        assert "stopped before it was assigned" in joiner.logs[-1].read_text(), joiner.tail()
    finally:
        await joiner.stop()


async def consuming(worker: Worker) -> bool:
    return ": consuming " in worker.log()
