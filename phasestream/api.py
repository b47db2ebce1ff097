"""The reports as JSON over HTTP, on the server of /metrics: ``attach_api(app, settings)``.

Every query parameter is validated (unknown ones too, so a typo is not silently a
different question); a bad one is a 400 whose JSON names it. Lists are paged with
``limit`` and ``offset``; ``next_offset`` is null on the last page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

import asyncpg
from aiohttp import web
from multidict import MultiDict, MultiMapping

from models.errors import PhasestreamError
from models.report_filters import (
    InvalidFilterError,
    Page,
    ReportFilters,
    parse_filters,
    parse_page,
    parse_workflow_id,
)
from models.running import parse_running
from models.timeseries import parse_series
from phasestream.dlq_api import DlqUnavailableError, summary_cache
from phasestream.settings import Settings
from projections.database import Connection, open_pool, translate_errors
from projections.reports import analytics, history, running, sla, timeseries, workflows
from projections.reports.core import Report
from projections.reports.history import UnknownWorkflowError

Run = Callable[[Connection, ReportFilters, Page], Awaitable[Report]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FILTERS: Final = ("since", "until", "phase", "user")
ALLOWED: Final = frozenset({*FILTERS, "limit", "offset"})
RUNNING_ALLOWED: Final = frozenset({"phase", "user", "at_risk", "limit", "offset"})
SERIES_ALLOWED: Final = frozenset({*FILTERS, "metric", "step"})
SEARCH_ALLOWED: Final = frozenset({*ALLOWED, "prefix"})


class LazyPool:
    """One asyncpg pool, opened by the first request: the HTTP server (and /metrics) must
    come up even while Postgres is down. Closed on the application's cleanup."""

    def __init__(self, dsn: Callable[[], str]) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._lock:
            if self._pool is None:
                self._pool = await open_pool(self._dsn(), max_size=4)
        async with self._pool.acquire() as conn:
            yield conn

    async def close(self, _: web.Application | None = None) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


POOL: Final = web.AppKey("phasestream_api_pool", LazyPool)


def attach_api(app: web.Application, settings: Settings) -> None:
    """Add /api/analytics, /api/sla, /api/rollbacks, /api/workflows (search),
    /api/workflows/{id}, /api/running,
    /api/timeseries, /api/dlq and /api/openapi.json."""
    pool = LazyPool(lambda: settings.resolved_reader_url)
    app[POOL] = pool
    app.on_cleanup.append(pool.close)
    app.router.add_get("/api/analytics", _endpoint(analytics.analytics))
    app.router.add_get("/api/sla", _endpoint(sla.sla))
    app.router.add_get("/api/rollbacks", _endpoint(history.rollbacks))
    app.router.add_get("/api/workflows", _search)
    app.router.add_get("/api/workflows/{workflow_id}", _workflow)
    app.router.add_get("/api/running", _running(settings))
    app.router.add_get("/api/timeseries", _timeseries)
    app.router.add_get("/api/dlq", _dlq(settings))
    app.router.add_get("/api/openapi.json", _openapi)
    # Last, so that it only answers what no route above does: a client reads JSON here too.
    # GET only: another method on a known path stays a 405.
    app.router.add_get("/api/{tail:.*}", _not_found)


def parse_query(query: MultiMapping[str], *, now: datetime) -> tuple[ReportFilters, Page]:
    """Filters and page from query parameters; raises InvalidFilterError."""
    check_names(query, ALLOWED)
    filters = parse_filters(
        since=query.get("since"),
        until=query.get("until"),
        phase=query.get("phase"),
        user=query.get("user"),
        now=now,
    )
    return filters, parse_page(query.get("limit"), query.get("offset"))


def check_names(query: MultiMapping[str], allowed: frozenset[str]) -> None:
    """Refuse unknown and repeated parameters (a typo must not ask another question)."""
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise InvalidFilterError(unknown[0], f"unknown parameter; allowed: {sorted(allowed)}")
    repeated = [name for name in query if len(query.getall(name)) > 1]
    if repeated:
        raise InvalidFilterError(repeated[0], "given more than once")


def _endpoint(run: Run) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await _respond(request, run)

    return handle


async def _workflow(request: web.Request) -> web.StreamResponse:
    async def run(conn: Connection, filters: ReportFilters, page: Page) -> Report:
        # Validated by _respond before any query runs.
        workflow_id = request.match_info["workflow_id"]
        return await history.workflow(conn, workflow_id, filters, page)

    return await _respond(request, run)


