"""Time series from the audit log on a real Postgres: buckets, zero-fill, bounds, API, CLI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from models.phases import PhaseStatus
from models.ports import Batch, PositionMove
from models.timeseries import MAX_BUCKETS, floor_to
from phasestream.report_cli import report_app
from projections.audit_sink import AuditSink
from tests.events import make_event
from tests.integration.test_api import api, conforms, get
from tests.integration.test_reports import REF, iso

pytestmark = pytest.mark.integration
S, C, F, R = (
    PhaseStatus.STARTED,
    PhaseStatus.COMPLETED,
    PhaseStatus.FAILED,
    PhaseStatus.ROLLED_BACK,
)
M = timedelta(minutes=1)
SEC = timedelta(seconds=1)


def hour_anchor() -> datetime:
    """A whole hour, three hours ago."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


async def seed(database: str, t0: datetime) -> None:
    """Minute 0: three starts (phases 1, 1, 2), phase 1 completed in 1 s; minute 1: phase 2
    completed late (90 s of 60); minute 3: phase 1 failed late (50 s of 30); minute 5: a
    rollback. One start before the window and one at its end (excluded)."""
    events = [
        make_event("wf-1", 1, S, timestamp=t0),
        make_event("wf-2", 1, S, timestamp=t0 + 10 * SEC),
        make_event("wf-3", 2, S, timestamp=t0 + 20 * SEC),
        make_event("wf-1", 1, C, timestamp=t0 + 30 * SEC, duration_ms=1000),
        make_event("wf-3", 2, C, timestamp=t0 + M + 50 * SEC, duration_ms=90_000),
        make_event("wf-2", 1, F, timestamp=t0 + 3 * M, duration_ms=50_000),
        make_event("wf-2", 1, R, timestamp=t0 + 5 * M, rollback_to_phase=1),
        make_event("wf-0", 1, S, timestamp=t0 - SEC),
        make_event("wf-9", 1, S, timestamp=t0 + 10 * M),
    ]
    async with await AuditSink.connect(database) as sink:
        await sink.apply("seed", Batch.single(REF, events, PositionMove(None, len(events))))


@pytest.fixture
async def seeded(database: str) -> tuple[str, datetime]:
    t0 = hour_anchor()
    await seed(database, t0)
    return database, t0


def values(body: dict[str, Any]) -> list[Any]:
    return [b["value"] for b in body["items"]]


EXPECTED = {
    "started": [3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "completed": [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    "failed": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
    "rolled_back": [0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    "violations": [0, 1, 0, 1, 0, 0, 0, 0, 0, 0],
    "p95_duration": [1000.0, 90000.0, None, 50000.0, *[None] * 6],
}


async def test_every_metric_per_minute_zero_filled(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    window = {"since": iso(t0), "until": iso(t0 + 10 * M), "step": "1m"}
    async with api(database) as session:
        for metric, expected in EXPECTED.items():
            status, body = await get(session, "/api/timeseries", metric=metric, **window)
            assert status == 200, body
            conforms(body, "TimeseriesPage")
            assert values(body) == expected, metric
        assert [b["bucket"] for b in body["items"]] == [iso(t0 + i * M) for i in range(10)]
        assert (body["metric"], body["step"], body["since"], body["sla_ms"]) == (
            "p95_duration",
            "1m",
            iso(t0),
            None,
        )
        _, phase2 = await get(session, "/api/timeseries", metric="started", phase="2", **window)
        assert (values(phase2)[:2], phase2["sla_ms"]) == ([1, 0], 60_000)
        _, hourly = await get(
            session,
            "/api/timeseries",
            metric="started",
            step="1h",
            since=iso(t0 + 30 * M),
            until=iso(t0 + 2 * timedelta(hours=1)),
        )
        # since is rounded down to its hour, so the first bucket is whole.
        assert [(b["bucket"], b["value"]) for b in hourly["items"]] == [
            (iso(t0), 4),
            (iso(t0 + timedelta(hours=1)), 0),
        ]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({}, "metric"),
        ({"metric": "throughput"}, "metric"),
        ({"metric": "started", "step": "10m"}, "step"),
        ({"metric": "started", "step": "1m", "since": "30d"}, "since"),
        ({"metric": "started", "since": "yesterday"}, "since"),
        ({"metric": "started", "phase": "9"}, "phase"),
        ({"metric": "started", "limit": "5"}, "limit"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    database: str, params: dict[str, str], name: str
) -> None:
    async with api(database) as session:
        status, body = await get(session, "/api/timeseries", **params)
    assert (status, body["parameter"]) == (400, name), body


async def cli(database: str, *args: str) -> Any:
    env = {"PHASESTREAM_DATABASE_URL": database, "PHASESTREAM_LOG_LEVEL": "WARNING"}
    return await asyncio.to_thread(CliRunner().invoke, report_app, list(args), env=env)


async def test_report_timeseries_csv_and_json(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    window = ["--since", iso(t0), "--until", iso(t0 + 4 * M), "--step", "1m"]
    result = await cli(database, "timeseries", "--metric", "violations", *window, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == "bucket,value\n" + "".join(
        f"{iso(t0 + i * M)},{v}\n" for i, v in enumerate([0, 1, 0, 1])
    )
    p95 = await cli(database, "timeseries", "--metric", "p95_duration", *window, "--format", "json")
    assert '"value": null' in p95.stdout
    assert '"value": 90000.0' in p95.stdout
    bad = await cli(database, "timeseries", "--metric", "started", "--step", "1m", "--since", "3d")
    assert bad.exit_code == 2
    assert "--since: the window holds" in bad.stderr


async def test_report_timeseries_is_bounded_by_its_buckets_like_the_api(database: str) -> None:
    """No --limit: the window and the step bound the list. MAX_BUCKETS buckets are listed;
    one more is refused before any query, in one line naming --since, in the API's words."""
    until = floor_to(datetime.now(UTC), M)  # a whole number of minutes: the count is exact

    def window(buckets: int) -> dict[str, str]:
        return {"since": iso(until - buckets * M), "until": iso(until), "step": "1m"}

    def flags(buckets: int) -> list[str]:
        return [f"--{k}={v}" for k, v in window(buckets).items()]

    fits = await cli(
        database, "timeseries", "--metric", "started", *flags(MAX_BUCKETS), "--format", "json"
    )
    assert fits.exit_code == 0, fits.output
    assert len(orjson.loads(fits.stdout)["items"]) == MAX_BUCKETS
    over = await cli(database, "timeseries", "--metric", "started", *flags(MAX_BUCKETS + 1))
    async with api(database) as session:
        status, body = await get(
            session, "/api/timeseries", metric="started", **window(MAX_BUCKETS + 1)
        )
    assert (status, body["parameter"]) == (400, "since"), body
    assert (over.exit_code, over.stdout) == (2, "")
    assert over.stderr == f"error: --{body['error']}\n"
    assert f"{MAX_BUCKETS + 1} buckets of 1m, at most {MAX_BUCKETS}" in over.stderr


@pytest.mark.parametrize(
    ("path", "params"),
    [("/api/timeseries", {"metric": "started"}), ("/api/running", {"at_risk": "true"})],
)
async def test_unreachable_database_is_503(path: str, params: dict[str, str]) -> None:
    async with api("postgresql://nobody@127.0.0.1:1/none") as session:
        status, body = await get(session, path, **params)
    assert status == 503
    assert "error" in body
