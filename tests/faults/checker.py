"""The fault suite's checker: what a scenario published against what every sink holds.

Expectations come from the pure decisions in ``models/`` folded over the published events,
never from re-derived rules:

- audit rows (``workflow_phase_logs``) and ``metrics_data`` rows: one per published event,
  plus one per ``rolled_back`` event the rollback commander emits (``models.rollback``);
- SLA violations (``workflow_phase_sla_violation_events``): the late ends that
  ``models.sla.state.step`` finds, and an ``overdue`` one (``models.sla.policy.judge_open``) for
  every phase still open at the end, each with its deterministic ``violation_id``;
- rollback commands on the commands topic: every command ``models.rollback.decide`` issues
  (retries included), each with its deterministic ``command_id``, each exactly once;
- the same violations on the violations topic, each exactly once (the projection would
  absorb a duplicate, but the topic's other readers, the notifier's users, would not).

The actual side is read back: the three tables, and both topics up to their fetch
highwater, counting records per id. The report gives, per sink, what was lost
(expected, absent), duplicated (present more than once), unexpected (present, never
expected) and differing (present, but saying something else than expected).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from models.command_codec import decode_command
from models.commands import RollbackCommand
from models.errors import InvalidEventError
from models.events import PhaseEvent
from models.metric_rows import metric_row
from models.phases import PhaseStatus
from models.rollback import RollbackPolicy, WorkflowHistory, decide
from models.sla.policy import judge_open, overdue_at
from models.sla.state import SlaState, step
from models.sla.violation import SlaViolation, ViolationKind
from models.sla.violation_codec import decode_violation
from phasestream.settings import Settings
from tests.topics import read_to_highwater

AUDIT = "audit rows (workflow_phase_logs)"
VIOLATIONS = "SLA violations (workflow_phase_sla_violation_events)"
COMMANDS = "command ids on the rollback-commands topic"
METRICS = "metrics_data rows"
VIOLATION_TOPIC = "violation ids on the sla-violations topic"
SINKS = (AUDIT, VIOLATIONS, COMMANDS, METRICS, VIOLATION_TOPIC)
#: Ids shown per problem in a report; the counts are always complete.
SHOWN = 5

#: What a row says besides its id, compared between expectation and sink.
Fields = tuple[Any, ...]


@dataclass(frozen=True)
class Published:
    """What a scenario published, in publication order, and what it meant by it.

    ``never_finish`` are the started event ids of phases that never end (each must become
    an overdue violation), ``late`` those of phases whose end exceeds the threshold. The
    failures of phase > 1 (rollbacks) are read off the events themselves.
    """

    events: Sequence[PhaseEvent]
    never_finish: frozenset[UUID] = frozenset()
    late: frozenset[UUID] = frozenset()

    @property
    def rollback_failures(self) -> list[PhaseEvent]:
        return [e for e in self.events if e.status is PhaseStatus.FAILED and e.phase_number > 1]


@dataclass(frozen=True)
class Expected:
    """Per sink: each expected id and what its row says."""

    rows: Mapping[str, Mapping[str, Fields]]

    def count(self, sink: str) -> int:
        return len(self.rows[sink])


@dataclass(frozen=True)
class Observed:
    """Per sink: every row or record found, as (id, what it says), repeats included."""

    rows: Mapping[str, Sequence[tuple[str, Fields]]]


@dataclass(frozen=True)
class SinkReport:
    sink: str
    expected: int
    found: int
    lost: tuple[str, ...] = ()
    duplicated: tuple[tuple[str, int], ...] = ()  # (id, how many times)
    unexpected: tuple[str, ...] = ()
    differing: tuple[str, ...] = ()  # "id: expected ..., found ..."

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.differing)

    def __str__(self) -> str:
        head = (
            f"{self.sink}: expected {self.expected}, found {self.found}: "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"unexpected {len(self.unexpected)}, differing {len(self.differing)}"
        )
        details = [
            f"  {name} (first {SHOWN}): {list(items[:SHOWN])}"
            for name, items in (
                ("lost", self.lost),
                ("duplicated", self.duplicated),
                ("unexpected", self.unexpected),
                ("differing", self.differing),
            )
            if items
        ]
        return "\n".join([head, *details])


@dataclass(frozen=True)
class Report:
    sinks: tuple[SinkReport, ...]
    context: str = ""  # seed, kills, timings: what a failure needs to be reproduced

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sinks)

    def sink(self, name: str) -> SinkReport:
        return next(s for s in self.sinks if s.sink == name)

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        lines = [f"checker: {verdict}", *(str(s) for s in self.sinks)]
        return "\n".join([*lines, self.context] if self.context else lines)


# --- expectations, from models/ -----------------------------------------------------


def expect(
    published: Published, *, thresholds: Mapping[int, int], grace_ms: int, policy: RollbackPolicy
) -> Expected:
    """What every sink must hold once every deadline has passed and the pipeline is quiet.

    Raises AssertionError when the scenario's stated intent (``never_finish``, ``late``)
    disagrees with what the models decide: then the scenario, not the product, is wrong.
    """
    rolled_back, commands = _rollbacks(published.events, policy)
    transitions = [*published.events, *rolled_back]
    ids = Counter(e.event_id for e in transitions)
    repeated = [str(i) for i, n in ids.items() if n > 1]
    assert not repeated, f"the scenario published event ids twice: {repeated[:SHOWN]}"
    violations = _violations(published.events, thresholds, grace_ms)
    _agree(published, violations)
    violation_rows = {str(v.violation_id): (v.kind.value, v.phase_number) for v in violations}
    return Expected(
        {
            AUDIT: {str(e.event_id): _audit_fields(e) for e in transitions},
            VIOLATIONS: violation_rows,
            COMMANDS: {str(c.command_id): (c.kind.value, c.attempt) for c in commands},
            METRICS: {str(e.event_id): _metric_fields(e) for e in transitions},
            VIOLATION_TOPIC: violation_rows,
        }
    )


def _rollbacks(
    events: Iterable[PhaseEvent],
    policy: RollbackPolicy,
) -> tuple[list[PhaseEvent], list[RollbackCommand]]:
    """Fold ``decide`` over each workflow's failures in log order (one workflow's events
    share a partition, so log order is publication order)."""
    histories: dict[str, WorkflowHistory] = {}
    rolled_back: list[PhaseEvent] = []
    commands: list[RollbackCommand] = []
    now = datetime.now(UTC)  # ids do not depend on the time nor on the jitter draw
    for event in events:
        if event.status is not PhaseStatus.FAILED:
            continue
        history = histories.get(event.workflow_id, WorkflowHistory())
        decision = decide(event, history, policy, now, 0.0)
        histories[event.workflow_id] = decision.history
        commands += decision.commands
        if decision.rolled_back is not None:
            rolled_back.append(decision.rolled_back)
    return rolled_back, commands


def _violations(
    events: Iterable[PhaseEvent], thresholds: Mapping[int, int], grace_ms: int
) -> list[SlaViolation]:
    """Late ends as the monitor's state machine finds them, then every phase left open
    judged at a time past its deadline and grace."""
    state, now = SlaState(), datetime.now(UTC)
    found: list[SlaViolation] = []
    for event in events:
        verdict = step(state, event, 0, thresholds, now)
        if verdict is not None:
            found.append(verdict)
    for entry in state.open.values():
        threshold = thresholds[entry.phase.phase_number]
        after = overdue_at(entry.phase, threshold, grace_ms) + timedelta(milliseconds=1)
        overdue = judge_open(entry.phase, threshold, after, grace_ms)
        assert overdue is not None, entry
        found.append(overdue)
    return found


def _agree(published: Published, violations: Sequence[SlaViolation]) -> None:
    overdue = {v.started_event_id for v in violations if v.kind is ViolationKind.OVERDUE}
    late = {v.started_event_id for v in violations if v.kind is not ViolationKind.OVERDUE}
    for what, stated, decided in (
        ("never finishing", published.never_finish, overdue),
        ("late", published.late, late),
    ):
        assert stated == decided, (
            f"the scenario's {what} phases and the models disagree: stated only "
            f"{sorted(map(str, stated - decided))[:SHOWN]}, decided only "
            f"{sorted(map(str, decided - stated))[:SHOWN]}"
        )


def _audit_fields(event: PhaseEvent) -> Fields:
    return (event.workflow_id, event.phase_number, event.status.value)


def _metric_fields(event: PhaseEvent) -> Fields:
    row = metric_row(event)
    return (row.metric_name, row.value)


# --- what the sinks hold ------------------------------------------------------------


async def observe(settings: Settings) -> Observed:
    """Read every sink: the three tables, and both topics to their fetch highwater."""
    conn = await asyncpg.connect(settings.database_url or "")
    try:
        audit = await conn.fetch(
            "SELECT id::text AS id, workflow_id, phase_number, status FROM workflow_phase_logs"
        )
        violations = await conn.fetch(
            "SELECT violation_id::text AS id, kind, phase_number "
            "FROM workflow_phase_sla_violation_events"
        )
        metrics = await conn.fetch("SELECT id::text AS id, metric_name, value FROM metrics_data")
    finally:
        await conn.close()
    commands = await read_to_highwater(settings, settings.rollback_commands_topic)
    published = await read_to_highwater(settings, settings.sla_violations_topic)
    return Observed(
        {
            AUDIT: [(r["id"], (r["workflow_id"], r["phase_number"], r["status"])) for r in audit],
            VIOLATIONS: [(r["id"], (r["kind"], r["phase_number"])) for r in violations],
            COMMANDS: [_command_row(r) for r in commands],
            METRICS: [(r["id"], (r["metric_name"], r["value"])) for r in metrics],
            VIOLATION_TOPIC: [_violation_row(r) for r in published],
        }
    )


def _command_row(record: Any) -> tuple[str, Fields]:
    try:
        command = decode_command(record.key, record.value)
    except InvalidEventError as exc:
        return _undecodable(record, exc)
    return str(command.command_id), (command.kind.value, command.attempt)


def _violation_row(record: Any) -> tuple[str, Fields]:
    try:
        violation = decode_violation(record.key, record.value)
    except InvalidEventError as exc:
        return _undecodable(record, exc)
    return str(violation.violation_id), (violation.kind.value, violation.phase_number)


def _undecodable(record: Any, error: InvalidEventError) -> tuple[str, Fields]:
    return f"undecodable record {record.partition}:{record.offset} ({error})", ()


# --- the comparison -----------------------------------------------------------------


def compare(expected: Expected, observed: Observed, context: str = "") -> Report:
    return Report(
        tuple(_compare_sink(name, expected.rows[name], observed.rows[name]) for name in SINKS),
        context,
    )


def _compare_sink(
    sink: str, expected: Mapping[str, Fields], found: Sequence[tuple[str, Fields]]
) -> SinkReport:
    counts = Counter(row_id for row_id, _ in found)
    says: dict[str, Fields] = {}
    for row_id, fields in found:
        says.setdefault(row_id, fields)
    return SinkReport(
        sink,
        len(expected),
        len(found),
        lost=tuple(sorted(i for i in expected if i not in counts)),
        duplicated=tuple(sorted((i, n) for i, n in counts.items() if n > 1)),
        unexpected=tuple(sorted(i for i in counts if i not in expected)),
        differing=tuple(
            sorted(
                f"{i}: expected {want}, found {says[i]}"
                for i, want in expected.items()
                if i in says and says[i] != want
            )
        ),
    )


async def check(settings: Settings, expected: Expected, context: str = "") -> Report:
    """Compare the sinks with the expectations; ``context`` (seed, kills) goes into the report."""
    return compare(expected, await observe(settings), context)
