"""The built-in dashboard: ``attach_dashboard(app)`` adds ``/dashboard`` and its assets.

For the embedded default, where no Grafana runs. The page is static HTML, CSS and vanilla
JavaScript shipped in ``phasestream/static/``; the script polls the JSON API of
``phasestream.api`` (mounted on the same server) and draws its charts as inline SVG.
Nothing is fetched from elsewhere: the Content-Security-Policy allows this origin only.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from aiohttp import web

CONTENT_TYPES: Final = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}
# Same origin only: no CDN, no web font, no third-party request can sneak in.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_dir() -> Traversable:
    """The packaged assets: ``phasestream/static``."""
    return resources.files("phasestream").joinpath("static")


def attach_dashboard(app: web.Application) -> None:
    """Add GET /dashboard (the page), /dashboard/static/{name} (its assets) and / (a
    redirect to the page).

    The page reads /api/analytics, /api/sla and /api/rollbacks: mount ``attach_api`` on the
    same application.
    """
    assets = {
        entry.name: entry
        for entry in static_dir().iterdir()
        if entry.is_file() and _content_type(entry.name) is not None
    }

    async def page(_: web.Request) -> web.StreamResponse:
        return _asset(assets["dashboard.html"])

    async def slash(_: web.Request) -> web.StreamResponse:
        # The page links its assets relatively (it may sit behind a path prefix).
        raise web.HTTPPermanentRedirect("../dashboard")

    async def home(_: web.Request) -> web.StreamResponse:
        # A newcomer opens the bare address; temporary, so a browser keeps asking "/".
        raise web.HTTPTemporaryRedirect("dashboard")

    async def asset(request: web.Request) -> web.StreamResponse:
        entry = assets.get(request.match_info["name"])  # an allowlist: no path traversal
        if entry is None:
            raise web.HTTPNotFound(text="no such asset")
        return _asset(entry)

    app.router.add_get("/", home)
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/", slash)
    app.router.add_get("/dashboard/static/{name}", asset)


def _content_type(name: str) -> str | None:
    suffix = name[name.rfind(".") :] if "." in name else ""
    return CONTENT_TYPES.get(suffix)


def _asset(entry: Traversable) -> web.Response:
    return web.Response(
        body=entry.read_bytes(),
        content_type=_content_type(entry.name),
        charset="utf-8",
        headers=HEADERS,
    )
