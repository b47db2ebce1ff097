"""The pipeline storm's published events: waves of uniquely identified workflows of every
kind (happy, late, failing, stuck, reordered) and repeaters that fail in every wave, seeded.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from msgspec.structs import replace

from models.events import PhaseEvent
from models.phases import PHASES, PhaseStatus
from tests.faults.checker import Published

#: Short per-phase SLA thresholds (2.25-3.75 s): never-finishing phases fall due within
#: seconds, and an end that follows its start by milliseconds is never overdue.
THRESHOLDS = {phase: 2000 + 250 * phase for phase in PHASES}
USER = uuid.UUID("00000000-0000-4000-8000-0000000000f5")
#: Workflows failing in every wave: rollback + retry 1, rollback + retry 2, rollback +
#: gave_up, then loop_stopped (max 3 rollbacks per workflow).
REPEATERS = 16


@dataclass
class Scenario:
    """The events of every wave so far, and what they mean (see checker.Published)."""

    rng: random.Random
    events: list[PhaseEvent] = field(default_factory=list)
    never_finish: set[uuid.UUID] = field(default_factory=set)
    late: set[uuid.UUID] = field(default_factory=set)
    _clock: datetime = field(default_factory=lambda: datetime.now(UTC))

    def published(self) -> Published:
        return Published(list(self.events), frozenset(self.never_finish), frozenset(self.late))

    def wave(self, number: int, workflows: int) -> list[PhaseEvent]:
        """One wave: new workflows of every kind, and a failure of each repeater."""
        self._clock = datetime.now(UTC)  # event time: now, 1 ms apart
        wave: list[PhaseEvent] = []
        for index in range(workflows):
            wave += self._workflow(f"w{number}-{index:03d}")
        for index in range(REPEATERS):
            wave += self._phase(f"rep-{index:02d}", 2 + index % 6, PhaseStatus.FAILED)
        self.events += wave
        return wave

    def _workflow(self, workflow: str) -> list[PhaseEvent]:
        rng = self.rng
        kind = rng.choices(
            ("happy", "late", "fail", "stuck", "reordered"), weights=(30, 15, 25, 15, 15)
        )[0]
        last = rng.randint(1, 7)
        odd = rng.randint(1, last)  # the phase that is late or out of order
        events: list[PhaseEvent] = []
        for phase in range(1, last + 1):
            end: PhaseStatus | None = PhaseStatus.COMPLETED
            if phase == last and kind == "fail":
                end = PhaseStatus.FAILED
            elif phase == last and kind == "stuck":
                end = None
            events += self._phase(
                workflow,
                phase,
                end,
                late=(kind == "late" and phase == odd)
                or (kind in ("fail", "reordered") and phase == odd and rng.random() < 0.4),
                end_first=kind == "reordered" and phase == odd,
            )
        return events

    def _phase(
        self,
        workflow: str,
        phase: int,
        end: PhaseStatus | None,
        *,
        late: bool = False,
        end_first: bool = False,
    ) -> list[PhaseEvent]:
        started = self._event(workflow, phase, PhaseStatus.STARTED)
        if end is None:
            self.never_finish.add(started.event_id)
            return [started]
        threshold = THRESHOLDS[phase]
        duration = (
            threshold + self.rng.randint(1, 4000) if late else self.rng.randint(0, threshold)
        )  # exactly the threshold is on time
        if late:
            self.late.add(started.event_id)
        finished = replace(
            self._event(workflow, phase, end),
            duration_ms=duration,
            error_message="boom" if end is PhaseStatus.FAILED else None,
        )
        return [finished, started] if end_first else [started, finished]

    def _event(self, workflow: str, phase: int, status: PhaseStatus) -> PhaseEvent:
        self._clock += timedelta(milliseconds=1)
        return PhaseEvent(
            event_id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
            workflow_id=workflow,
            user_id=USER,
            phase_number=phase,
            status=status,
            timestamp=self._clock,
            previous_phase=phase - 1 if phase > 1 else None,
            metadata={"test": "pipeline-storm"},
        )
