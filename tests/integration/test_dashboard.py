"""The built-in dashboard in headless Chromium against the API on a real Postgres.

Chromium (Debian's ``chromium``) runs from its command line: ``--dump-dom`` gives the DOM
after the page's scripts fetched the API and drew the charts, ``--screenshot`` the
artefact ``test-artifacts/<broker>/dashboard.png``. Every number is read back from the data-*
attributes of the page and compared with the known event set of test_reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from phasestream.api import attach_api
from phasestream.dashboard import attach_dashboard, static_dir
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess
from phasestream.settings import Settings
from tests.conftest import TEST_BROKER
from tests.integration.test_reports import ANALYTICS_ALL, ANALYTICS_COLUMNS
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture

pytestmark = pytest.mark.integration
# One folder per broker: `make test` runs both suites at once.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / TEST_BROKER
BROWSER_TIMEOUT_S = 90.0
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                  "source", "track", "wbr"})
# Analytics of the last 24 h: wf-old's phase 5 (three days ago) is outside.
LAST_DAY: list[dict[str, Any]] = [dict(zip(ANALYTICS_COLUMNS, row, strict=True))
                                  for row in ANALYTICS_ALL if row[0] != 5]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium not found: install Debian's 'chromium' package; "
                    "make test installs it where it can")
    return path


@contextlib.asynccontextmanager
async def dashboard(database: str, **options: Any) -> AsyncIterator[str]:
    """The API and the dashboard on one server; its base URL."""
    settings = Settings(database_url=database, **options)

    def routes(app: web.Application) -> None:
        attach_api(app, settings)
        attach_dashboard(app)

    app = build_app(CollectorRegistry(), {}, HttpAccess.from_settings(settings), routes)
    async with serving(app, "127.0.0.1", 0) as port:
        yield f"http://127.0.0.1:{port}"


async def browse(url: str, *, screenshot: Path | None = None, window: str = "1400,1000") -> str:
    """Load ``url`` in headless Chromium; the DOM after 8 s of (virtual) time.

    Runs as a subprocess of the event loop: the server answering the page lives on it.
    """
    with tempfile.TemporaryDirectory(prefix="phasestream-chromium-") as profile:
        args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--hide-scrollbars", f"--user-data-dir={profile}",
                "--virtual-time-budget=8000", f"--window-size={window}"]
        args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        process = await asyncio.create_subprocess_exec(
            *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=profile)
        try:
            out, err = await asyncio.wait_for(process.communicate(), BROWSER_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    assert process.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode()


class Node:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs, self.parts = tag, attrs, list[str]()

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())


class Dom(HTMLParser):
    """Every element with an id or a data-* attribute, with its text (children's too)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.nodes: list[Node] = []
        self._open: list[Node] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        if any(k == "id" or k.startswith("data-") for k in node.attrs):
            self.nodes.append(node)
        if tag not in VOID:
            self._open.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        if any(node.tag in {"title", "script", "style"} for node in self._open):
            return  # tooltips and code are not what the page shows
        for node in self._open:
            node.parts.append(data)

    def by_id(self, id_: str) -> Node:
        [node] = [n for n in self.nodes if n.attrs.get("id") == id_]
        return node

    def find(self, **attrs: str) -> list[Node]:
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.nodes
                if all(n.attrs.get(f"data-{k}") == v for k, v in wanted.items())]

    def metric(self, where: str, phase: int, metric: str) -> Node:
        key = "data-table" if where in {"analytics", "rollbacks"} else "data-chart"
        [node] = [n for n in self.nodes if n.attrs.get(key) == where
                  and n.attrs.get("data-phase") == str(phase)
                  and n.attrs.get("data-metric") == metric]
        return node

    def rows(self, table: str) -> list[dict[str, tuple[str, str]]]:
        """The rows of one table: field -> (data-value, shown text)."""
        rows: list[dict[str, tuple[str, str]]] = []
        for node in self.nodes:
            if node.tag == "tr" and node.attrs.get("data-table") == table:
                rows.append({})
            elif node.tag == "td" and "data-field" in node.attrs and rows \
                    and self._in(table, node):
                rows[-1][node.attrs["data-field"]] = (node.attrs["data-value"], node.text)
        return rows

    def _in(self, table: str, cell: Node) -> bool:
        index = self.nodes.index(cell)
        for node in reversed(self.nodes[:index]):
            if node.tag == "tr":
                return node.attrs.get("data-table") == table
        return False


