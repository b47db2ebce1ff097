"""GET /api/workflows: search by a prefix of the workflow id and by user, on a real Postgres."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.integration.test_api import api, conforms, get
from tests.integration.test_reports import USER_A, USER_B, iso
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture

pytestmark = pytest.mark.integration


async def test_search_by_prefix_and_user(seeded: tuple[str, datetime]) -> None:
    database, t0 = seeded
    async with api(database) as session:
        status, every = await get(session, "/api/workflows")
        assert status == 200
        conforms(every, "WorkflowSearchPage")
        # Most recently active first: wf-e's start at +10 min, wf-d's rollback at +7 min...
        assert [w["workflow_id"] for w in every["items"]] == [
            "wf-e",
            "wf-d",
            "wf-c",
            "wf-b",
            "wf-a",
            "wf-old",
        ]
        wf_d = every["items"][1]
        assert wf_d == {
            "workflow_id": "wf-d",
            "user_id": str(USER_B),
            "events": 6,
            "last_phase": 2,
            "last_status": "rolled_back",
            "first_at": wf_d["first_at"],
            "last_at": iso(t0 + timedelta(minutes=7)),
        }

        _, found = await get(session, "/api/workflows", prefix="wf-o")
        assert [w["workflow_id"] for w in found["items"]] == ["wf-old"]
        assert found["prefix"] == "wf-o"
        _, found = await get(session, "/api/workflows", user=str(USER_A), since="24h")
        assert [w["workflow_id"] for w in found["items"]] == ["wf-e", "wf-b", "wf-a"]
        _, found = await get(session, "/api/workflows", prefix="wf-", limit="2", offset="2")
        assert ([w["workflow_id"] for w in found["items"]], found["next_offset"]) == (
            ["wf-c", "wf-b"],
            4,
        )
        _, found = await get(session, "/api/workflows", prefix="%")  # no LIKE pattern
        assert found["items"] == []


async def test_search_refuses_bad_parameters(seeded: tuple[str, datetime]) -> None:
    database, _ = seeded
    async with api(database) as session:
        for params, name in (
            ({"prefix": "x" * 256}, "prefix"),
            ({"limit": "100000"}, "limit"),
            ({"user": "bob"}, "user"),
            ({"q": "wf"}, "q"),
        ):
            status, body = await get(session, "/api/workflows", **params)
            assert (status, body["parameter"]) == (400, name), params
            assert body["error"].startswith(f"{name}: ")