async def _search(request: web.Request) -> web.StreamResponse:
    """/api/workflows?prefix=&user=: workflows by id prefix and user, paged."""
    query = request.query
    try:
        check_names(query, SEARCH_ALLOWED)
        prefix = _prefix(query.get("prefix"))
        rest = MultiDict((k, v) for k, v in query.items() if k != "prefix")
        filters, page = parse_query(rest, now=datetime.now(UTC))
    except InvalidFilterError as exc:
        return _error(400, str(exc), parameter=exc.name)
    return await _answer(request, lambda c: workflows.search(c, prefix, filters, page), page)


def _prefix(text: str | None) -> str | None:
    """A workflow id's bounds (1-255 characters, no NUL), named as the parameter."""
    if text is None:
        return None
    try:
        return parse_workflow_id(text)
    except InvalidFilterError as exc:
        raise InvalidFilterError("prefix", exc.reason) from None


async def _respond(request: web.Request, run: Run) -> web.StreamResponse:
    """Validate, query, shape; map our errors onto 400, 404 and 503."""
    try:
        filters, page = parse_query(request.query, now=datetime.now(UTC))
        if "workflow_id" in request.match_info:
            parse_workflow_id(request.match_info["workflow_id"])  # 400 before any query
        report = await translate_errors(lambda: _fetch(request.app[POOL], run, filters, page))
    except InvalidFilterError as exc:
        return _error(400, str(exc), parameter=exc.name)
    except UnknownWorkflowError as exc:
        return _error(404, str(exc))
    except PhasestreamError as exc:  # the database cannot be reached, or is not configured
        return _error(503, str(exc))
    body: dict[str, Any] = report.as_json()
    body.update(limit=page.limit, offset=page.offset, next_offset=report.next_offset)
    return web.json_response(body)


def _running(settings: Settings) -> Handler:
    """/api/running: phases in flight by time left, with the freshness of the answer."""
    consumers = settings.consumer_roles

    async def handle(request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            check_names(query, RUNNING_ALLOWED)
            asked = parse_running(
                phase=query.get("phase"),
                user=query.get("user"),
                at_risk=query.get("at_risk"),
                now=datetime.now(UTC),
                lookback=timedelta(hours=settings.running_lookback_hours),
                share=settings.running_at_risk_share,
            )
            page = parse_page(query.get("limit"), query.get("offset"))
        except InvalidFilterError as exc:
            return _error(400, str(exc), parameter=exc.name)
        return await _answer(request, lambda c: running.running(c, asked, page, consumers), page)

    return handle


async def _timeseries(request: web.Request) -> web.StreamResponse:
    """/api/timeseries: one metric per bucket of the audit log, zero-filled."""
    query = request.query
    try:
        check_names(query, SERIES_ALLOWED)
        asked = parse_series(
            metric=query.get("metric"),
            step=query.get("step"),
            since=query.get("since"),
            until=query.get("until"),
            phase=query.get("phase"),
            user=query.get("user"),
            now=datetime.now(UTC),
        )
    except InvalidFilterError as exc:
        return _error(400, str(exc), parameter=exc.name)
    return await _answer(request, lambda c: timeseries.series(c, asked), None)


def _dlq(settings: Settings) -> Handler:
    """/api/dlq: the dead letters by reason, field and source topic (phasestream/dlq_api.py)."""
    cache = summary_cache(settings)

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            check_names(request.query, frozenset())
        except InvalidFilterError as exc:
            return _error(400, str(exc), parameter=exc.name)
        try:
            summary = await cache.summary()
        except DlqUnavailableError as exc:
            return _error(503, str(exc))
        return web.json_response(summary.as_json())

    return handle


async def _answer(
    request: web.Request, run: Callable[[Connection], Awaitable[Report]], page: Page | None
) -> web.StreamResponse:
    """Run a validated query; 503 when the database cannot answer."""

    async def fetch() -> Report:
        async with request.app[POOL].connection() as conn:
            return await run(conn)

    try:
        report = await translate_errors(fetch)
    except PhasestreamError as exc:
        return _error(503, str(exc))
    body: dict[str, Any] = report.as_json()
    if page is not None:
        body.update(limit=page.limit, offset=page.offset, next_offset=report.next_offset)
    return web.json_response(body)


async def _fetch(pool: LazyPool, run: Run, filters: ReportFilters, page: Page) -> Report:
    async with pool.connection() as conn:
        return await run(conn, filters, page)


def _error(status: int, message: str, **fields: str) -> web.Response:
    return web.json_response({"error": message, **fields}, status=status)


async def _not_found(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"error": f"no endpoint {request.path}; the endpoints are listed at /api/openapi.json"},
        status=404,
    )


async def _openapi(_: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of these endpoints, shipped as phasestream/openapi.json."""
    text = resources.files("phasestream").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document
