"""Every report against a known event set, through the functions and through the CLI."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from typer.testing import CliRunner, Result

from models.phases import PhaseStatus
from models.ports import Batch, PartitionRef, PositionMove
from models.report_filters import Page, ReportFilters
from models.sla.violation import SlaViolation, ViolationKind, violation_id
from phasestream.report_cli import report_app
from projections.audit_sink import AuditSink
from projections.reports import analytics, history, sla
from projections.reports.core import Report
from projections.reports.history import UnknownWorkflowError
from projections.sla.violations import ViolationSink
from tests.events import make_event

pytestmark = pytest.mark.integration
USER_A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
USER_B = uuid.UUID("00000000-0000-4000-8000-00000000000b")
REF = PartitionRef("seed", 0)
S, C, F, R = (
    PhaseStatus.STARTED,
    PhaseStatus.COMPLETED,
    PhaseStatus.FAILED,
    PhaseStatus.ROLLED_BACK,
)


def anchor() -> datetime:
    """Two hours ago, on a whole second: inside --since 24h, ISO strings easy to write."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


async def seed_report_events(database: str, t0: datetime) -> None:
    """Phase 3 (SLA 120 s): wf-a 1 s, wf-b 3 s (user A), wf-c 150 s late, wf-d failed 2 s
    and rolled back to 2 (user B). wf-d phase 2 (SLA 60 s) failed late after 70 s, rolled
    back to 1: a chain of two. wf-old phase 5 (SLA 10 s) took 25 s three days ago. wf-e
    phase 4 started and was reported overdue. The commander's ledger holds wf-d's commands.
    """
    m = timedelta(minutes=1)
    events = []
    for i, (wf, user, status, ms) in enumerate(
        [
            ("wf-a", USER_A, C, 1000),
            ("wf-b", USER_A, C, 3000),
            ("wf-c", USER_B, C, 150_000),
            ("wf-d", USER_B, F, 2000),
        ]
    ):
        start = t0 + i * m
        events += [
            make_event(wf, 3, S, timestamp=start, user_id=user),
            make_event(
                wf,
                3,
                status,
                duration_ms=ms,
                user_id=user,
                timestamp=start + timedelta(milliseconds=ms),
            ),
        ]
    events += [
        make_event(
            "wf-d",
            3,
            R,
            timestamp=t0 + 4 * m,
            user_id=USER_B,
            previous_phase=3,
            rollback_triggered=True,
            rollback_to_phase=2,
        ),
        make_event("wf-d", 2, S, timestamp=t0 + 5 * m, user_id=USER_B),
        make_event(
            "wf-d",
            2,
            F,
            timestamp=t0 + 5 * m + timedelta(seconds=70),
            duration_ms=70_000,
            user_id=USER_B,
            error_message="boom",
        ),
        make_event(
            "wf-d",
            2,
            R,
            timestamp=t0 + 7 * m,
            user_id=USER_B,
            previous_phase=2,
            rollback_triggered=True,
            rollback_to_phase=1,
        ),
        make_event("wf-old", 5, S, timestamp=t0 - timedelta(days=3), user_id=USER_A),
        make_event(
            "wf-old",
            5,
            C,
            timestamp=t0 - timedelta(days=3) + timedelta(seconds=25),
            duration_ms=25_000,
            user_id=USER_A,
        ),
    ]
    overdue_start = make_event("wf-e", 4, S, timestamp=t0 + 10 * m, user_id=USER_A)
    events.append(overdue_start)
    async with await AuditSink.connect(database) as sink:
        await sink.apply("seed", Batch.single(REF, events, PositionMove(None, len(events))))
    overdue = SlaViolation(
        violation_id(overdue_start.event_id, ViolationKind.OVERDUE),
        ViolationKind.OVERDUE,
        "wf-e",
        USER_A,
        4,
        overdue_start.event_id,
        overdue_start.timestamp,
        t0 + 12 * m,
        120_000,
        90_000,
    )
    async with await ViolationSink.connect(database) as violations:
        await violations.apply(
            "seed-violations", Batch.single(REF, [overdue], PositionMove(None, 1))
        )
    await _seed_commands(database, t0)


