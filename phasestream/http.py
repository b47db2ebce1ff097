"""The HTTP server of every consumer process: /metrics and /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)
Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 3.0


def build_app(registry: CollectorRegistry, checks: Mapping[str, Check],
              routes: Callable[[web.Application], None] | None = None) -> web.Application:
    """/metrics and /healthz, plus what ``routes`` adds (e.g. the notifier's /ws)."""
    async def metrics(request: web.Request) -> web.Response:
        # OpenMetrics (with exemplars) when the scraper asks for it, else the text format.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        results = dict(zip(checks, await asyncio.gather(*(_run(c) for c in checks.values())),
                           strict=True))
        healthy = all(value == "ok" for value in results.values())
        return web.json_response({"status": "ok" if healthy else "unavailable", **results},
                                 status=200 if healthy else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if routes is not None:
        routes(app)
    return app


async def _run(check: Check) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure of a dependency is "not ready", said in words
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app``; yield the port it listens on (useful when 0 asked for a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("HTTP server: http://%s:%d/metrics and /healthz", host, bound)
    try:
        yield int(bound)
    finally:
        await runner.cleanup()
