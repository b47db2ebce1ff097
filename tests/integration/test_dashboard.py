"""The built-in dashboard in headless Chromium against the API on a real Postgres.

One known event set (test_reports' plus two phases running for a day), one server, one
browser and ONE page load of the overview for the panel tests: each test reads the DOM
that load dumped and compares its panel's numbers with what the API answers. The tests
that must drive the page (the workflow page, search, a bad URL, filters) reuse the same
browser. Screenshots at 1280 and 390 px go to test-artifacts/<broker>/.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from models.phases import PhaseStatus
from models.ports import Batch, PartitionRef, PositionMove
from phasestream.dashboard import static_dir
from phasestream.kafka_cluster import kafka_cluster
from phasestream.settings import Settings
from projections.audit_sink import AuditSink
from streams.dead_letters import DeadLetter, DeadLetterWriter
from streams.topics import ensure_topics
from tests.conftest import with_database
from tests.events import make_event
from tests.integration.dashboard_browser import (
    ARTIFACTS,
    Dom,
    Page,
    browser,
    dashboard,
    same,
)
from tests.integration.test_reports import (
    ANALYTICS_ALL,
    ANALYTICS_COLUMNS,
    USER_B,
    anchor,
    seed_report_events,
)

pytestmark = pytest.mark.integration
# Analytics of the last 24 h: wf-old's phase 5 (three days ago) is outside.
LAST_DAY: list[dict[str, Any]] = [
    dict(zip(ANALYTICS_COLUMNS, row, strict=True)) for row in ANALYTICS_ALL if row[0] != 5
]
USER_C = uuid.UUID("00000000-0000-4000-8000-00000000000c")
# Two phases running for 25 h, before the dashboard's default window (so its numbers stay
# test_reports'), inside a 48 h running lookback: phase 6 with an SLA of 30 h (83 %: at
# risk for hours), phase 7 with one of 100 h (ok). wf-e's phase 4 is overdue.
LONG_SLA = {6: 30 * 3_600_000, 7: 100 * 3_600_000}
OPTIONS: dict[str, Any] = {
    "running_lookback_hours": 48,
    "audit_consumer_group": "seed",
    "sla_violations_consumer_group": "seed-violations",
}
SERIES_STEP = "5m"  # the page's step for its default window (24 h)


@dataclass
class Loaded:
    base: str
    page: Page
    dom: Dom  # the overview after two polls at 1280 px
    phone: Dom  # the same page redrawn at 390 px
    layout: dict[str, Any]  # measured in the browser: overflow, rows of the card grids
    t0: datetime


async def seed_running(database: str) -> None:
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=25)
    events = [
        make_event("wf-live-risk", 6, PhaseStatus.STARTED, timestamp=started, user_id=USER_C),
        make_event("wf-live-ok", 7, PhaseStatus.STARTED, timestamp=started, user_id=USER_C),
    ]
    async with await AuditSink.connect(database) as sink:
        await sink.apply(
            "seed-live",
            Batch.single(PartitionRef("seed-live", 0), events, PositionMove(None, len(events))),
        )
    conn = await asyncpg.connect(database)
    try:
        await conn.executemany(
            "UPDATE workflow_phase_sla_thresholds SET threshold_ms = $2 WHERE phase_number = $1",
            list(LONG_SLA.items()),
        )
    finally:
        await conn.close()


# Three dead letters on the dashboard's own DLQ topic: two bad phases, one bad JSON.
LETTERS = (
    ("phase_number", "must be 1-7, got 9"),
    ("phase_number", "must be 1-7, got 9"),
    ("$", "not valid JSON"),
)


async def seed_dead_letters(settings: Settings) -> None:
    cluster = kafka_cluster(settings)
    await ensure_topics(cluster, [settings.dlq_topic], partitions=1)
    writer = DeadLetterWriter(cluster, settings.dlq_topic, "seed")
    await writer.start()
    try:
        await writer.send_all(
            [
                DeadLetter(
                    settings.phase_events_topic,
                    0,
                    offset,
                    1_700_000_000_000 + offset,
                    b"wf-bad",
                    b"{oops",
                    (),
                    field,
                    reason,
                )
                for offset, (field, reason) in enumerate(LETTERS)
            ]
        )
    finally:
        await writer.stop()


@pytest.fixture(scope="module")
async def module_database(postgres_server: str, template_database: str) -> AsyncIterator[str]:
    name = f"phasestream_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield with_database(postgres_server, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# Measured in the page: does anything stick out sideways, and is every row of each card
# grid (durations, time series) filled to the right edge (no blank cell)?
LAYOUT_JS = """(() => {
  const rows = (id) => {
    const box = document.getElementById(id);
    const cards = [...box.querySelectorAll('figure.multiple')];
    const right = box.getBoundingClientRect().right;
    const byTop = new Map();
    for (const c of cards) {
      const r = c.getBoundingClientRect();
      const key = Math.round(r.top);
      byTop.set(key, Math.max(byTop.get(key) || 0, r.right));
    }
    return [...byTop.values()].map((edge) => Math.round(right - edge));
  };
  return { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
           durations: rows('chart-durations'), series: rows('chart-series') };
})()"""


@pytest.fixture(scope="module")
async def loaded(module_database: str, broker: str) -> AsyncIterator[Loaded]:
    t0 = anchor()
    await seed_report_events(module_database, t0)
    await seed_running(module_database)
    tag = uuid.uuid4().hex[:8]
    options: dict[str, Any] = {
        **OPTIONS,
        "kafka_bootstrap_servers": broker,
        "phase_events_topic": f"test-{tag}.phase-events",
        "dlq_topic": f"test-{tag}.phase-events.dlq",
    }
    await seed_dead_letters(Settings(database_url=module_database, **options))
    async with dashboard(module_database, **options) as base, browser() as page:
        await page.width(1280, redraw=False)
        await page.open(f"{base}/dashboard?refresh=2")
        await page.until(
            "Number(document.body.dataset.refreshes) >= 2 && "
            "document.getElementById('dlq').dataset.state !== 'loading'"
        )
        dom = await page.dom()
        desktop = await page.js(LAYOUT_JS)
        await page.screenshot(ARTIFACTS / "dashboard.png", full=False)
        await page.screenshot(ARTIFACTS / "dashboard-full.png")
        await page.width(390, 844)
        phone = await page.dom()
        layout = {"desktop": desktop, "phone": await page.js(LAYOUT_JS)}
        await page.screenshot(ARTIFACTS / "dashboard-390.png", full=False)
        await page.screenshot(ARTIFACTS / "dashboard-390-full.png")
        await page.width(1280)
        yield Loaded(base, page, dom, phone, layout, t0)


async def api(base: str, path: str, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/{path}", params=params) as response,
    ):
        return response.status, await response.json()


async def api_ok(base: str, path: str, **params: str) -> Any:
    status, body = await api(base, path, **params)
    assert status == 200, body
    return body


def body_of(dom: Dom) -> dict[str, str]:
    return next(n for n in dom.nodes if n.tag == "body").attrs


# ------------------------------------------------------------------ the overview, one load


async def test_the_page_polls_and_is_live(loaded: Loaded) -> None:
    dom = loaded.dom
    assert dom.by_id("status").attrs["data-state"] == "live"
    assert body_of(dom)["data-state"] == "ready"
    assert int(body_of(dom)["data-refreshes"]) >= 2, "polled once only"
    assert "hidden" in dom.by_id("param-warning").attrs  # a clean URL: no warning
    shot = ARTIFACTS / "dashboard.png"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ARTIFACTS / "dashboard-390.png").stat().st_size > 20_000


async def test_throughput_chart_and_per_phase_table(loaded: Loaded) -> None:
    dom = loaded.dom
    api_items = (await api_ok(loaded.base, "analytics", since="24h"))["items"]
    assert api_items == LAST_DAY  # the page asked the same question (default window 24 h)
    charted = sorted(
        {
            int(n.attrs["data-phase"])
            for n in dom.find(chart="throughput")
            if "data-phase" in n.attrs
        }
    )
    assert charted == [2, 3, 4]
    for row in LAST_DAY:
        for metric in ("started", "completed", "failed", "rolled_back"):
            # rolled_back is in the table only: its bar repeated the failure bar.
            places = ("throughput", "analytics") if metric != "rolled_back" else ("analytics",)
            for where in places:
                node = dom.metric(where, row["phase"], metric)
                assert (node.attrs["data-value"], node.text) == (str(row[metric]), str(row[metric]))
        for metric in ("completion_rate", "failure_rate", "rollback_rate"):
            places = ("rates", "analytics") if metric != "rollback_rate" else ("analytics",)
            for where in places:
                assert same(
                    dom.metric(where, row["phase"], metric).attrs["data-value"], row[metric]
                )
    # The redundant bars are gone (failure == rollback for phases 2-7).
    assert dom.find(chart="throughput", metric="rolled_back") == []
    assert dom.find(chart="rates", metric="rollback_rate") == []
    # What a reader sees: rates in %.
    assert dom.metric("rates", 3, "completion_rate").text == "75%"
    assert dom.metric("rates", 2, "failure_rate").text == "100%"
    assert dom.metric("rates", 4, "completion_rate").text == "—"  # nothing finished
    assert dom.metric("analytics", 3, "rollback_rate").text == "25%"


async def test_durations_against_the_sla(loaded: Loaded) -> None:
    dom = loaded.dom
    for row in LAST_DAY:
        for metric in ("p50_ms", "p95_ms", "p99_ms", "sla_ms", "over_sla"):
            assert same(
                dom.metric("durations", row["phase"], metric).attrs["data-value"], row[metric]
            )
    p95 = dom.metric("durations", 3, "p95_ms")
    assert (p95.text, p95.attrs["data-over-sla"]) == ("127.95 s", "true")
    p50 = dom.metric("durations", 3, "p50_ms")
    assert (p50.text, p50.attrs["data-over-sla"]) == ("2.5 s", "false")
    assert dom.metric("durations", 3, "p99_ms").text == "145.59 s"
    assert dom.metric("durations", 3, "sla_ms").text == "SLA 120 s"
    assert dom.metric("durations", 2, "p50_ms").attrs["data-over-sla"] == "true"  # 70 s > 60 s
    assert dom.metric("durations", 4, "p50_ms").text == "—"
    assert dom.metric("durations", 4, "sla_ms").text == "SLA 90 s"


async def test_tiles_sum_the_phases(loaded: Loaded) -> None:
    dom = loaded.dom
    totals = {
        m: dom.by_id(f"total-{m}").attrs["data-value"]
        for m in ("started", "completed", "failed", "rolled_back", "over_sla")
    }
    assert totals == {
        "started": "6",
        "completed": "3",
        "failed": "2",
        "rolled_back": "2",
        "over_sla": "2",
    }
    assert [dom.by_id(f"kind-{k}").text for k in ("late_completed", "late_failed", "overdue")] == [
        "1",
        "1",
        "1",
    ]


async def test_recent_violations_rollbacks_and_chains(loaded: Loaded) -> None:
    dom = loaded.dom
    violations = dom.rows("violations")
    assert [(v["kind"][1], v["workflow_id"][1], v["phase"][1]) for v in violations] == [
        ("overdue", "wf-e", "4"),
        ("late_failed", "wf-d", "2"),
        ("late_completed", "wf-c", "3"),
    ]
    assert [(v["duration_ms"][0], v["excess_ms"][1]) for v in violations[1:]] == [
        ("70000", "+10 s"),
        ("150000", "+30 s"),
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", violations[0]["at"][1])
    by_phase = [{k: v[0] for k, v in row.items()} for row in dom.rows("rollbacks")]
    assert by_phase == [
        {
            "phase": "2",
            "rollbacks": "1",
            "workflows": "1",
            "retries": "0",
            "gave_up": "1",
            "loops_stopped": "0",
        },
        {
            "phase": "3",
            "rollbacks": "1",
            "workflows": "1",
            "retries": "1",
            "gave_up": "0",
            "loops_stopped": "0",
        },
    ]
    chains = dom.rows("chains")
    assert [(c["workflow_id"][1], c["rollbacks"][1], c["chain"][1]) for c in chains] == [
        ("wf-d", "2", "3->2 2->1")
    ]


async def test_running_phases_highlighted_and_live(loaded: Loaded) -> None:
    body = await api_ok(loaded.base, "running", limit="20")
    shown = loaded.dom.rows("running")
    fields = ("workflow_id", "user_id", "phase", "started_at", "threshold_ms", "state")
    assert [tuple(r[f][0] for f in fields) for r in shown] == [
        tuple(str(item[f]) for f in fields) for item in body["items"]
    ]
    assert [(r["workflow_id"][1], r["state"][1]) for r in shown] == [
        ("wf-e", "overdue"),
        ("wf-live-risk", "at risk"),
        ("wf-live-ok", "ok"),
    ]
    for row in shown:  # each row's time left is its threshold less its elapsed time
        assert int(row["left_ms"][0]) == int(row["threshold_ms"][0]) - int(row["elapsed_ms"][0])
    assert shown[0]["left_ms"][1].startswith("-")
    highlighted = [n.attrs["class"] for n in loaded.dom.row_nodes("running")]
    assert highlighted == ["st-overdue", "st-at_risk", "st-ok"]
    assert [
        loaded.dom.by_id(f"running-{s}").attrs["data-value"] for s in ("ok", "at_risk", "overdue")
    ] == ["1", "1", "1"]
    # Live: the next poll redraws the table with the time elapsed since.
    page = loaded.page
    first = await page.js(
        'Number(document.querySelector(\'tr[data-workflow-id="wf-live-ok"] '
        "td[data-field=elapsed_ms]').dataset.value)"
    )
    await page.until(
        'Number(document.querySelector(\'tr[data-workflow-id="wf-live-ok"] '
        f"td[data-field=elapsed_ms]').dataset.value) > {first}"
    )


async def test_time_series_per_phase_against_the_api(loaded: Loaded) -> None:
    dom = loaded.dom
    cards = sorted(
        {n.attrs["data-phase"] for n in dom.find(chart="series") if "data-phase" in n.attrs}
    )
    assert cards == ["2", "3", "4"]  # the phases with events in the window
    nonzero = 0
    for phase in (2, 3, 4):
        for metric in ("started", "failed", "p95_duration"):
            answer = await api_ok(
                loaded.base,
                "timeseries",
                metric=metric,
                step=SERIES_STEP,
                since="24h",
                phase=str(phase),
            )
            drawn = {
                n.attrs["data-bucket"]: n.attrs["data-value"]
                for n in dom.find(chart="series", phase=str(phase), metric=metric)
            }
            # The page asked a moment earlier: its window may start one bucket before.
            common = [b for b in answer["items"] if b["bucket"] in drawn]
            assert len(common) >= len(answer["items"]) - 1
            for bucket in common:
                assert same(drawn[bucket["bucket"]], bucket["value"]), (phase, metric, bucket)
            nonzero += sum(1 for b in common if b["value"])
        sla = dom.find(chart="series", phase=str(phase), metric="sla_ms")[0]
        assert same(sla.attrs["data-value"], LAST_DAY[phase - 2]["sla_ms"])
    assert nonzero >= 6  # the seeded events are drawn, not only empty buckets
    # p95 over the SLA is marked: phase 3's 150 s execution against 120 s.
    assert any(
        n.attrs["class"].endswith("over")
        for n in dom.find(chart="series", phase="3", metric="p95_duration")
    )
    assert dom.by_id("series-window").text == "last 24 h, 5 min buckets"


async def test_violations_over_time_against_the_api(loaded: Loaded) -> None:
    answer = await api_ok(
        loaded.base, "timeseries", metric="violations", step=SERIES_STEP, since="24h"
    )
    drawn = {
        n.attrs["data-bucket"]: n.attrs["data-value"]
        for n in loaded.dom.find(chart="violations-series", metric="violations")
    }
    assert sum(b["value"] for b in answer["items"]) == 2  # wf-c late, wf-d late failed
    assert sum(int(drawn[b["bucket"]]) for b in answer["items"] if b["bucket"] in drawn) == 2


async def test_consumer_health_and_dead_letters(loaded: Loaded) -> None:
    body = await api_ok(loaded.base, "running", limit="1")
    shown = loaded.dom.rows("health")
    assert (
        [r["role"][0] for r in shown]
        == [f["role"] for f in body["freshness"]]
        == ["source", "sla_monitor", "sla_violations", "metrics", "rollback"]
    )
    for row, fresh in zip(shown, body["freshness"], strict=True):
        assert row["consumer"][0] == fresh["consumer"]
        assert same(row["partitions"][0], fresh["partitions"])
        assert row["lag"][0] == ("" if fresh["lag"] is None else str(fresh["lag"]))
        assert row["event_age"][0] == (fresh["last_event_at"] or "")
    source, monitor = shown[0], shown[1]
    assert (source["consumer"][0], source["partitions"][0]) == ("seed", "1")
    assert source["lag"][1] == "unknown"  # the seed stored no highwater
    assert source["moved"][0] == body["freshness"][0]["updated_at"]
    assert source["moved"][1].endswith(" ago")  # its last batch, against the API's clock
    assert monitor["partitions"][1] == "never ran here"
    # Dead letters: /api/dlq where the server has it; without it, the panel says so.
    status, dlq = await api(loaded.base, "dlq")
    note = loaded.dom.by_id("dlq-note").text
    total = loaded.dom.by_id("dlq-total")
    if status == 404:
        assert loaded.dom.by_id("dlq").attrs["data-state"] == "unavailable"
        assert note.startswith("dead letters: unavailable")
        assert total.text == "—"
    elif status == 200:
        assert loaded.dom.by_id("dlq").attrs["data-state"] == "ready"
        assert (
            (total.attrs["data-value"], total.text)
            == ("3", "3")
            == (str(dlq["total"]), str(dlq["total"]))
        )
        assert [(r["reason"][0], r["count"][0]) for r in loaded.dom.rows("dlq-reasons")] == [
            (r["reason"], str(r["count"])) for r in dlq["by_reason"]
        ]
        assert (
            [(r["field"][0], r["count"][0]) for r in loaded.dom.rows("dlq-fields")]
            == [(r["field"], str(r["count"])) for r in dlq["by_field"]]
            == [("phase_number", "2"), ("$", "1")]
        )
        assert [
            (r["topic"][0], r["count"][0], r["oldest"][0], r["newest"][0])
            for r in loaded.dom.rows("dlq-topics")
        ] == [
            (t["topic"], str(t["count"]), t["oldest"] or "", t["newest"] or "")
            for t in dlq["topics"]
        ]
        assert note == f"{dlq['scanned']} letters scanned"
    else:
        assert loaded.dom.by_id("dlq").attrs["data-state"] == "error"
        assert f"api/dlq: {status}" in note


async def test_every_workflow_id_is_a_link(loaded: Loaded) -> None:
    links = [n for n in loaded.dom.nodes if "data-workflow-link" in n.attrs]
    found = {n.attrs["data-workflow-link"] for n in links}
    assert {"wf-a", "wf-b", "wf-c", "wf-d", "wf-e", "wf-old", "wf-live-ok", "wf-live-risk"} <= found
    for node in links:
        assert node.tag == "a"
        assert node.attrs["href"] == f"#workflow={node.attrs['data-workflow-link']}"
    # In every table that names a workflow.
    for table in ("running", "workflows", "violations", "chains"):
        for row in loaded.dom.rows(table):
            assert row["workflow_id"][1] == row["workflow_id"][0]


async def test_readable_at_1280_and_390(loaded: Loaded) -> None:
    for width, layout in ((1280, loaded.layout["desktop"]), (390, loaded.layout["phone"])):
        assert layout["innerWidth"] == width
        assert layout["scrollWidth"] <= width, f"the page is wider than {width} px"
        for grid in ("durations", "series"):  # every row of cards ends at the right edge
            assert layout[grid], (width, grid)
            assert all(abs(gap) <= 2 for gap in layout[grid]), (width, grid, layout[grid])
    assert len(loaded.layout["phone"]["durations"]) == 3  # one card a row on a phone
    # The phone's page draws the same numbers.
    assert loaded.phone.metric("durations", 3, "p95_ms").text == "127.95 s"
    assert loaded.phone.metric("throughput", 3, "started").attrs["data-value"] == "4"


# ------------------------------------------------------------------ driving the same browser


async def test_workflow_page_shows_a_known_workflow(loaded: Loaded) -> None:
    page = loaded.page
    await page.click('#table-chains a[data-workflow-link="wf-d"]')
    await page.until(
        "document.body.dataset.view === 'workflow' && document.getElementById("
        "'workflow-page').dataset.state === 'ready'"
    )
    assert await page.js("location.hash") == "#workflow=wf-d"
    assert await page.js("document.getElementById('overview').hidden") is True
    dom = await page.dom()
    await page.screenshot(ARTIFACTS / "dashboard-workflow.png")
    body = await api_ok(loaded.base, "workflows/wf-d", limit="1000")
    bars = [
        (
            n.attrs["data-phase"],
            n.attrs["data-status"],
            n.attrs["data-duration-ms"],
            n.attrs["data-threshold-ms"],
            n.attrs["data-over-sla"],
        )
        for n in dom.find(chart="timeline")
    ]
    assert bars == [
        ("3", "failed", "2000", "120000", "false"),
        ("2", "failed", "70000", "60000", "true"),
    ]
    starts = [n.attrs["data-start"] for n in dom.find(chart="timeline")]
    assert starts == [t["at"] for t in body["items"] if t["status"] == "started"]
    rollbacks = [
        (n.attrs["data-phase"], n.attrs["data-value"]) for n in dom.find(chart="timeline-rollback")
    ]
    assert rollbacks == [("3", "2"), ("2", "1")]
    commands = [
        (n.attrs["data-kind"], n.attrs["data-phase"]) for n in dom.find(chart="timeline-command")
    ]
    assert (
        commands
        == [(c["kind"], str(c["failed_phase"])) for c in body["commands"]]
        == [("rollback", "3"), ("retry", "3"), ("rollback", "2"), ("gave_up", "2")]
    )
    violations = dom.rows("wf-violations")
    assert [(v["kind"][0], v["excess_ms"][0]) for v in violations] == [("late_failed", "10000")]
    assert [(r["phase"][0], r["status"][0]) for r in dom.rows("transitions")] == [
        (str(t["phase"]), t["status"]) for t in body["items"]
    ]
    summary = {n.attrs["data-summary"]: n.text for n in dom.nodes if "data-summary" in n.attrs}
    assert (summary["rollbacks"], summary["retries"], summary["violations"]) == ("2", "1", "1")
    assert summary["last"] == "phase 2 rolled back"
    # On a phone the timeline is redrawn to its width and nothing sticks out sideways.
    timeline_width = "Number(document.querySelector('#workflow-body svg').getAttribute('width'))"
    await page.width(390, 844)
    await page.until(f"{timeline_width} <= 390")
    assert await page.js("document.documentElement.scrollWidth") <= 390
    # Its tables fit too: none has to be scrolled sideways to read a row.
    cut = await page.js(
        "[...document.querySelectorAll('#workflow-body .scroll')]"
        ".filter((box) => box.scrollWidth > box.clientWidth + 1)"
        ".map((box) => box.querySelector('table').dataset.table)"
    )
    assert cut == [], f"tables wider than a phone: {cut}"
    await page.screenshot(ARTIFACTS / "dashboard-workflow-390.png")
    await page.width(1280)
    await page.until(f"{timeline_width} > 390")
    # Back to the overview, as it was.
    await page.click("#workflow-page a.back")
    await page.until("document.body.dataset.view === 'overview'")
    assert await page.js("document.getElementById('workflow-page').hidden") is True


async def test_a_running_workflow_page_and_an_unknown_one(loaded: Loaded) -> None:
    page = loaded.page
    await page.js("location.hash = '#workflow=wf-live-risk'")
    await page.until(
        "document.getElementById('workflow-page').dataset.state === 'ready' && "
        "document.getElementById('workflow-page').dataset.workflowId === "
        "'wf-live-risk'"
    )
    [bar] = (await page.dom()).find(chart="timeline")
    assert (bar.attrs["data-status"], bar.attrs["data-end"], bar.attrs["data-over-sla"]) == (
        "running",
        "",
        "false",
    )
    await page.js("location.hash = '#workflow=wf-none'")
    await page.until("document.getElementById('workflow-page').dataset.state === 'error'")
    text = await page.js("document.getElementById('workflow-body').textContent")
    assert "Could not show workflow wf-none" in text
    assert "404" in text
    await page.js("location.hash = ''")
    await page.until("document.body.dataset.view === 'overview'")


async def test_search_by_prefix_and_user(loaded: Loaded) -> None:
    page = loaded.page

    async def search(prefix: str, user: str) -> list[str]:
        await page.type_into("search-prefix", prefix)
        await page.type_into("search-user", user)
        await page.click("#search-submit")
        params = {k: v for k, v in (("prefix", prefix), ("user", user)) if v}
        wanted = [
            w["workflow_id"]
            for w in (await api_ok(loaded.base, "workflows", limit="10", **params))["items"]
        ]
        await page.until(
            "JSON.stringify([...document.querySelectorAll('#table-workflows "
            "tr[data-workflow-id]')].map((r) => r.dataset.workflowId)) === "
            f"{json.dumps(json.dumps(wanted, separators=(',', ':')))}"
        )
        return wanted

    assert await search("wf-d", "") == ["wf-d"]
    assert "prefix=wf-d" in await page.js("location.search")  # a search can be bookmarked
    assert sorted(await search("", str(USER_B))) == ["wf-c", "wf-d"]
    assert sorted(await search("wf-live", str(USER_C))) == ["wf-live-ok", "wf-live-risk"]
    assert await search("nothing-", "") == []
    assert "no workflow matches" in await page.js(
        "document.getElementById('table-workflows').textContent"
    )
    # A bad user is refused by the API, and the page says so beside the search.
    await page.type_into("search-prefix", "")
    await page.type_into("search-user", "not-a-uuid")
    await page.click("#search-submit")
    await page.until("!document.getElementById('search-message').hidden")
    message = await page.js("document.getElementById('search-message').textContent")
    assert message.startswith("Search refused: api/workflows: 400 user:"), message
    await page.type_into("search-user", "")
    await page.click("#search-submit")
    await page.until("document.getElementById('search-message').hidden")


async def test_bad_url_parameters_are_named_on_the_page(loaded: Loaded) -> None:
    page = loaded.page
    await page.open(f"{loaded.base}/dashboard?phase=9&since=yesterday&colour=red&refresh=0")
    await page.state("ready")
    dom = await page.dom()
    warning = dom.by_id("param-warning")
    assert "hidden" not in warning.attrs
    assert warning.attrs["data-params"] == "phase,since,colour"
    assert "phase=9: not one of all, 1, 2, 3, 4, 5, 6, 7; showing all" in warning.text
    assert "since=yesterday: not one of 1h, 24h, 7d, 30d, all; showing last 24 h" in warning.text
    assert "colour=red: unknown parameter" in warning.text
    # What is shown instead: the defaults, as said.
    assert dom.by_id("total-started").attrs["data-value"] == "6"
    assert (
        await page.js("document.getElementById('param-warning').getBoundingClientRect().height") > 0
    )  # visible, not only in the DOM


async def test_dashboard_filters_go_to_the_api(loaded: Loaded) -> None:
    page = loaded.page
    await page.open(f"{loaded.base}/dashboard?since=all&phase=5&refresh=0")
    await page.state("ready")
    dom = await page.dom()
    assert {n.attrs.get("data-phase") for n in dom.find(chart="throughput")} == {None, "5"}
    assert dom.metric("throughput", 5, "completed").attrs["data-value"] == "1"
    p50 = dom.metric("durations", 5, "p50_ms")
    assert (p50.text, p50.attrs["data-over-sla"]) == ("25 s", "true")
    assert [(v["workflow_id"][1], v["kind"][1]) for v in dom.rows("violations")] == [
        ("wf-old", "late_completed")
    ]
    assert dom.by_id("kind-late_completed").attrs["data-value"] == "1"
    [chains_empty] = [n for n in dom.nodes if n.attrs.get("id") == "table-chains"]
    assert "no workflow was rolled back more than once" in chains_empty.text
    assert dom.by_id("status").attrs["data-state"] == "paused"
    assert dom.by_id("series-window").text.startswith("last 30 days")
    assert "hidden" in dom.by_id("param-warning").attrs


async def test_dashboard_says_when_the_api_fails(loaded: Loaded) -> None:
    async with dashboard("postgresql://nobody@127.0.0.1:1/none") as base:
        await loaded.page.open(f"{base}/dashboard?refresh=0")
        dom = await loaded.page.dom()
    assert body_of(dom)["data-state"] == "error"
    assert dom.by_id("status").attrs["data-state"] == "error"
    error = dom.by_id("error")
    assert "hidden" not in error.attrs
    assert "api/analytics: 503" in error.text or "api/sla: 503" in error.text


# ------------------------------------------------------------------ the assets


async def test_assets_are_served_from_the_package_only(database: str) -> None:
    shipped = {entry.name for entry in static_dir().iterdir()}
    scripts = sorted(name for name in shipped if name.endswith(".js"))
    assert {"charts.js", "overview.js", "panels.js", "workflow.js", "dashboard.js"} <= set(scripts)
    async with dashboard(database) as base, aiohttp.ClientSession(base) as session:
        async with session.get("/dashboard") as page:
            assert page.status == 200
            assert page.content_type == "text/html"
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
            html = await page.text()
        for asset in [*scripts, "dashboard.css"]:
            kind = "text/css" if asset.endswith(".css") else "text/javascript"
            assert f'dashboard/static/{asset}"' in html  # every shipped asset is used
            async with session.get(f"/dashboard/static/{asset}") as response:
                assert (response.status, response.content_type) == (200, kind)
        for missing in ("nope.js", "..%2Fdashboard.py", "dashboard.html.bak"):
            async with session.get(f"/dashboard/static/{missing}") as response:
                assert response.status == 404, missing
        async with session.get("/dashboard/", allow_redirects=False) as response:
            assert response.status == 308
    assert "<script>" not in html  # the CSP allows neither inline script nor style
    assert " style=" not in html
    # No external network at runtime: no absolute URL but the SVG namespace; text only.
    for entry in static_dir().iterdir():
        text = entry.read_text(encoding="utf-8")
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (entry.name, urls)
        assert "@import" not in text
        assert "@font-face" not in text
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (entry.name, sink)