async def _seed_commands(database: str, t0: datetime) -> None:
    m = timedelta(minutes=1)
    rows = [
        ("rollback", 3, 2, 0, t0 + 4 * m, None),
        ("retry", 3, 2, 1, t0 + 4 * m, t0 + 5 * m),
        ("rollback", 2, 1, 0, t0 + 7 * m, None),
        ("gave_up", 2, 1, 1, t0 + 7 * m, None),
    ]
    conn = await asyncpg.connect(database)
    try:
        await conn.executemany(
            "INSERT INTO rollback_commands (command_id, kind, workflow_id, user_id, "
            "failed_event_id, failed_phase, rollback_to_phase, attempt, reason, decided_at, "
            "due_at, issued_at) VALUES ($1, $2, 'wf-d', $3, $4, $5, $6, $7, 'boom', $8, $9, $8)",
            [
                (
                    uuid.uuid5(uuid.NAMESPACE_OID, f"{kind}{phase}"),
                    kind,
                    USER_B,
                    uuid.uuid4(),
                    phase,
                    to,
                    attempt,
                    at,
                    due,
                )
                for kind, phase, to, attempt, at, due in rows
            ],
        )
    finally:
        await conn.close()


@pytest.fixture
async def seeded(database: str) -> tuple[str, datetime]:
    t0 = anchor()
    await seed_report_events(database, t0)
    return database, t0


async def run_report(database: str, report: Any, *args: Any) -> Report:
    conn = await asyncpg.connect(database)
    try:
        result: Report = await report(conn, *args)
        return result
    finally:
        await conn.close()


ANALYTICS_COLUMNS = (
    "phase",
    "started",
    "completed",
    "failed",
    "rolled_back",
    "completion_rate",
    "failure_rate",
    "rollback_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "sla_ms",
    "over_sla",
)
ANALYTICS_ALL = [
    (2, 1, 0, 1, 1, 0.0, 100.0, 100.0, 70000.0, 70000.0, 70000.0, 60000, 1),
    (3, 4, 3, 1, 1, 75.0, 25.0, 25.0, 2500.0, 127950.0, 145590.0, 120000, 1),
    (4, 1, 0, 0, 0, None, None, 0.0, None, None, None, 90000, 0),
    (5, 1, 1, 0, 0, 100.0, 0.0, 0.0, 25000.0, 25000.0, 25000.0, 10000, 1),
]


