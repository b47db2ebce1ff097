"""The dashboard's sign-in in a real browser: headless Chromium driven over the DevTools
protocol (typing into the form, clicking, reading the DOM and sessionStorage)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from phasestream.auth import mint_token
from tests.integration.test_dashboard import ARTIFACTS, BROWSER_TIMEOUT_S, chromium, dashboard
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture

pytestmark = pytest.mark.integration
SECRET = "dashboard-test-secret-of-at-least-32-bytes"


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
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
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

    async def type_token(self, token: str) -> None:
        """As a person would: focus the field, type, press the button."""
        await self.js("document.getElementById('signin-token').focus()")
        await self.call("Input.insertText", text=token)
        box = await self.js("(() => { const r = document.getElementById('signin-submit')"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, "
                            "r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                            button="left", clickCount=1)


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Page]:
    with tempfile.TemporaryDirectory(prefix="phasestream-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", "--window-size=1400,1000", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=profile,
            # Its own process group: its helpers (renderer, crashpad) die with it, before the
            # profile directory they write into is removed.
            start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + BROWSER_TIMEOUT_S
            while not port_file.exists() or not port_file.read_text().strip():
                assert process.returncode is None, "chromium exited"
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                await asyncio.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
                [tab] = [t for t in targets if t["type"] == "page"]
                async with session.ws_connect(tab["webSocketDebuggerUrl"],
                                              max_msg_size=0) as ws:
                    yield Page(ws)
        finally:
            await _kill_group(process)


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


async def test_sign_in_shows_the_data_and_a_refused_token_says_why(
        seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    analyst = mint_token(SECRET, "ann", 300, role="analyst")
    async with dashboard(database, jwt_secret=SECRET) as base, browser() as page:
        await page.call("Page.navigate", url=f"{base}/dashboard?refresh=0")
        await page.state("signin")
        assert await page.js("document.getElementById('signin').hidden") is False
        assert await page.js("document.getElementById('signin-message').textContent") == (
            "This server needs a token to show its data.")

        # A token signed with another key: refused, and the page says why.
        await page.type_token(mint_token("not-the-server-secret-but-32-bytes-long", "ann",
                                         300, role="analyst"))
        await page.until("document.getElementById('signin-message').dataset.code "
                         "=== 'bad_signature'")
        await page.state("signin")
        assert await page.js("document.getElementById('signin-message').textContent") == (
            "The token was refused: the token's signature is not valid.")
        assert await page.js("sessionStorage.length") == 0  # a refused token is not kept

        # A user's /ws token has no analyst role: 403, said as such.
        await page.type_token(mint_token(SECRET, "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f", 300))
        await page.until("document.getElementById('signin-message').dataset.code "
                         "=== 'forbidden'")
        message = await page.js("document.getElementById('signin-message').textContent")
        assert message == ("This token may not read the data: the token's role is none; "
                           "reading this needs admin or analyst.")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)  # what a refused reader sees
        shot = await page.call("Page.captureScreenshot", format="png")
        (ARTIFACTS / "dashboard-signin.png").write_bytes(base64.b64decode(shot["data"]))

        # The analyst's token: the data, as the API has it.
        await page.type_token(analyst)
        await page.state("ready")
        assert await page.js("document.getElementById('total-started').dataset.value") == "6"
        assert await page.js("document.getElementById('kind-overdue').dataset.value") == "1"
        assert await page.js("document.getElementById('signin').hidden") is True
        assert await page.js(f"sessionStorage.getItem('phasestream.token') === {analyst!r}")
        assert analyst not in await page.js("location.href")
        assert await page.js("document.cookie") == ""

        # Asked once: a reload in the same tab signs in from sessionStorage.
        await page.call("Page.reload")
        await page.state("ready")

        # Expired while the page is open: the next refresh asks again, saying so.
        expired = jwt.encode({"sub": "ann", "role": "analyst", "exp": int(time.time()) - 1},
                             SECRET, algorithm="HS256")
        await page.js(f"sessionStorage.setItem('phasestream.token', {expired!r})")
        await page.js("document.getElementById('filter-phase').value = '3';"
                      "document.getElementById('filter-phase').dispatchEvent("
                      "new Event('change'))")
        await page.state("signin")
        assert await page.js("document.getElementById('signin-message').textContent") == (
            "Your token has expired: sign in with a new one.")
