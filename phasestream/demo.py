"""Realistic demo workflows: phases 1-7, some failures, some phases slower than their SLA."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from models.events import PhaseEvent
from models.phases import DEFAULT_SLA_MS, LAST_PHASE, PhaseStatus
from streams.publisher import PhaseEventPublisher

log = logging.getLogger(__name__)

FAILURE_RATE = 0.04
SLOW_RATE = 0.08
STEPS = ("validate", "provision", "build", "test", "deploy", "verify", "notify")
ERRORS = ("TimeoutError: upstream did not answer", "ValueError: manifest is invalid",
          "PermissionError: credentials expired", "ConnectionResetError: peer reset")


def _duration_ms(rng: random.Random, phase: int) -> int:
    sla = DEFAULT_SLA_MS[phase]
    if rng.random() < SLOW_RATE:
        return int(sla * rng.uniform(1.05, 2.0))
    return max(5, int(sla * rng.betavariate(2, 5)))


def workflow_events(rng: random.Random, end: datetime) -> list[PhaseEvent]:
    """One workflow's events, ending at ``end``: phases in order until one fails."""
    workflow_id = f"wf-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
    user_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    durations = [_duration_ms(rng, p) for p in range(1, LAST_PHASE + 1)]
    clock = end - timedelta(milliseconds=sum(durations))
    events = []
    for phase, duration in enumerate(durations, start=1):
        started = PhaseEvent(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4), workflow_id=workflow_id,
            user_id=user_id, phase_number=phase, status=PhaseStatus.STARTED, timestamp=clock,
            previous_phase=phase - 1 or None,
            metadata={"step": STEPS[phase - 1], "engine": "demo"})
        clock += timedelta(milliseconds=duration)
        failed = rng.random() < FAILURE_RATE
        events += [started, replace(
            started, event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            status=PhaseStatus.FAILED if failed else PhaseStatus.COMPLETED, timestamp=clock,
            duration_ms=duration, error_message=rng.choice(ERRORS) if failed else None)]
        if failed:
            break
    return events


async def run_demo(publisher: PhaseEventPublisher, workflows_per_s: float,
                   stop: asyncio.Event, seed: int | None = None) -> int:
    """Publish demo workflows at a steady, modest rate until ``stop`` is set."""
    rng = random.Random(seed)
    published = 0
    log.info("demo: publishing about %.0f workflows/s to %s", workflows_per_s, publisher.topic)
    while not stop.is_set():
        batch = [e for _ in range(max(1, round(workflows_per_s)))
                 for e in workflow_events(rng, datetime.now(UTC))]
        await publisher.publish_many(batch)
        published += len(batch)
        if published // len(batch) % 30 == 0:
            log.info("demo: %d events published", published)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
    return published
