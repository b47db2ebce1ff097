"""Running phases through the real pipeline: broker, audit projector, SLA monitor, API, CLI.

A stream with phases that start, finish, run late, get retried, roll back, are abandoned,
and one that finishes after the SLA monitor has reported it overdue. The list must be the
same whether or not the monitor runs: from the audit log, or from the monitor's state
while the monitor has caught up with the audit projector.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from typer.testing import CliRunner

from models.phases import PhaseStatus
from phasestream.report_cli import report_app
from phasestream.settings import Settings
from tests.background import consumers_running
from tests.events import make_event
from tests.integration.test_api import conforms
from tests.integration.test_sla import publisher, set_threshold
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration
S, C, F, R = (
    PhaseStatus.STARTED,
    PhaseStatus.COMPLETED,
    PhaseStatus.FAILED,
    PhaseStatus.ROLLED_BACK,
)
OTHER_USER = uuid.UUID("00000000-0000-4000-8000-000000000002")
#: By deadline (started_at + threshold): the order of time left, least first.
EXPECTED = [
    ("wf-late", 2, "overdue"),
    ("wf-risk", 4, "at_risk"),
    ("wf-retry", 6, "ok"),
    ("wf-other", 3, "ok"),
    ("wf-ok", 3, "ok"),
]


def stream(base: datetime) -> list[Any]:
    s = timedelta(seconds=1)
    return [
        make_event("wf-done", 1, S, timestamp=base - 5 * s),
        make_event("wf-done", 1, C, timestamp=base - 4 * s, duration_ms=1000),
        make_event("wf-ok", 3, S, timestamp=base - s),  # 1 s of 120: ok
        make_event("wf-risk", 4, S, timestamp=base - 80 * s),  # 80 s of 90 (> 80 %): at risk
        make_event("wf-late", 2, S, timestamp=base - 100 * s),  # 100 s of 60: overdue
        make_event("wf-retry", 6, S, timestamp=base - 30 * s),  # replaced by its retry
        make_event("wf-retry", 6, S, timestamp=base - 2 * s),
        make_event("wf-rolled", 7, S, timestamp=base - 10 * s),
        make_event("wf-rolled", 7, F, timestamp=base - 9 * s, duration_ms=1000),
        make_event("wf-rolled", 7, R, timestamp=base - 9 * s, rollback_to_phase=6),
        make_event("wf-other", 3, S, timestamp=base - 20 * s, user_id=OTHER_USER),
        # Older than the 1 h lookback: abandoned, not running.
        make_event("wf-abandoned", 1, S, timestamp=base - timedelta(hours=3)),
    ]


async def api_get(port: int | None, **params: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session,
        session.get("/api/running", params=params) as response,
    ):
        body: dict[str, Any] = await response.json()
        return response.status, body


def listed(body: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(r["workflow_id"], r["phase"], r["state"]) for r in body["items"]]


def with_lookback(settings: Settings) -> Settings:
    return settings.model_copy(update={"running_lookback_hours": 1})


async def test_running_phases_from_the_audit_log_without_the_monitor(settings: Settings) -> None:
    settings = with_lookback(settings)
    db = settings.database_url or ""
    base = datetime.now(UTC)
    events = stream(base)
    async with consumers_running(settings, "audit") as rt, publisher(settings) as pub:
        await pub.publish_many(events)
        await eventually(lambda: count_rows(db), lambda n: n == len(events), what="audit rows")
        status, body = await api_get(rt.http_port)
        assert status == 200, body
        conforms(body, "RunningPage")
        assert listed(body) == EXPECTED
        assert body["source"] == "workflow_phase_logs"  # the monitor never ran
        late = body["items"][0]
        assert late["threshold_ms"] == 60_000
        assert 100_000 <= late["elapsed_ms"] < 130_000
        assert late["left_ms"] == late["threshold_ms"] - late["elapsed_ms"] < 0
        assert body["items"][2]["started_at"].startswith(
            (base - timedelta(seconds=2)).astimezone(UTC).isoformat()[:19]
        )
        assert (body["at_risk_share"], body["lookback_s"]) == (0.8, 3600.0)
        fresh = {f["role"]: f for f in body["freshness"]}
        assert fresh["source"]["consumer"] == settings.audit_consumer_group
        assert fresh["source"]["partitions"] >= 1
        assert fresh["source"]["last_event_at"] is not None
        assert fresh["sla_monitor"]["partitions"] == 0  # not running: says so
        assert fresh["sla_monitor"]["updated_at"] is None

        _, risky = await api_get(rt.http_port, at_risk="true")
        assert listed(risky) == EXPECTED[:2]
        _, phase3 = await api_get(rt.http_port, phase="3")
        assert listed(phase3) == EXPECTED[3:]
        _, other = await api_get(rt.http_port, user=str(OTHER_USER))
        assert listed(other) == [("wf-other", 3, "ok")]
        _, first = await api_get(rt.http_port, limit="2")
        assert (listed(first), first["next_offset"]) == (EXPECTED[:2], 2)
        _, rest = await api_get(rt.http_port, limit="2", offset="4")
        assert (listed(rest), rest["next_offset"]) == (EXPECTED[4:], None)
        for params, name in (
            ({"phase": "9"}, "phase"),
            ({"at_risk": "maybe"}, "at_risk"),
            ({"since": "1h"}, "since"),
            ({"limit": "0"}, "limit"),
        ):
            status, error = await api_get(rt.http_port, **params)
            assert (status, error["parameter"]) == (400, name), error


async def test_a_phase_reported_overdue_leaves_the_list_when_it_finishes(
    settings: Settings,
) -> None:
    settings = with_lookback(settings)
    db = settings.database_url or ""
    await set_threshold(db, 5, 1500)
    slow = make_event("wf-slow", 5, S, timestamp=datetime.now(UTC))
    async with consumers_running(settings, "audit", "sla") as rt, publisher(settings) as pub:
        await pub.publish_many([slow])
        # While in time it is listed as ok or at risk; the monitor then reports it overdue.
        await eventually(
            lambda: count_rows(
                db,
                "SELECT count(*) FROM workflow_phase_sla_violation_events "
                "WHERE workflow_id = 'wf-slow' AND kind = 'overdue'",
            ),
            lambda n: n == 1,
            timeout_s=20,
            what="the overdue report",
        )
        _, body = await api_get(rt.http_port)
        assert listed(body) == [("wf-slow", 5, "overdue")]
        assert body["items"][0]["left_ms"] < -500  # reported after deadline + 500 ms grace
        fresh = {f["role"]: f for f in body["freshness"]}
        assert fresh["sla_monitor"]["partitions"] >= 1
        elapsed = int((datetime.now(UTC) - slow.timestamp) / timedelta(milliseconds=1))
        await pub.publish_many(
            [
                make_event(
                    "wf-slow",
                    5,
                    C,
                    duration_ms=elapsed,
                    timestamp=slow.timestamp + timedelta(milliseconds=elapsed),
                )
            ]
        )
        await eventually(
            lambda: api_get(rt.http_port),
            lambda r: r[1]["items"] == [],
            what="wf-slow gone from the running list",
        )
        # Both stay on record: reported overdue on the way, then finished late.
        kinds = await eventually(
            lambda: count_rows(
                db,
                "SELECT count(DISTINCT kind) FROM workflow_phase_sla_violation_events "
                "WHERE workflow_id = 'wf-slow'",
            ),
            lambda n: n == 2,
            what="late_completed",
        )
        assert kinds == 2
        assert await count_rows(db, "SELECT count(*) FROM sla_open_phases") == 0


async def test_the_list_comes_from_the_monitor_while_it_has_caught_up(settings: Settings) -> None:
    """The same list, filters and pages from the SLA monitor's state while it is level
    with the audit projector, and from the log again once the monitor falls behind."""
    settings = with_lookback(settings)
    base = datetime.now(UTC)

    def from_(source: str, expected: list[Any]) -> Any:
        return lambda r: (r[1]["source"], listed(r[1])) == (source, expected)

    async with publisher(settings) as pub:
        async with consumers_running(settings, "audit", "sla") as rt:
            await pub.publish_many(stream(base))
            await eventually(
                lambda: api_get(rt.http_port),
                from_("sla_open_phases", EXPECTED),
                what="the monitor's list",
            )
            for params, expected in (
                ({"at_risk": "true"}, EXPECTED[:2]),
                ({"phase": "3"}, EXPECTED[3:]),
                ({"user": str(OTHER_USER)}, [("wf-other", 3, "ok")]),
            ):
                _, body = await api_get(rt.http_port, **params)
                assert (body["source"], listed(body)) == ("sla_open_phases", expected), params
            _, first = await api_get(rt.http_port, limit="2")
            assert (listed(first), first["next_offset"]) == (EXPECTED[:2], 2)
            conforms(first, "RunningPage")
        # The monitor stopped: the projector moves past it, so the log answers.
        async with consumers_running(settings, "audit") as rt:
            await pub.publish_many([make_event("wf-ok", 3, C, timestamp=base, duration_ms=1000)])
            await eventually(
                lambda: api_get(rt.http_port),
                from_("workflow_phase_logs", EXPECTED[:-1]),
                what="the log's list without wf-ok",
            )


async def cli(settings: Settings, *args: str) -> Any:
    env = {
        "PHASESTREAM_DATABASE_URL": settings.database_url or "",
        "PHASESTREAM_LOG_LEVEL": "WARNING",
        "PHASESTREAM_RUNNING_LOOKBACK_HOURS": "1",
        "PHASESTREAM_AUDIT_CONSUMER_GROUP": settings.audit_consumer_group,
    }
    return await asyncio.to_thread(CliRunner().invoke, report_app, list(args), env=env)


async def test_report_running_cli(settings: Settings) -> None:
    db = settings.database_url or ""
    events = stream(datetime.now(UTC))
    async with consumers_running(settings, "audit"), publisher(settings) as pub:
        await pub.publish_many(events)
        await eventually(lambda: count_rows(db), lambda n: n == len(events), what="audit rows")
    result = await cli(settings, "running", "--format", "json")
    assert result.exit_code == 0, result.output
    body = orjson.loads(result.stdout)
    assert listed(body) == EXPECTED
    assert body["freshness"][0]["role"] == "source"
    risky = await cli(settings, "running", "--at-risk", "--format", "csv")
    lines = risky.stdout.splitlines()
    assert lines[0] == (
        "workflow_id,user_id,phase,started_at,elapsed_ms,threshold_ms,"
        "left_ms,state,started_event_id"
    )
    assert [line.split(",")[0] for line in lines[1:]] == ["wf-late", "wf-risk"]
    table = await cli(settings, "running", "--limit", "1")
    assert "wf-late" in table.stdout
    assert "wf-risk" not in table.stdout
    bad = await cli(settings, "running", "--phase", "9")
    assert bad.exit_code == 2
    assert "--phase: must be a phase from 1 to 7" in bad.stderr
