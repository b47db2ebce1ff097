"""Prometheus metrics, created once per registry, in base units, with bounded labels.

Labels are phase (phase_1 … phase_7), status, kind, state (ok, at_risk, overdue), consumer
and partition: all bounded.
user_id and workflow_id never become labels; they travel as OpenMetrics exemplars, which
Prometheus limits to 128 characters of label names and values together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from models.commands import CommandKind, RollbackCommand
from models.events import PhaseEvent
from models.metric_rows import phase_label
from models.phases import DEFAULT_SLA_MS, PHASES, PhaseStatus
from models.ports import PartitionRef
from models.running import PhaseLoad, RunningState, overdue_by_ms
from models.sla.violation import SlaViolation

#: Seconds; every default SLA threshold (10, 15, 30, 60, 90, 120 s) is a bucket boundary.
DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 90, 120, 180, 300, 600)
EXEMPLAR_LIMIT: Final = 128
BATCH_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Seconds past the deadline: from "just missed" to "stuck for an hour".
PAST_DEADLINE_BUCKETS: Final = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def exemplar(workflow_id: str, user_id: str) -> dict[str, str]:
    """workflow_id shortened so names and values stay within the 128-character limit."""
    room = EXEMPLAR_LIMIT - len("workflow_id") - len("user_id") - len(user_id)
    return {"workflow_id": workflow_id[:room], "user_id": user_id}


class PhaseMetrics:
    """What the phase events say, for Prometheus."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "workflow_phase_started", "Phase executions started.", ["phase"], registry=registry
        )
        self.completed = Histogram(
            "workflow_phase_completed_duration_seconds",
            "Durations of completed phases.",
            ["phase"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.failed = Histogram(
            "workflow_phase_failed_duration_seconds",
            "Durations of failed phases.",
            ["phase"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.rolled_back = Counter(
            "workflow_phase_rolled_back", "Phases rolled back.", ["phase"], registry=registry
        )
        self.in_flight = Gauge(
            "workflow_phase_in_flight",
            "Phases started and not finished (the SLA monitor's state).",
            ["phase"],
            registry=registry,
        )
        self.threshold = Gauge(
            "workflow_phase_sla_threshold_seconds",
            "The SLA threshold of each phase.",
            ["phase"],
            registry=registry,
        )
        self.past_deadline = Histogram(
            "workflow_phase_ended_past_deadline_seconds",
            "How far past the SLA deadline late phases were when they finally ended.",
            ["phase"],
            buckets=PAST_DEADLINE_BUCKETS,
            registry=registry,
        )
        self.oldest_running = Gauge(
            "workflow_phase_oldest_running_age_seconds",
            "Age of the oldest phase in flight (0: none), from the SLA monitor's state.",
            ["phase"],
            registry=registry,
        )
        self.running = Gauge(
            "workflow_phase_running",
            "Phases in flight by state (ok, at_risk, overdue), from the SLA monitor's state.",
            ["phase", "state"],
            registry=registry,
        )
        self._thresholds_ms = dict(DEFAULT_SLA_MS)
        for phase in PHASES:  # every series exists from the start, at zero
            label = phase_label(phase)
            for metric in (
                self.started,
                self.completed,
                self.failed,
                self.rolled_back,
                self.in_flight,
                self.past_deadline,
                self.oldest_running,
            ):
                metric.labels(label)
            for state in RunningState:
                self.running.labels(label, state.value)
            self.threshold.labels(label).set(DEFAULT_SLA_MS[phase] / 1000)

    def observe(self, events: Sequence[PhaseEvent]) -> None:
        for event in events:
            label = phase_label(event.phase_number)
            sample = exemplar(event.workflow_id, str(event.user_id))
            if event.status is PhaseStatus.STARTED:
                self.started.labels(label).inc(exemplar=sample)
            elif event.status is PhaseStatus.ROLLED_BACK:
                self.rolled_back.labels(label).inc(exemplar=sample)
            elif event.duration_ms is not None:
                histogram = self.completed if event.status is PhaseStatus.COMPLETED else self.failed
                histogram.labels(label).observe(event.duration_ms / 1000, exemplar=sample)
                late = overdue_by_ms(event.duration_ms, self._thresholds_ms[event.phase_number])
                if late is not None:
                    self.past_deadline.labels(label).observe(late / 1000, exemplar=sample)

    def set_gauges(self, in_flight: Mapping[int, int], thresholds_ms: Mapping[int, int]) -> None:
        self._thresholds_ms = DEFAULT_SLA_MS | dict(thresholds_ms)
        for phase in PHASES:
            label = phase_label(phase)
            self.in_flight.labels(label).set(in_flight.get(phase, 0))
            self.threshold.labels(label).set(self._thresholds_ms[phase] / 1000)

    def set_running(self, loads: Mapping[int, PhaseLoad]) -> None:
        """The running phases' gauges; a phase with none running reads 0."""
        for phase, load in loads.items():
            label = phase_label(phase)
            self.oldest_running.labels(label).set(load.oldest_age_s or 0.0)
            for state, count in load.by_state.items():
                self.running.labels(label, state.value).set(count)


class ViolationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.violations = Counter(
            "workflow_phase_sla_violations",
            "SLA violations, by phase and kind.",
            ["phase", "kind"],
            registry=registry,
        )

    def observe(self, violations: Sequence[SlaViolation]) -> None:
        for violation in violations:
            self.violations.labels(phase_label(violation.phase_number), violation.kind.value).inc(
                exemplar=exemplar(violation.workflow_id, str(violation.user_id))
            )


class CommandMetrics:
    """Rollback commands published, by kind (gave_up and loop_stopped among them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = Counter(
            "phasestream_rollback_commands",
            "Rollback commands published, by kind.",
            ["kind"],
            registry=registry,
        )
        for kind in CommandKind:
            self.commands.labels(kind.value)

    def observe(self, commands: Sequence[RollbackCommand]) -> None:
        for command in commands:
            self.commands.labels(command.kind.value).inc()


class PipelineMetrics:
    """A PipelineObserver: what each consumer does, per consumer group."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "phasestream_consumer_events", "Events applied.", ["consumer"], registry=registry
        )
        self.invalid = Counter(
            "phasestream_consumer_invalid_events",
            "Records sent to the dead-letter topic.",
            ["consumer"],
            registry=registry,
        )
        self.batch = Histogram(
            "phasestream_consumer_batch_duration_seconds",
            "Time to make one batch durable.",
            ["consumer"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.last_event = Gauge(
            "phasestream_consumer_last_event_timestamp_seconds",
            "Event time of the newest event applied.",
            ["consumer"],
            registry=registry,
        )
        self.last_applied = Gauge(
            "phasestream_consumer_last_applied_timestamp_seconds",
            "When the last batch was made durable.",
            ["consumer"],
            registry=registry,
        )
        self.lag_records = Gauge(
            "phasestream_consumer_lag_records",
            "Records behind the fetch highwater mark.",
            ["consumer", "partition"],
            registry=registry,
        )
        self.lost_records = Counter(
            "phasestream_consumer_lost_records",
            "Records deleted (retention) before the consumer read them.",
            ["consumer", "partition"],
            registry=registry,
        )

    def register(self, consumer: str) -> None:
        for metric in (self.events, self.invalid, self.batch):
            metric.labels(consumer)

    def applied(
        self, consumer: str, events: int, seconds: float, last_event_time: datetime | None
    ) -> None:
        self.events.labels(consumer).inc(events)
        self.batch.labels(consumer).observe(seconds)
        self.last_applied.labels(consumer).set_to_current_time()
        if last_event_time is not None:
            self.last_event.labels(consumer).set(last_event_time.timestamp())

    def dead_lettered(self, consumer: str, count: int) -> None:
        self.invalid.labels(consumer).inc(count)

    def lost(self, consumer: str, partition: PartitionRef, count: int) -> None:
        self.lost_records.labels(consumer, str(partition.partition)).inc(count)

    def lag(self, consumer: str, lag: Mapping[PartitionRef, int]) -> None:
        for ref, behind in lag.items():
            self.lag_records.labels(consumer, str(ref.partition)).set(behind)
