"""The metrics consumer and /metrics, /healthz against the real broker and Postgres."""

from __future__ import annotations

import shutil
import subprocess

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from models.phases import PhaseStatus
from models.ports import Batch, PartitionRef, PositionMove
from phasestream.health import checks
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess
from phasestream.settings import Settings
from projections.metrics_sink import MetricsDataSink
from streams.publisher import PhaseEventPublisher
from tests.background import consumers_running
from tests.events import make_event
from tests.waiting import count_rows, eventually, fetch_rows

pytestmark = pytest.mark.integration
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def known_events() -> list[object]:
    long_id = "wf-" + "x" * 252  # 255 characters: the longest workflow id the contract allows
    return [
        *[make_event(f"wf-{i}", 1, PhaseStatus.STARTED) for i in range(5)],
        *[
            make_event(f"wf-{i}", 1, PhaseStatus.COMPLETED, duration_ms=d)
            for i, d in enumerate((500, 1500, 45_000))
        ],
        make_event(long_id, 2, PhaseStatus.FAILED, duration_ms=2_000, error_message="boom"),
        *[
            make_event(
                f"wf-{i}", 3, PhaseStatus.ROLLED_BACK, rollback_triggered=True, rollback_to_phase=2
            )
            for i in range(2)
        ],
    ]


METRICS_TOKEN = "scrape-token-for-the-metrics-test"


async def scrape(
    port: int, accept: str = "text/plain", token: str | None = None, status: int = 200
) -> str:
    headers = {"Accept": accept} | ({"Authorization": f"Bearer {token}"} if token else {})
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as response,
    ):
        assert response.status == status
        return await response.text()


def exemplars_of(openmetrics: str) -> list[str]:
    return [line.split(" # ", 1)[1] for line in openmetrics.splitlines() if " # " in line]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_match_the_events_published(settings: Settings) -> None:
    events = known_events()
    db = settings.database_url or ""
    settings = settings.model_copy(update={"http_metrics_token": SecretStr(METRICS_TOKEN)})
    async with (
        consumers_running(settings, "metrics") as runtime,
        PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub,
    ):
        await pub.publish_many(events)  # type: ignore[arg-type]
        assert runtime.http_port is not None
        port = runtime.http_port
        group = settings.metrics_consumer_group
        await eventually(
            lambda: scrape(port, token=METRICS_TOKEN),
            lambda text: (
                value(samples(text), "phasestream_consumer_events_total", consumer=group)
                == len(events)
            ),
        )
        found = samples(await scrape(port, token=METRICS_TOKEN))
        openmetrics = await scrape(port, OPENMETRICS, token=METRICS_TOKEN)
        refused = await scrape(port, OPENMETRICS, token="wrong", status=401)
        await scrape(port, status=401)
    assert value(found, "workflow_phase_started_total", phase="phase_1") == 5
    assert value(found, "workflow_phase_completed_duration_seconds_count", phase="phase_1") == 3
    assert value(found, "workflow_phase_completed_duration_seconds_sum", phase="phase_1") == 47.0
    assert (
        value(found, "workflow_phase_completed_duration_seconds_bucket", phase="phase_1", le="30.0")
        == 2
    )
    assert value(found, "workflow_phase_failed_duration_seconds_count", phase="phase_2") == 1
    assert value(found, "workflow_phase_rolled_back_total", phase="phase_3") == 2
    assert value(found, "workflow_phase_started_total", phase="phase_7") == 0  # exists at 0
    assert value(found, "workflow_phase_sla_threshold_seconds", phase="phase_3") == 120
    assert value(found, "phasestream_consumer_invalid_events_total", consumer=group) == 0
    assert value(found, "phasestream_consumer_last_event_timestamp_seconds", consumer=group) > 0
    # No user or workflow id as a label, ever; they travel as exemplars of at most 128 chars.
    series = [
        line.split(" # ", 1)[0] for line in openmetrics.splitlines() if not line.startswith("#")
    ]
    assert not [line for line in series if "wf-" in line or "user_id" in line]
    assert "PHASESTREAM_HTTP_METRICS_TOKEN" in refused
    exemplars = exemplars_of(openmetrics)
    assert any('workflow_id="wf-' in e for e in exemplars)
    for line in exemplars:
        labels = line.split("}", 1)[0].lstrip("{")
        chars = sum(
            len(k) + len(v.strip('"'))
            for k, v in (pair.split("=", 1) for pair in labels.split('",'))
        )
        assert chars <= 128, line
    assert await count_rows(db, "SELECT count(*) FROM metrics_data") == len(events)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not found: install Debian's 'prometheus' package "
            "(apt-get install prometheus); `make test` does it where it can"
        )
    return path


