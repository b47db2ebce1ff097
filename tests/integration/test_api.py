"""The reports' HTTP API on a real server and a real Postgres."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Final

import aiohttp
import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from phasestream.api import attach_api, openapi_document
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess
from phasestream.settings import Settings
from tests.conftest import with_database
from tests.integration.test_reports import (
    ANALYTICS_ALL,
    ANALYTICS_COLUMNS,
    USER_B,
    iso,
    wf_d_summary,
)
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture

pytestmark = pytest.mark.integration
#: Every path the API serves, as its OpenAPI document lists them.
API_PATHS: Final = frozenset(
    {
        "/api/analytics",
        "/api/sla",
        "/api/rollbacks",
        "/api/workflows",
        "/api/workflows/{workflow_id}",
        "/api/running",
        "/api/timeseries",
        "/api/dlq",
        "/api/openapi.json",
    }
)


@contextlib.asynccontextmanager
async def api(database: str, **options: Any) -> AsyncIterator[aiohttp.ClientSession]:
    async with served(Settings(database_url=database, **options)) as session:
        yield session


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    """The API as ``settings`` configure it, on a free port; a session with its base URL."""
    app = build_app(
        CollectorRegistry(),
        {},
        HttpAccess.from_settings(settings),
        lambda app: attach_api(app, settings),
    )
    async with (
        serving(app, "127.0.0.1", 0) as port,
        aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session,
    ):
        yield session


async def get(
    session: aiohttp.ClientSession, path: str, token: str | None = None, **params: str
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(path, params=params, headers=headers) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def test_analytics_numbers(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    async with api(database) as session:
        status, body = await get(session, "/api/analytics")
        assert status == 200
        assert body["items"] == [
            dict(zip(ANALYTICS_COLUMNS, row, strict=True)) for row in ANALYTICS_ALL
        ]
        assert (body["limit"], body["offset"], body["next_offset"]) == (100, 0, None)
        status, body = await get(session, "/api/analytics", phase="3", user=str(USER_B))
        assert [(r["started"], r["p50_ms"]) for r in body["items"]] == [(2, 76000.0)]


async def test_sla_rollbacks_and_workflow(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    async with api(database) as session:
        _, sla = await get(session, "/api/sla", since="24h")
        assert [(v["kind"], v["workflow_id"]) for v in sla["items"]] == [
            ("overdue", "wf-e"),
            ("late_failed", "wf-d"),
            ("late_completed", "wf-c"),
        ]
        assert [(k["kind"], k["violations"]) for k in sla["by_kind"]] == [
            ("late_completed", 1),
            ("late_failed", 1),
            ("overdue", 1),
        ]
        _, rollbacks = await get(session, "/api/rollbacks")
        assert [(c["workflow_id"], c["chain"]) for c in rollbacks["items"]] == [
            ("wf-d", "3->2 2->1")
        ]
        assert [(p["phase"], p["rollbacks"]) for p in rollbacks["by_phase"]] == [(2, 1), (3, 1)]
        status, timeline = await get(session, "/api/workflows/wf-d", phase="2")
        assert status == 200
        assert timeline["workflow_id"] == "wf-d"
        assert [(t["status"], t["at"]) for t in timeline["items"]] == [
            ("started", iso(t0 + timedelta(minutes=5))),
            ("failed", iso(t0 + timedelta(minutes=5, seconds=70))),
            ("rolled_back", iso(t0 + timedelta(minutes=7))),
        ]
        assert [v["kind"] for v in timeline["violations"]] == ["late_failed"]
        assert [c["kind"] for c in timeline["commands"]] == ["rollback", "gave_up"]
        # The summary is over the whole workflow, whatever the filters (as report workflow).
        assert timeline["summary"] == wf_d_summary(t0)
        conforms(timeline, "WorkflowPage")
        status, missing = await get(session, "/api/workflows/wf-none")
        assert (status, missing["error"]) == (404, "no events of workflow 'wf-none'")


async def test_pagination_walks_every_item_once(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    async with api(database) as session:
        seen, offset, pages = [], 0, 0
        while offset is not None:
            status, body = await get(session, "/api/workflows/wf-d", limit="4", offset=str(offset))
            assert status == 200
            assert body["limit"] == 4
            seen += [t["event_id"] for t in body["items"]]
            offset, pages = body["next_offset"], pages + 1
        assert (len(seen), len(set(seen)), pages) == (6, 6, 2)
        _, beyond = await get(session, "/api/sla", offset="50")
        assert (beyond["items"], beyond["next_offset"]) == ([], None)


@pytest.mark.parametrize(
    ("path", "params", "parameter", "message"),
    [
        ("/api/analytics", {"since": "soon"}, "since", "since: expected a duration like 24h"),
        ("/api/sla", {"phase": "0"}, "phase", "phase: must be a phase from 1 to 7, got '0'"),
        ("/api/rollbacks", {"user": "x"}, "user", "user: must be a UUID, got 'x'"),
        ("/api/sla", {"limit": "0"}, "limit", "limit: must be from 1 to 1000, got '0'"),
        ("/api/sla", {"limit": "1001"}, "limit", "limit: must be from 1 to 1000"),
        ("/api/sla", {"offset": "-1"}, "offset", "offset: must be 0 or more, got '-1'"),
        ("/api/sla", {"offset": "1.5"}, "offset", "offset: must be a whole number"),
        ("/api/analytics", {"phse": "3"}, "phse", "phse: unknown parameter"),
        ("/api/workflows/wf-d", {"until": "2026-01-01"}, "until", "the timestamp needs an offset"),
        ("/api/analytics", {"since": "1h", "until": "3h"}, "until", "until: must be after since"),
        ("/api/sla", {"since": "999999999w"}, "since", "since: at most 9999w back from now"),
        ("/api/sla", {"since": "800000d"}, "since", "since: at most 99999d back from now"),
        ("/api/sla", {"until": "999999999w"}, "until", "until: at most 9999w back from now"),
        (
            "/api/sla",
            {"since": "9999-12-31T23:59:59-23:59"},
            "since",
            "since: the year must be from 1000 to 8999",
        ),
        ("/api/sla", {"offset": "9999999999"}, "offset", "offset: must be a whole number"),
    ],
)
async def test_bad_parameters_are_400_with_a_message(
    database: str, path: str, params: dict[str, str], parameter: str, message: str
) -> None:
    async with api(database) as session:
        status, body = await get(session, path, **params)
    assert status == 400
    assert body["parameter"] == parameter
    assert message in body["error"]


async def test_repeated_parameter_is_400(database: str) -> None:
    async with api(database) as session, session.get("/api/sla?phase=1&phase=2") as response:
        assert response.status == 400
        assert (await response.json())["error"] == "phase: given more than once"


async def test_unreachable_database_is_503() -> None:
    async with api("postgresql://nobody@127.0.0.1:1/none") as session:
        status, body = await get(session, "/api/analytics")
    assert status == 503
    assert "error" in body


async def test_windows_at_the_bounds_are_answered(database: str) -> None:
    async with api(database) as session:
        for since, until in [
            ("9999w", "0s"),
            ("1000-01-01T00:00:00+23:59", "8999-12-31T23:59:59.999999-23:59"),
        ]:
            status, body = await get(session, "/api/sla", since=since, until=until)
            assert (status, body["items"]) == (200, [])


async def test_unknown_database_is_503_naming_it(database: str) -> None:
    async with api(with_database(database, "no_such_db")) as session:
        status, body = await get(session, "/api/analytics")
    assert status == 503
    assert body["error"] == 'InvalidCatalogNameError: database "no_such_db" does not exist'


async def test_openapi_document_lists_the_paths(database: str) -> None:
    async with api(database) as session:
        status, document = await get(session, "/api/openapi.json")
    assert status == 200
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == API_PATHS
    names = {
        p["$ref"].rsplit("/", 1)[-1] for p in document["paths"]["/api/sla"]["get"]["parameters"]
    }
    assert names == {"since", "until", "phase", "user", "limit", "offset"}
    assert set(document["components"]["parameters"]) == names
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert document["security"] == [{"bearer": []}, {}]  # none needed on an open server
    assert document["paths"]["/api/openapi.json"]["get"]["security"] == []


def conforms(body: dict[str, Any], schema: str) -> None:
    """``body`` against a schema of the shipped OpenAPI document (jsonschema raises)."""
    document = openapi_document()
    jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    ).validate(body)


@pytest.mark.parametrize("path", ["/api/nothing", "/api/", "/api/sla/extra"])
async def test_an_unknown_api_path_is_a_json_404(database: str, path: str) -> None:
    async with api(database) as session:
        status, body = await get(session, path)
    assert status == 404
    assert body == {"error": f"no endpoint {path}; the endpoints are listed at /api/openapi.json"}


async def test_a_known_api_path_with_another_method_is_still_405(database: str) -> None:
    async with api(database) as session, session.post("/api/sla") as response:
        assert response.status == 405
