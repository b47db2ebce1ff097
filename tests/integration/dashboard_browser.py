"""What the dashboard's browser tests share: the server (API + page), headless Chromium
driven over the DevTools protocol, and a parser of the DOM it dumps.

Chromium (Debian's ``chromium``) runs in its own process group, killed as a whole, so its
helpers (renderer, crashpad) never outlive a test. Every number is read back from the
data-* attributes the page writes next to the text it shows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from phasestream.api import attach_api
from phasestream.dashboard import attach_dashboard
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess
from phasestream.settings import Settings
from tests.conftest import TEST_BROKER

# One folder per broker: `make test` runs both suites at once.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / TEST_BROKER
BROWSER_TIMEOUT_S = 90.0
VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }
)


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(
            "chromium not found: install Debian's 'chromium' package; "
            "make test installs it where it can"
        )
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


class Page:
    """One browser tab, spoken to over the Chrome DevTools Protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self._ws.send_json({"id": message_id, "method": method, "params": params})
        while True:  # events come in between; the answer carries our id
            message = await self._ws.receive_json(timeout=BROWSER_TIMEOUT_S)
            if message.get("id") == message_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def js(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def until(self, expression: str, timeout_s: float = 30) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.js(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"never true: {expression}"
            await asyncio.sleep(0.1)

    async def state(self, wanted: str) -> None:
        await self.until(f"document.body && document.body.dataset.state === {wanted!r}")

    async def open(self, url: str) -> None:
        """Navigate and wait for the first successful poll (or the error/sign-in state)."""
        await self.call("Page.navigate", url=url)
        await self.until(
            "document.readyState === 'complete' && document.body && "
            "document.body.dataset.state !== 'loading'"
        )

    async def dom(self) -> Dom:
        return Dom(await self.js("document.documentElement.outerHTML"))

    async def width(self, width: int, height: int = 900, *, redraw: bool = True) -> None:
        """Resize the viewport (a phone at 390) and wait for the page to redraw at it."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        await self.until(f"window.innerWidth === {width}")
        if redraw:
            await self.until(f"document.body.dataset.drawnAt === '{width}'")

    async def screenshot(self, path: Path, *, full: bool = True) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full:
            size = (await self.call("Page.getLayoutMetrics"))["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
        shot = await self.call("Page.captureScreenshot", **params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def type_into(self, element_id: str, text: str) -> None:
        """As a person would: focus the field, clear it, type."""
        await self.js(
            f"(() => {{ const e = document.getElementById({element_id!r}); "
            "e.value = ''; e.focus(); })()"
        )
        if text:
            await self.call("Input.insertText", text=text)

    async def click(self, selector: str) -> None:
        """A real mouse click on the middle of the first element matching ``selector``."""
        box = await self.js(
            f"(() => {{ const e = document.querySelector({selector!r}); "
            "e.scrollIntoView({block: 'center'}); "
            "const r = e.getBoundingClientRect(); "
            "return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    async def type_token(self, token: str) -> None:
        await self.type_into("signin-token", token)
        await self.click("#signin-submit")


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Page]:
    with tempfile.TemporaryDirectory(prefix="phasestream-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1400,1000",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=profile,
            # Its own process group: its helpers (renderer, crashpad) die with it, before the
            # profile directory they write into is removed.
            start_new_session=True,
        )
        try:
            port = await _devtools_port(process, Path(profile) / "DevToolsActivePort")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
                [tab] = [t for t in targets if t["type"] == "page"]
                async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    yield Page(ws)
        finally:
            await _kill_group(process)


async def _devtools_port(process: asyncio.subprocess.Process, port_file: Path) -> int:
    deadline = time.monotonic() + BROWSER_TIMEOUT_S
    while not port_file.exists() or not port_file.read_text().strip():
        assert process.returncode is None, "chromium exited"
        assert time.monotonic() < deadline, "chromium did not open its DevTools port"
        await asyncio.sleep(0.1)
    return int(port_file.read_text().split()[0])


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """Kill chromium and every process of its group, and wait until none is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
    deadline = time.monotonic() + BROWSER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)


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
        return [
            n for n in self.nodes if all(n.attrs.get(f"data-{k}") == v for k, v in wanted.items())
        ]

    def metric(self, where: str, phase: int, metric: str) -> Node:
        key = "data-table" if where in {"analytics", "rollbacks"} else "data-chart"
        [node] = [
            n
            for n in self.nodes
            if n.attrs.get(key) == where
            and n.attrs.get("data-phase") == str(phase)
            and n.attrs.get("data-metric") == metric
        ]
        return node

    def rows(self, table: str) -> list[dict[str, tuple[str, str]]]:
        """The rows of one table: field -> (data-value, shown text)."""
        rows: list[dict[str, tuple[str, str]]] = []
        current: str | None = None
        for node in self.nodes:
            if node.tag == "tr":
                current = node.attrs.get("data-table")
                if current == table:
                    rows.append({})
            elif node.tag == "td" and "data-field" in node.attrs and current == table:
                rows[-1][node.attrs["data-field"]] = (node.attrs["data-value"], node.text)
        return rows

    def row_nodes(self, table: str) -> list[Node]:
        return [n for n in self.nodes if n.tag == "tr" and n.attrs.get("data-table") == table]


def same(attribute: str, value: float | None) -> bool:
    """A data-value (JavaScript's rendering of the JSON number) against the API's value."""
    return attribute == "" if value is None else float(attribute) == value