async def test_promtool_accepts_the_live_exposition(settings: Settings) -> None:
    tool = promtool()
    async with (
        consumers_running(settings, "audit", "sla", "metrics") as runtime,
        PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub,
    ):
        await pub.publish_many(known_events())  # type: ignore[arg-type]
        assert runtime.http_port is not None
        port = runtime.http_port
        # The 45 s completion of phase 1 (SLA 30 s) is late: the SLA monitor finds it, the
        # violations projection counts it.
        late = 'workflow_phase_sla_violations_total{kind="late_completed",phase="phase_1"} 1.0'
        text = await eventually(
            lambda: scrape(port),
            lambda text: (
                late in text and 'workflow_phase_started_total{phase="phase_1"} 5.0' in text
            ),
        )
    checked = subprocess.run(
        [tool, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    # The check can fail: a counter without _total, in milliseconds, is refused.
    bad = "# HELP x_ms Bad.\n# TYPE x_ms counter\nx_ms 1\n"
    refused = subprocess.run(
        [tool, "check", "metrics"], input=bad.encode(), capture_output=True, timeout=30, check=False
    )
    assert refused.returncode != 0


async def test_metrics_data_exactly_once_after_redelivery(settings: Settings) -> None:
    events = known_events()
    db = settings.database_url or ""
    async with PhaseEventPublisher(settings.bootstrap_servers, settings.phase_events_topic) as pub:
        await pub.publish_many(events)  # type: ignore[arg-type]
    for _ in range(2):  # the second run re-reads everything from offset 0
        async with consumers_running(settings, "metrics"):
            await eventually(
                lambda: count_rows(
                    db, "SELECT coalesce(sum(next_offset), 0) FROM phasestream_consumer_positions"
                ),
                lambda n: n == len(events),
            )
        await count_rows(
            db,
            "WITH d AS (DELETE FROM phasestream_consumer_positions "
            "RETURNING 1) SELECT count(*) FROM d",
        )
    assert await count_rows(db, "SELECT count(*) FROM metrics_data") == len(events)
    assert (
        await count_rows(
            db,
            "SELECT count(*) FROM metrics_data WHERE metric_name = "
            "'workflow_phase_completed_duration_seconds' AND value = 45 "
            "AND labels->>'phase' = 'phase_1' AND labels ? 'workflow_id'",
        )
        == 1
    )


async def test_metrics_data_sink_copies_new_ids_and_skips_those_recorded(database: str) -> None:
    # A batch of new ids is COPYed; one with an id recorded before (a redelivery) or an
    # id twice falls back to the row-by-row insert, which skips what is there.
    first = make_event("wf-m", 1, PhaseStatus.STARTED)
    second = make_event("wf-m", 1, PhaseStatus.COMPLETED, duration_ms=1500)
    fresh = make_event("wf-m", 2, PhaseStatus.STARTED)
    twice = make_event("wf-m", 2, PhaseStatus.FAILED, duration_ms=250, error_message="x")
    ref = PartitionRef("t", 0)
    async with await MetricsDataSink.connect(database) as sink:
        await sink.apply("m", Batch.single(ref, [first, second], PositionMove(None, 2)))
        await sink.apply("m", Batch.single(ref, [second, fresh, first], PositionMove(2, 5)))
        await sink.apply("m", Batch.single(ref, [twice, twice], PositionMove(5, 7)))
    rows = await fetch_rows(database, "SELECT id, value, error_message FROM metrics_data")
    assert sorted((r["id"], r["value"], r["error_message"]) for r in rows) == sorted(
        [
            (first.event_id, 1.0, None),
            (second.event_id, 1.5, None),
            (fresh.event_id, 1.0, None),
            (twice.event_id, 0.25, "x"),
        ]
    )
    assert (
        await count_rows(database, "SELECT max(next_offset) FROM phasestream_consumer_positions")
        == 7
    )


async def test_healthz_reports_each_dependency(settings: Settings) -> None:
    async def health(port: int) -> tuple[int, dict[str, str]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status, await response.json()

    async with consumers_running(settings, "metrics") as runtime:
        assert runtime.http_port is not None
        status, body = await health(runtime.http_port)
        assert (status, body) == (200, {"status": "ok", "kafka": "ok", "postgres": "ok"})
    # The same checks against a Postgres that is not there: not ready, and it says why.
    broken = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/x"})
    async with serving(
        build_app(CollectorRegistry(), checks(broken), HttpAccess.from_settings(broken)),
        "127.0.0.1",
        0,
    ) as port:
        status, body = await health(port)
    assert status == 503
    assert body["kafka"] == "ok"
    # It says what failed, not the error's text (which can carry addresses and user names).
    assert body["postgres"].startswith("error: ")
    assert "127.0.0.1" not in body["postgres"]
    assert "postgres@" not in str(body)


def exemplar_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("workflow_phase_started", "Started.", ["phase"], registry=registry)
    counter.labels("phase_1").inc(exemplar={"workflow_id": "wf-secret", "user_id": "u-1"})
    return registry


@pytest.mark.parametrize(
    ("options", "token", "served"),
    [
        ({}, None, False),  # open, not enabled: the text format, no ids
        ({"http_metrics_exemplars": True}, None, True),  # enabled explicitly
        ({"http_metrics_token": SecretStr(METRICS_TOKEN)}, METRICS_TOKEN, True),  # authorised
    ],
)
async def test_exemplars_only_for_an_authorised_scrape_or_when_enabled(
    options: dict[str, object], token: str | None, served: bool
) -> None:
    access = HttpAccess.from_settings(Settings(**options))  # type: ignore[arg-type]
    async with serving(build_app(exemplar_registry(), {}, access), "127.0.0.1", 0) as port:
        text = await scrape(port, OPENMETRICS, token=token)
    assert ("wf-secret" in text) is served
    assert bool(exemplars_of(text)) is served
    assert "workflow_phase_started_total" in text