def same(attribute: str, value: float | None) -> bool:
    """A data-value (JavaScript's rendering of the JSON number) against the API's value."""
    return attribute == "" if value is None else float(attribute) == value


async def test_dashboard_shows_the_api_numbers(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    async with dashboard(database) as base:
        async with aiohttp.ClientSession() as session, \
                session.get(f"{base}/api/analytics", params={"since": "24h"}) as response:
            api_items = (await response.json())["items"]
        dom = Dom(await browse(f"{base}/dashboard"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        shot.unlink(missing_ok=True)
        await browse(f"{base}/dashboard", screenshot=shot)
        # The whole page, tables included, for a reader of the artefacts.
        await browse(f"{base}/dashboard", screenshot=ARTIFACTS / "dashboard-full.png",
                     window="1400,1900")

    assert dom.by_id("status").attrs["data-state"] == "live"
    body = next(n for n in dom.nodes if n.tag == "body")
    assert body.attrs["data-state"] == "ready"
    assert int(body.attrs["data-refreshes"]) >= 2, "polled once only"  # 5 s, 8 s budget
    assert api_items == LAST_DAY  # the page asked the same question (default window 24 h)

    # Throughput chart and analytics table: every count of every phase, as the API has it.
    charted = sorted({int(n.attrs["data-phase"]) for n in dom.find(chart="throughput")
                      if "data-phase" in n.attrs})
    assert charted == [2, 3, 4]
    for row in LAST_DAY:
        for metric in ("started", "completed", "failed", "rolled_back"):
            for where in ("throughput", "analytics"):
                node = dom.metric(where, row["phase"], metric)
                assert (node.attrs["data-value"], node.text) == (str(row[metric]),
                                                                 str(row[metric]))
        for metric in ("completion_rate", "failure_rate", "rollback_rate"):
            for where in ("rates", "analytics"):
                assert same(dom.metric(where, row["phase"], metric).attrs["data-value"],
                            row[metric])
        for metric in ("p50_ms", "p95_ms", "p99_ms", "sla_ms", "over_sla"):
            assert same(dom.metric("durations", row["phase"], metric).attrs["data-value"],
                        row[metric])

    # What a reader sees: rates in %, durations in s, over-SLA bars marked, the SLA line.
    assert dom.metric("rates", 3, "completion_rate").text == "75%"
    assert dom.metric("rates", 2, "failure_rate").text == "100%"
    assert dom.metric("rates", 4, "completion_rate").text == "—"  # nothing finished
    assert dom.metric("analytics", 3, "rollback_rate").text == "25%"
    p95 = dom.metric("durations", 3, "p95_ms")
    assert (p95.text, p95.attrs["data-over-sla"]) == ("127.95 s", "true")
    p50 = dom.metric("durations", 3, "p50_ms")
    assert (p50.text, p50.attrs["data-over-sla"]) == ("2.5 s", "false")
    assert dom.metric("durations", 3, "p99_ms").text == "145.59 s"
    assert dom.metric("durations", 3, "sla_ms").text == "SLA 120 s"
    assert dom.metric("durations", 2, "p50_ms").attrs["data-over-sla"] == "true"  # 70 s > 60 s
    assert dom.metric("durations", 4, "p50_ms").text == "—"
    assert dom.metric("durations", 4, "sla_ms").text == "SLA 90 s"

    # Tiles: totals over the phases, violations per kind.
    totals = {m: dom.by_id(f"total-{m}").attrs["data-value"]
              for m in ("started", "completed", "failed", "rolled_back", "over_sla")}
    assert totals == {"started": "6", "completed": "3", "failed": "2", "rolled_back": "2",
                      "over_sla": "2"}
    assert [dom.by_id(f"kind-{k}").text for k in ("late_completed", "late_failed", "overdue")] \
        == ["1", "1", "1"]

    # Recent violations, newest first.
    violations = dom.rows("violations")
    assert [(v["kind"][1], v["workflow_id"][1], v["phase"][1]) for v in violations] == [
        ("overdue", "wf-e", "4"), ("late_failed", "wf-d", "2"), ("late_completed", "wf-c", "3")]
    assert [(v["duration_ms"][0], v["excess_ms"][1]) for v in violations[1:]] == [
        ("70000", "+10 s"), ("150000", "+30 s")]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", violations[0]["at"][1])

    # Rollbacks per phase and the chains.
    by_phase = [{k: v[0] for k, v in row.items()} for row in dom.rows("rollbacks")]
    assert by_phase == [
        {"phase": "2", "rollbacks": "1", "workflows": "1", "retries": "0", "gave_up": "1",
         "loops_stopped": "0"},
        {"phase": "3", "rollbacks": "1", "workflows": "1", "retries": "1", "gave_up": "0",
         "loops_stopped": "0"}]
    chains = dom.rows("chains")
    assert [(c["workflow_id"][1], c["rollbacks"][1], c["chain"][1]) for c in chains] == [
        ("wf-d", "2", "3->2 2->1")]

    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_dashboard_filters_go_to_the_api(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    async with dashboard(database) as base:
        dom = Dom(await browse(f"{base}/dashboard?since=all&phase=5&refresh=0"))
    assert {n.attrs.get("data-phase") for n in dom.find(chart="throughput")} == {None, "5"}
    assert dom.metric("throughput", 5, "completed").attrs["data-value"] == "1"
    p50 = dom.metric("durations", 5, "p50_ms")
    assert (p50.text, p50.attrs["data-over-sla"]) == ("25 s", "true")
    assert [(v["workflow_id"][1], v["kind"][1]) for v in dom.rows("violations")] == [
        ("wf-old", "late_completed")]
    assert dom.by_id("kind-late_completed").attrs["data-value"] == "1"
    [chains_empty] = [n for n in dom.nodes if n.attrs.get("id") == "table-chains"]
    assert "no workflow was rolled back more than once" in chains_empty.text
    assert dom.by_id("status").attrs["data-state"] == "paused"


async def test_dashboard_says_when_the_api_fails() -> None:
    async with dashboard("postgresql://nobody@127.0.0.1:1/none") as base:
        dom = Dom(await browse(f"{base}/dashboard?refresh=0"))
    body = next(n for n in dom.nodes if n.tag == "body")
    assert body.attrs["data-state"] == "error"
    assert dom.by_id("status").attrs["data-state"] == "error"
    error = dom.by_id("error")
    assert "hidden" not in error.attrs
    assert "api/analytics: 503" in error.text or "api/sla: 503" in error.text


async def test_assets_are_served_from_the_package_only(database: str) -> None:
    async with dashboard(database) as base, aiohttp.ClientSession(base) as session:
        async with session.get("/dashboard") as page:
            assert page.status == 200
            assert page.content_type == "text/html"
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
            html = await page.text()
        for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            assert f'dashboard/static/{asset}"' in html
            async with session.get(f"/dashboard/static/{asset}") as response:
                assert (response.status, response.content_type) == (200, kind)
        for missing in ("nope.js", "..%2Fdashboard.py", "dashboard.html.bak"):
            async with session.get(f"/dashboard/static/{missing}") as response:
                assert response.status == 404, missing
        async with session.get("/dashboard/", allow_redirects=False) as response:
            assert response.status == 308
    # No external network at runtime: no absolute URL but the SVG namespace.
    for entry in static_dir().iterdir():
        text = entry.read_text(encoding="utf-8")
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (entry.name, urls)
        assert "@import" not in text
        assert "@font-face" not in text
