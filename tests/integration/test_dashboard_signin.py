"""The dashboard's sign-in in a real browser: headless Chromium driven over the DevTools
protocol (typing into the form, clicking, reading the DOM and sessionStorage)."""

from __future__ import annotations

import base64
import time
from datetime import datetime

import jwt
import pytest

from phasestream.auth import mint_token
from tests.integration.dashboard_browser import ARTIFACTS, browser, dashboard
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture

pytestmark = pytest.mark.integration
SECRET = "dashboard-test-secret-of-at-least-32-bytes"


async def test_sign_in_shows_the_data_and_a_refused_token_says_why(
    seeded: tuple[str, datetime],
) -> None:
    database, _ = seeded
    analyst = mint_token(SECRET, "ann", 300, role="analyst")
    async with dashboard(database, jwt_secret=SECRET) as base, browser() as page:
        await page.call("Page.navigate", url=f"{base}/dashboard?refresh=0")
        await page.state("signin")
        assert await page.js("document.getElementById('signin').hidden") is False
        assert await page.js("document.getElementById('signin-message').textContent") == (
            "This server needs a token to show its data."
        )

        # A token signed with another key: refused, and the page says why.
        await page.type_token(
            mint_token("not-the-server-secret-but-32-bytes-long", "ann", 300, role="analyst")
        )
        await page.until(
            "document.getElementById('signin-message').dataset.code === 'bad_signature'"
        )
        await page.state("signin")
        assert await page.js("document.getElementById('signin-message').textContent") == (
            "The token was refused: the token's signature is not valid."
        )
        assert await page.js("sessionStorage.length") == 0  # a refused token is not kept

        # A user's /ws token has no analyst role: 403, said as such.
        await page.type_token(mint_token(SECRET, "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f", 300))
        await page.until("document.getElementById('signin-message').dataset.code === 'forbidden'")
        message = await page.js("document.getElementById('signin-message').textContent")
        assert message == (
            "This token may not read the data: the token's role is none; "
            "reading this needs admin or analyst."
        )
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
        expired = jwt.encode(
            {"sub": "ann", "role": "analyst", "exp": int(time.time()) - 1},
            SECRET,
            algorithm="HS256",
        )
        await page.js(f"sessionStorage.setItem('phasestream.token', {expired!r})")
        await page.js(
            "document.getElementById('filter-phase').value = '3';"
            "document.getElementById('filter-phase').dispatchEvent("
            "new Event('change'))"
        )
        await page.state("signin")
        assert await page.js("document.getElementById('signin-message').textContent") == (
            "Your token has expired: sign in with a new one."
        )
