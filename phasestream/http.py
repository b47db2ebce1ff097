"""The HTTP server of every consumer process: /metrics and /healthz (and what routes add).

Every resource a stranger can make it hold is bounded: idle keep-alive connections close
after KEEPALIVE_S (aiohttp's default is an hour), request bodies and headers are capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

from phasestream.auth import CHALLENGE
from phasestream.http_auth import HttpAccess, guard

log = logging.getLogger(__name__)
Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S: Final = 3.0
KEEPALIVE_S: Final = 75.0
#: Every route is a GET: a body beyond a few KiB is not a request of ours.
MAX_BODY_BYTES: Final = 64 * 1024
MAX_HEADER_BYTES: Final = 8190


def build_app(
    registry: CollectorRegistry,
    checks: Mapping[str, Check],
    access: HttpAccess,
    routes: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """/metrics and /healthz, plus what ``routes`` adds (e.g. the notifier's /ws), behind
    ``access`` (Host allowlist, tokens)."""

    async def metrics(request: web.Request) -> web.Response:
        authorised = access.metrics_authorised(request)
        if authorised is False:
            return web.json_response(
                {
                    "error": "unauthorised",
                    "reason": "/metrics needs "
                    "'Authorization: Bearer <PHASESTREAM_HTTP_METRICS_TOKEN>'",
                },
                status=401,
                headers=CHALLENGE,
            )
        if authorised or access.exemplars:
            # OpenMetrics (with exemplars: user and workflow ids) when the scraper asks for it.
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            return web.Response(body=encoder(registry), headers={"Content-Type": content_type})
        # The text format has no exemplars: nothing but bounded labels for an open scrape.
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        results = dict(
            zip(
                checks,
                await asyncio.gather(*(_run(name, c) for name, c in checks.items())),
                strict=True,
            )
        )
        healthy = all(value == "ok" for value in results.values())
        return web.json_response(
            {"status": "ok" if healthy else "unavailable", **results},
            status=200 if healthy else 503,
        )

    app = web.Application(
        middlewares=[guard(access)],
        client_max_size=MAX_BODY_BYTES,
        handler_args={"max_field_size": MAX_HEADER_BYTES, "max_line_size": MAX_HEADER_BYTES},
    )
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if routes is not None:
        routes(app)
    return app


async def _run(name: str, check: Check) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure of a dependency is "not ready"
        # /healthz is open to anyone: it names the kind of failure, the log says the rest
        # (an error text can carry addresses, user names, parts of a URL).
        log.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
        return f"error: {type(exc).__name__}"
    return "ok"


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app``; yield the port it listens on (useful when 0 asked for a free one)."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("HTTP server: http://%s:%d/metrics and /healthz", host, bound)
    try:
        yield int(bound)
    finally:
        await runner.cleanup()
