"""The whole pipeline as processes, for the pipeline storm and the Kafka failover test: its
settings, its four consumers (audit, sla, metrics, rollback) on the shared worker harness,
and how a test knows the pipeline is quiet and stops it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

import asyncpg

from phasestream.settings import Settings
from tests.conftest import settings_env
from tests.faults.checker import AUDIT, COMMANDS, METRICS, VIOLATIONS, Expected
from tests.faults.scenario import THRESHOLDS
from tests.faults.workers import Worker
from tests.waiting import count_rows, eventually

SEED = int(os.environ.get("PHASESTREAM_FAULT_SEED", "20261206"))
CONSUMERS = ("audit", "sla", "metrics", "rollback")


def pipeline_settings(settings: Settings) -> Settings:
    """Retries on a short, unjittered schedule (due 2 s, then 4 s after the rollback), so
    that scheduled retries exist whenever a kill or a cut lands; small batches, so that
    faults land mid-batch."""
    return settings.model_copy(
        update={
            "retry_enabled": True,
            "retry_interval_ms": 2000,
            "retry_backoff_rate": 2.0,
            "retry_max_attempts": 2,
            "retry_jitter": "none",
            "rollback_max_per_workflow": 3,
            "batch_max_records": 100,
        }
    )


def workers(settings: Settings, logs_dir: Path) -> dict[str, Worker]:
    env = settings_env(settings)
    groups = {
        "audit": settings.audit_consumer_group,
        "sla": settings.sla_consumer_group,
        "metrics": settings.metrics_consumer_group,
        "rollback": settings.rollback_consumer_group,
    }
    return {name: Worker(name, groups[name], env, logs_dir) for name in CONSUMERS}


async def started(running: dict[str, Worker], timeout_s: float) -> None:
    """Start every consumer and wait until each reads partitions (started together, so
    that their imports overlap)."""
    for worker in running.values():
        worker.start()
    for worker in running.values():
        assert await worker.until_assigned(timeout_s=timeout_s), worker.tail()


def interrupted_writes(running: Iterable[Worker]) -> int:
    """Batches whose write a fault interrupted, as the consumers' logs tell."""
    return sum(
        log.read_text(errors="replace").count(": writing a batch failed")
        for worker in running
        for log in worker.logs
    )


async def set_thresholds(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        await conn.executemany(
            "UPDATE workflow_phase_sla_thresholds SET threshold_ms = $2 WHERE phase_number = $1",
            list(THRESHOLDS.items()),
        )
    finally:
        await conn.close()


LANDED = {
    AUDIT: "SELECT count(*) FROM workflow_phase_logs",
    METRICS: "SELECT count(*) FROM metrics_data",
    VIOLATIONS: "SELECT count(*) FROM workflow_phase_sla_violation_events",
    COMMANDS: "SELECT count(*) FROM rollback_commands WHERE issued_at IS NOT NULL",
}
IN_FLIGHT = (
    "SELECT (SELECT count(*) FROM rollback_commands WHERE issued_at IS NULL) + "
    "(SELECT count(*) FROM phasestream_outbox) + "
    "(SELECT count(*) FROM sla_violation_outbox)"
)


async def quiet(
    settings: Settings, expected: Expected, running: dict[str, Worker], timeout_s: float
) -> str | None:
    """Wait until every sink holds at least what is expected and nothing is in flight (no
    retry waiting, outboxes empty); None, or what was still missing at the timeout."""
    db = settings.database_url or ""

    async def shortfall() -> dict[str, int]:
        for worker in running.values():
            assert worker.alive(), f"{worker.name} died:\n{worker.tail()}"
        missing = {
            sink: expected.count(sink) - await count_rows(db, sql) for sink, sql in LANDED.items()
        }
        missing["in flight"] = await count_rows(db, IN_FLIGHT)
        return {what: n for what, n in missing.items() if n > 0}

    try:
        await eventually(
            shortfall, lambda missing: not missing, timeout_s=timeout_s, what="a quiet pipeline"
        )
    except AssertionError as exc:
        return str(exc)
    await asyncio.sleep(1.0)  # a late duplicate would land now
    return None


async def stop_all(running: dict[str, Worker]) -> dict[str, int | None]:
    codes = await asyncio.gather(*(w.stop() for w in running.values()))
    return dict(zip(running, codes, strict=True))
