"""Demo workflows in real time: phases start and end as the clock moves, so some are always
in flight; a few run past their SLA, some fail and are retried from the phase before
(as an engine acting on rollback commands would), and a few keep failing until the
commander gives up.

``workflow_plan`` is a plain function of a seeded random source and a start time; the
runner publishes each planned event when its time comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from msgspec.structs import replace

from models.events import PhaseEvent
from models.phases import DEFAULT_SLA_MS, FIRST_PHASE, LAST_PHASE, PhaseStatus
from streams.publisher import PhaseEventPublisher

log = logging.getLogger(__name__)

FAILURE_RATE: Final = 0.025
#: Workflows with one flaky phase (3-6) that fails most of the time: they roll back again
#: and again (chains) and, with retries on, end with the commander giving up.
FLAKY_RATE: Final = 0.03
FLAKY_FAILURE_RATE: Final = 0.7
SLOW_RATE: Final = 0.06
#: How many times the demo engine runs a workflow again from the phase before a failure.
MAX_RERUNS: Final = 4
STEPS: Final = ("validate", "provision", "build", "test", "deploy", "verify", "notify")
ERRORS: Final = (
    "TimeoutError: upstream did not answer",
    "ValueError: manifest is invalid",
    "PermissionError: credentials expired",
    "ConnectionResetError: peer reset",
)
#: Finished workflows published at start, spread over the last hour, so that every chart
#: has data in the first minute; the live ones follow in real time.
BACKFILL_WORKFLOWS: Final = 120
BACKFILL_SPAN: Final = timedelta(hours=1)
#: Planned events not yet published at most: bounds the demo's memory whatever the rate.
MAX_PENDING_EVENTS: Final = 50_000
PROGRESS_EVERY_S: Final = 30.0


def _duration_ms(rng: random.Random, phase: int) -> int:
    sla = DEFAULT_SLA_MS[phase]
    if rng.random() < SLOW_RATE:
        return int(sla * rng.uniform(1.1, 2.0))
    # Most phases end well within their SLA (mean ~22 % of it).
    return max(50, int(sla * rng.betavariate(2, 7)))


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


@dataclass(frozen=True, slots=True)
class _Run:
    """One workflow being planned: who, and how often its phases fail."""

    workflow_id: str
    user_id: uuid.UUID
    flaky_phase: int | None

    def failure_rate(self, phase: int) -> float:
        return FLAKY_FAILURE_RATE if phase == self.flaky_phase else FAILURE_RATE


def workflow_plan(rng: random.Random, start: datetime) -> list[PhaseEvent]:
    """One workflow's events from ``start``, in time order: phases 1-7 until one fails; a
    failed phase N > 1 is followed, a few seconds later, by phase N-1 started again."""
    flaky = rng.randint(3, 6) if rng.random() < FLAKY_RATE else None
    run = _Run(f"wf-{_uuid(rng).hex[:12]}", _uuid(rng), flaky)
    events: list[PhaseEvent] = []
    clock, phase, previous, reruns = start, FIRST_PHASE, None, 0
    while phase <= LAST_PHASE:
        started, ended = _phase_events(rng, run, phase, previous, clock)
        events += [started, ended]
        clock = ended.timestamp
        if ended.status is PhaseStatus.COMPLETED:
            phase, previous = phase + 1, phase
            continue
        if phase == FIRST_PHASE or reruns >= MAX_RERUNS:
            break
        # The engine re-queues the phase before, as the rollback command asks.
        reruns += 1
        clock += timedelta(seconds=rng.uniform(2, 8))
        phase, previous = phase - 1, phase
    return events


def _phase_events(
    rng: random.Random, run: _Run, phase: int, previous: int | None, at: datetime
) -> tuple[PhaseEvent, PhaseEvent]:
    duration = _duration_ms(rng, phase)
    started = PhaseEvent(
        event_id=_uuid(rng),
        workflow_id=run.workflow_id,
        user_id=run.user_id,
        phase_number=phase,
        status=PhaseStatus.STARTED,
        timestamp=at,
        previous_phase=previous,
        metadata={"step": STEPS[phase - 1], "engine": "demo"},
    )
    failed = rng.random() < run.failure_rate(phase)
    ended = replace(
        started,
        event_id=_uuid(rng),
        timestamp=at + timedelta(milliseconds=duration),
        status=PhaseStatus.FAILED if failed else PhaseStatus.COMPLETED,
        duration_ms=duration,
        error_message=rng.choice(ERRORS) if failed else None,
    )
    return started, ended


def workflow_events(rng: random.Random, end: datetime) -> list[PhaseEvent]:
    """One finished workflow whose last event is at ``end`` (for benchmarks and backfill)."""
    events = workflow_plan(rng, end)
    shift = events[-1].timestamp - end
    return [replace(e, timestamp=e.timestamp - shift) for e in events]


@dataclass(slots=True)
class DemoCounts:
    workflows: int = 0
    events: int = 0


class DemoClock:
    """The planned events not yet due, by time."""

    def __init__(self) -> None:
        self._due: list[tuple[datetime, int, PhaseEvent]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._due)

    def add(self, events: list[PhaseEvent]) -> None:
        for event in events:
            self._seq += 1
            heapq.heappush(self._due, (event.timestamp, self._seq, event))

    def pop_due(self, now: datetime) -> list[PhaseEvent]:
        due = []
        while self._due and self._due[0][0] <= now:
            due.append(heapq.heappop(self._due)[2])
        return due

    def in_flight(self) -> int:
        return len({event.workflow_id for _, _, event in self._due})


async def run_demo(
    publisher: PhaseEventPublisher,
    workflows_per_s: float,
    stop: asyncio.Event,
    seed: int | None = None,
    *,
    backfill: int = BACKFILL_WORKFLOWS,
    tick_s: float = 0.2,
) -> DemoCounts:
    """Start about ``workflows_per_s`` workflows a second and publish each event when its
    time comes, until ``stop`` is set; a finished history of ``backfill`` first."""
    rng, pending, counts = random.Random(seed), DemoClock(), DemoCounts()
    now = datetime.now(UTC)
    for _ in range(backfill):
        pending.add(workflow_events(rng, now - BACKFILL_SPAN * rng.random()))
    counts.workflows = backfill
    log.info(
        "demo: %d finished workflows of the last hour, then about %.1f new workflows/s "
        "in real time, to %s",
        backfill,
        workflows_per_s,
        publisher.topic,
    )
    owed, last_log = 0.0, time.monotonic()
    while not stop.is_set():
        now = datetime.now(UTC)
        owed += workflows_per_s * tick_s
        while owed >= 1 and len(pending) < MAX_PENDING_EVENTS:
            owed -= 1
            counts.workflows += 1
            pending.add(workflow_plan(rng, now))
        due = pending.pop_due(now)
        if due:
            await publisher.publish_many(due)
            counts.events += len(due)
        if time.monotonic() - last_log >= PROGRESS_EVERY_S:
            last_log = time.monotonic()
            log.info(
                "demo: %d workflows started, %d in flight, %d events published",
                counts.workflows,
                pending.in_flight(),
                counts.events,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick_s)
    return counts
