"""`phasestream sla suggest` and `sla set` against a real Postgres."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime

import asyncpg
import pytest
from typer.testing import CliRunner, Result

from phasestream.sla_cli import sla_app
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture

pytestmark = pytest.mark.integration


async def cli(database: str, *args: str) -> Result:
    """The sub-app in a worker thread: its asyncio.run needs a thread without a loop."""
    env = {"PHASESTREAM_DATABASE_URL": database, "PHASESTREAM_LOG_LEVEL": "WARNING"}
    return await asyncio.to_thread(CliRunner().invoke, sla_app, list(args), env=env)


def rows(result: Result) -> dict[str, dict[str, str]]:
    assert result.exit_code == 0, result.output
    return {r["phase"]: r for r in csv.DictReader(io.StringIO(result.stdout))}


async def test_suggest_numbers(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    found = rows(await cli(database, "suggest", "--format", "csv"))
    assert list(found) == ["1", "2", "3", "4", "5", "6", "7"]
    # Phase 3 over 30 days: 1000, 2000, 3000, 150000 ms. p95 = 127950; * 1.2 = 153540,
    # up to a whole second: 154000. One execution exceeds 120 s; none exceeds 154 s.
    assert found["3"] == {
        "phase": "3",
        "current_ms": "120000",
        "executions": "4",
        "p50_ms": "2500.0",
        "p95_ms": "127950.0",
        "p99_ms": "145590.0",
        "percentile_ms": "127950.0",
        "suggested_ms": "154000",
        "violations_current": "1",
        "violations_suggested": "0",
    }
    # Phase 5: one run of 25 s; phase 1: no runs, the current threshold alone.
    assert (found["5"]["suggested_ms"], found["5"]["violations_current"]) == ("30000", "1")
    assert found["1"] == {
        "phase": "1",
        "current_ms": "30000",
        "executions": "0",
        "p50_ms": "",
        "p95_ms": "",
        "p99_ms": "",
        "percentile_ms": "",
        "suggested_ms": "",
        "violations_current": "0",
        "violations_suggested": "",
    }


async def test_suggest_percentile_headroom_and_window(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    # p50 of phase 3 is 2500 ms; no headroom: 2500 up to 3000. Only the 150 s run exceeds it
    # (3000 ms itself is not over: exceeding is strictly more).
    found = rows(
        await cli(database, "suggest", "--percentile", "50", "--headroom", "0%", "--format", "csv")
    )
    assert (found["3"]["suggested_ms"], found["3"]["violations_suggested"]) == ("3000", "1")
    # The three-day-old phase 5 run is outside 24 hours.
    recent = rows(await cli(database, "suggest", "--since", "24h", "--format", "csv"))
    assert (recent["5"]["executions"], recent["5"]["suggested_ms"]) == ("0", "")
    table = await cli(database, "suggest")
    assert table.exit_code == 0
    assert "154000" in table.stdout


async def threshold(database: str, phase: int) -> int:
    conn = await asyncpg.connect(database)
    try:
        value: int = await conn.fetchval(
            "SELECT threshold_ms FROM workflow_phase_sla_thresholds WHERE phase_number = $1", phase
        )
        return value
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("text", "ms"), [("90s", 90_000), ("2m", 120_000), ("1500ms", 1500), ("1.5s", 1500)]
)
async def test_set_updates_the_table(database: str, text: str, ms: int) -> None:
    result = await cli(database, "set", "4", text)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"phase 4: SLA threshold 90000 ms -> {ms} ms\n"
    assert await threshold(database, 4) == ms


async def test_set_moves_the_violations_view(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    # Phase 3 at 2 s: wf-b (3 s) and wf-c (150 s) are late now.
    assert (await cli(database, "set", "3", "2s")).exit_code == 0
    conn = await asyncpg.connect(database)
    late = await conn.fetch(
        "SELECT workflow_id FROM workflow_phase_sla_violations "
        "WHERE phase_number = 3 ORDER BY workflow_id"
    )
    await conn.close()
    assert [r["workflow_id"] for r in late] == ["wf-b", "wf-c"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "4", "90"], "duration: expected a duration like 90s, 2m or 1500ms, got '90'"),
        (["set", "4", "0s"], "duration: must be between 1 ms"),
        (["set", "4", "0.5ms"], "duration: must be a whole number of milliseconds"),
        (["set", "4", "9999999999s"], "duration: must be between 1 ms and 2147483647 ms"),
        (["set", "8", "90s"], "phase: must be a phase from 1 to 7, got '8'"),
        (["suggest", "--percentile", "0"], "--percentile: must be in (0, 100]"),
        (["suggest", "--headroom", "lots"], "--headroom: must be a number"),
        (["suggest", "--since", "last week"], "--since: expected a duration"),
    ],
)
async def test_bad_arguments_exit_2(database: str, args: list[str], message: str) -> None:
    result = await cli(database, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert await threshold(database, 4) == 90_000