async def test_analytics_counts_rates_and_percentiles(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    report = await run_report(database, analytics.analytics, ReportFilters())
    assert report.items.columns == ANALYTICS_COLUMNS
    assert list(report.items.rows) == ANALYTICS_ALL
    recent = await run_report(
        database, analytics.analytics, ReportFilters(since=t0 - timedelta(hours=1))
    )
    assert [r[0] for r in recent.items.rows] == [2, 3, 4]
    # Phase 3 of user B only: wf-c (150 s) and wf-d (failed after 2 s, rolled back).
    mine = await run_report(database, analytics.analytics, ReportFilters(phase=3, user=USER_B))
    assert list(mine.items.rows) == [
        (3, 2, 1, 1, 1, 50.0, 50.0, 50.0, 76000.0, 142600.0, 148520.0, 120000, 1)
    ]
    # until is exclusive: wf-a's start at t0 is in, its end a second later is not.
    first = await run_report(
        database, analytics.analytics, ReportFilters(since=t0, until=t0 + timedelta(seconds=1))
    )
    assert [r[:5] for r in first.items.rows] == [(3, 1, 0, 0, 0)]


async def test_sla_lists_violations_newest_first_with_counts_by_kind(
    seeded: tuple[str, datetime],
) -> None:
    database, t0 = seeded
    report = await run_report(database, sla.sla, ReportFilters())
    rows = report.items.dicts()
    assert [(r["kind"], r["workflow_id"], r["at"]) for r in rows] == [
        ("overdue", "wf-e", iso(t0 + timedelta(minutes=10))),
        ("late_failed", "wf-d", iso(t0 + timedelta(minutes=6, seconds=10))),
        ("late_completed", "wf-c", iso(t0 + timedelta(minutes=4, seconds=30))),
        ("late_completed", "wf-old", iso(t0 - timedelta(days=3) + timedelta(seconds=25))),
    ]
    assert [(r["duration_ms"], r["excess_ms"]) for r in rows[1:]] == [
        (70000, 10000),
        (150000, 30000),
        (25000, 15000),
    ]
    assert report.extra[0].rows == (
        ("late_completed", 2, iso(t0 + timedelta(minutes=4, seconds=30))),
        ("late_failed", 1, iso(t0 + timedelta(minutes=6, seconds=10))),
        ("overdue", 1, iso(t0 + timedelta(minutes=10))),
    )
    paged = await run_report(database, sla.sla, ReportFilters(), Page(2, 1))
    assert [r["workflow_id"] for r in paged.items.dicts()] == ["wf-d", "wf-c"]
    assert paged.next_offset == 3
    last = await run_report(database, sla.sla, ReportFilters(), Page(2, 2))
    assert last.next_offset is None


async def test_rollbacks_per_phase_and_chains(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    report = await run_report(database, history.rollbacks, ReportFilters())
    assert report.extra[0].dicts() == [
        {
            "phase": 2,
            "rollbacks": 1,
            "workflows": 1,
            "retries": 0,
            "gave_up": 1,
            "loops_stopped": 0,
        },
        {
            "phase": 3,
            "rollbacks": 1,
            "workflows": 1,
            "retries": 1,
            "gave_up": 0,
            "loops_stopped": 0,
        },
    ]
    assert report.items.dicts() == [
        {
            "workflow_id": "wf-d",
            "user_id": str(USER_B),
            "rollbacks": 2,
            "chain": "3->2 2->1",
            "first_at": iso(t0 + timedelta(minutes=4)),
            "last_at": iso(t0 + timedelta(minutes=7)),
        }
    ]
    only_3 = await run_report(database, history.rollbacks, ReportFilters(phase=3))
    assert only_3.items.rows == ()  # one rollback of phase 3 is no chain
    assert [r[0] for r in only_3.extra[0].rows] == [3]


async def test_workflow_timeline(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    report = await run_report(database, history.workflow, "wf-d", ReportFilters())
    steps = [
        (r["phase"], r["status"], r["duration_ms"], r["over_sla"]) for r in report.items.dicts()
    ]
    assert steps == [
        (3, "started", None, False),
        (3, "failed", 2000, False),
        (3, "rolled_back", None, False),
        (2, "started", None, False),
        (2, "failed", 70000, True),
        (2, "rolled_back", None, False),
    ]
    assert report.items.dicts()[0]["at"] == iso(t0 + timedelta(minutes=3))
    summary, violations, commands = report.extra
    assert report.as_json()["summary"] == wf_d_summary(t0) == summary.dicts()[0]
    assert [(v["kind"], v["excess_ms"]) for v in violations.dicts()] == [("late_failed", 10000)]
    assert [(c["kind"], c["failed_phase"], c["attempt"]) for c in commands.dicts()] == [
        ("rollback", 3, 0),
        ("retry", 3, 1),
        ("rollback", 2, 0),
        ("gave_up", 2, 1),
    ]
    assert report.as_json()["workflow_id"] == "wf-d"
    with pytest.raises(UnknownWorkflowError):
        await run_report(database, history.workflow, "wf-none", ReportFilters())


async def cli(database: str, *args: str) -> Result:
    """The sub-app in a worker thread: its asyncio.run needs a thread without a loop."""
    env = {"PHASESTREAM_DATABASE_URL": database, "PHASESTREAM_LOG_LEVEL": "WARNING"}
    return await asyncio.to_thread(CliRunner().invoke, report_app, list(args), env=env)


async def test_cli_json_is_exact(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    result = await cli(database, "sla", "--phase", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    at = iso(t0 + timedelta(minutes=4, seconds=30))
    event = (await run_report(database, sla.sla, ReportFilters(phase=3))).items.rows[0][-1]
    expected = {
        "by_kind": [{"kind": "late_completed", "violations": 1, "latest": at}],
        "items": [
            {
                "kind": "late_completed",
                "at": at,
                "workflow_id": "wf-c",
                "user_id": str(USER_B),
                "phase": 3,
                "status": "completed",
                "duration_ms": 150000,
                "threshold_ms": 120000,
                "excess_ms": 30000,
                "event_id": event,
            }
        ],
    }
    assert result.stdout == orjson.dumps(expected, option=orjson.OPT_INDENT_2).decode() + "\n"


async def test_cli_csv_is_exact(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    result = await cli(database, "analytics", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "phase,started,completed,failed,rolled_back,completion_rate,failure_rate,"
        "rollback_rate,p50_ms,p95_ms,p99_ms,sla_ms,over_sla\n"
        "2,1,0,1,1,0.0,100.0,100.0,70000.0,70000.0,70000.0,60000,1\n"
        "3,4,3,1,1,75.0,25.0,25.0,2500.0,127950.0,145590.0,120000,1\n"
        "4,1,0,0,0,,,0.0,,,,90000,0\n"
        "5,1,1,0,0,100.0,0.0,0.0,25000.0,25000.0,25000.0,10000,1\n"
    )
    recent = await cli(database, "analytics", "--since", "24h", "--format", "csv")
    assert [line.split(",")[0] for line in recent.stdout.splitlines()] == ["phase", "2", "3", "4"]


async def test_cli_table_rollbacks_and_workflow(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    result = await cli(database, "rollbacks")
    assert result.exit_code == 0, result.output
    assert "by_phase" in result.stdout
    assert "3->2 2->1" in result.stdout
    timeline = await cli(database, "workflow", "wf-d", "--format", "csv")
    assert timeline.exit_code == 0, timeline.output
    assert len(timeline.stdout.splitlines()) == 7  # header + six transitions
    missing = await cli(database, "workflow", "wf-none")
    assert missing.exit_code == 1
    assert "no events of workflow 'wf-none'" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analytics", "--since", "yesterday"], "--since: expected a duration like 24h"),
        (["sla", "--until", "2026-01-01T10:00:00"], "--until: the timestamp needs an offset"),
        (["rollbacks", "--phase", "8"], "--phase: must be a phase from 1 to 7, got '8'"),
        (["workflow", "wf-d", "--user", "bob"], "--user: must be a UUID, got 'bob'"),
        (["analytics", "--since", "1h", "--until", "2h"], "--until: must be after since"),
        (["analytics", "--format", "xml"], "xml"),
        (["workflow", "x" * 256], "workflow_id: must be 1-255 characters"),
    ],
)
async def test_cli_bad_filters_exit_2(database: str, args: list[str], message: str) -> None:
    result = await cli(database, *args)
    assert result.exit_code == 2
    assert message in result.stderr


async def narrow_cli(database: str, columns: int, *args: str) -> Result:
    """The sub-app as a terminal of ``columns`` columns would run it (rich reads COLUMNS)."""
    env = {
        "PHASESTREAM_DATABASE_URL": database,
        "PHASESTREAM_LOG_LEVEL": "WARNING",
        "COLUMNS": str(columns),
    }
    return await asyncio.to_thread(CliRunner().invoke, report_app, list(args), env=env)


@pytest.mark.parametrize(
    "args",
    [
        ["analytics"],
        ["sla"],
        ["rollbacks"],
        ["workflow", "wf-d"],
        ["running"],
        ["timeseries", "--metric", "started", "--step", "1h"],
    ],
)
async def test_every_table_fits_100_columns(seeded: tuple[str, datetime], args: list[str]) -> None:
    database, _ = seeded
    wide = await cli(database, *args)
    narrow = await narrow_cli(database, 100, *args)
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 100
    # Piped without COLUMNS nothing is cut: the same report, wider than 100 for most.
    assert wide.exit_code == 0, wide.output
    assert set(wide.stdout.split()) & set(narrow.stdout.split())


async def test_a_narrow_console_gets_short_ids_then_fewer_columns_then_vertical_rows(
    seeded: tuple[str, datetime],
) -> None:
    database, _ = seeded
    event = (await run_report(database, sla.sla, ReportFilters(phase=3))).items.rows[0][-1]
    assert isinstance(event, str)
    wide = await cli(database, "sla", "--phase", "3")
    assert event in wide.stdout
    shortened = await narrow_cli(database, 120, "sla", "--phase", "3")
    assert event not in shortened.stdout
    assert event[:8] in shortened.stdout
    fewer = await narrow_cli(database, 100, "sla", "--phase", "3")
    assert event[:8] not in fewer.stdout
    assert "violations (without user_id, event_id: --format json has them)" in fewer.stdout
    assert "wf-c" in fewer.stdout
    vertical = await narrow_cli(database, 40, "sla", "--phase", "3")
    assert vertical.exit_code == 0, vertical.output
    assert max(len(line) for line in vertical.stdout.splitlines()) <= 40
    assert any(line.split() == ["workflow_id", "wf-c"] for line in vertical.stdout.splitlines())


async def test_limit_pages_like_the_api_and_says_how_many_more(
    seeded: tuple[str, datetime],
) -> None:
    database, _ = seeded
    first = await cli(database, "sla", "--limit", "2", "--format", "csv")
    assert first.exit_code == 0, first.output
    assert len(first.stdout.splitlines()) == 3  # header + 2 of the 4 violations
    assert "2 more violations not shown: --offset 2" in first.stderr
    rest = await cli(database, "sla", "--limit", "2", "--offset", "2", "--format", "csv")
    assert len(rest.stdout.splitlines()) == 3
    assert "more" not in rest.stderr
    everything = await cli(database, "sla", "--format", "csv")

    def keys(result: Result) -> list[str]:  # an overdue row's duration grows with the clock
        return [line.split(",")[-1] for line in result.stdout.splitlines()[1:]]

    assert keys(everything) == keys(first) + keys(rest)
    table = await cli(database, "workflow", "wf-d", "--limit", "4")
    assert "2 more transitions not shown: --offset 4" in table.stdout
    for report in ("analytics", "rollbacks", "workflow wf-d", "running"):
        bad = await cli(database, *report.split(), "--limit", "0")
        assert bad.exit_code == 2, report
        assert "--limit: must be from 1 to 1000, got '0'" in bad.stderr


def wf_d_summary(t0: datetime) -> dict[str, Any]:
    """wf-d's summary: phases 2 and 3; it ended with phase 2 rolled back; from t0+3m to
    t0+7m; 2 rollbacks, 1 violation (phase 2 failed late)."""
    return {
        "phases": "2,3",
        "status": "phase 2 rolled_back",
        "first_at": iso(t0 + timedelta(minutes=3)),
        "last_at": iso(t0 + timedelta(minutes=7)),
        "duration_ms": 240_000,
        "rollbacks": 2,
        "violations": 1,
    }


async def test_workflow_json_carries_the_summary_the_table_opens_with(
    seeded: tuple[str, datetime],
) -> None:
    database, t0 = seeded
    result = await cli(database, "workflow", "wf-d", "--phase", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    body = orjson.loads(result.stdout)
    assert body["summary"] == wf_d_summary(t0)  # the whole workflow, not phase 3 only
    assert {t["phase"] for t in body["items"]} == {3}
    csv_out = await cli(database, "workflow", "wf-d", "--format", "csv")
    assert csv_out.stdout.splitlines()[0].startswith("at,phase,status,")  # the list only


async def test_workflow_table_opens_with_a_summary(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    result = await cli(database, "workflow", "wf-d")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    titles = [
        n
        for n, line in enumerate(lines)
        if line in {"summary", "violations", "commands", "transitions"}
    ]
    assert [lines[n] for n in titles] == ["summary", "violations", "commands", "transitions"]
    row = lines[titles[0] + 4].strip("│").split("│")
    # Phases 2 and 3; it ended with phase 2 rolled back; from t0+3m to t0+7m; 2 rollbacks,
    # 1 violation (phase 2 failed late).
    assert [cell.strip() for cell in row] == [
        "2,3",
        "phase 2 rolled_back",
        iso(t0 + timedelta(minutes=3)),
        iso(t0 + timedelta(minutes=7)),
        "240000",
        "2",
        "1",
    ]
    quiet = await cli(database, "workflow", "wf-a")
    quiet_titles = {line.strip() for line in quiet.stdout.splitlines()}
    # wf-a has neither violations nor commands: those sections are left out.
    assert quiet_titles >= {"summary", "transitions"}
    assert not quiet_titles & {"violations", "commands"}


async def test_workflow_orders_one_instant_by_phase_then_status(database: str) -> None:
    t = anchor()
    # Published out of order, all at one instant: the report puts them in their natural order.
    events = [
        make_event("wf-t", 2, R, timestamp=t),
        make_event("wf-t", 2, F, timestamp=t, duration_ms=5),
        make_event("wf-t", 2, S, timestamp=t),
        make_event("wf-t", 1, C, timestamp=t, duration_ms=5),
    ]
    async with await AuditSink.connect(database) as sink:
        await sink.apply("seed", Batch.single(REF, events, PositionMove(None, len(events))))
    report = await run_report(database, history.workflow, "wf-t", ReportFilters())
    assert [(r["phase"], r["status"]) for r in report.items.dicts()] == [
        (1, "completed"),
        (2, "started"),
        (2, "failed"),
        (2, "rolled_back"),
    ]


async def test_the_installed_command_fits_a_100_column_terminal(
    seeded: tuple[str, datetime],
) -> None:
    """`phasestream report workflow` as its own process, as a shell with COLUMNS=100 runs it."""
    database, _ = seeded
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASESTREAM_")}
    env |= {"PHASESTREAM_DATABASE_URL": database, "COLUMNS": "100"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phasestream",
        "report",
        "workflow",
        "wf-d",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "phase 2 rolled_back" in text
    assert "late_failed" in text
