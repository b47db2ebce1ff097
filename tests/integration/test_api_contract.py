"""The OpenAPI document against the real server and a real, seeded Postgres: schemathesis
generates requests from the document (positive mode: values the document allows) and
checks every answer (no 5xx, status codes and bodies as documented).

Two rules are not the document's to say (OpenAPI has no constraint across parameters):
``until`` must be after ``since``, so generated cases give one of them or neither; and a
time series holds at most MAX_BUCKETS buckets of its step, so cases whose window would hold
more (a 400 naming ``since``, which models.timeseries decides) are left out.

A bounded number of examples per operation keeps the run well under a minute; the server
runs on this test's event loop while Hypothesis drives blocking requests from a thread.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from prometheus_client import CollectorRegistry
from schemathesis import Case
from schemathesis.core.result import Err
from schemathesis.schemas import APIOperation

from models.report_filters import InvalidFilterError
from models.timeseries import parse_series
from phasestream.api import attach_api, openapi_document
from phasestream.http import build_app, serving
from phasestream.http_auth import HttpAccess
from phasestream.settings import Settings
from tests.integration.test_api import API_PATHS
from tests.integration.test_reports import seeded as seeded  # noqa: PLC0414  # the fixture

pytestmark = pytest.mark.integration
EXAMPLES_PER_OPERATION = 25


Operation = APIOperation[Any, Any, Any, Any]


def operations() -> list[Operation]:
    """Every operation of the document; one it cannot read fails the test, naming it."""
    schema = schemathesis.openapi.from_dict(openapi_document())
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found.append(result.ok())
    return found


def fuzz(operation: Operation, base_url: str) -> int:
    """Run the examples of one operation; how many requests were sent."""
    sent: list[Any] = []

    @examples(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy().filter(_one_bound_at_most).filter(_buckets_bounded))
    def check(case: Case[Operation]) -> None:
        sent.append(case.call_and_validate(base_url=base_url))

    check()
    return len(sent)


def _one_bound_at_most(case: Case[Operation]) -> bool:
    return not {"since", "until"} <= set(case.query or {})


def _buckets_bounded(case: Case[Operation]) -> bool:
    if case.operation.path != "/api/timeseries":
        return True
    query = case.query or {}
    try:
        parse_series(
            metric=query.get("metric"),
            step=query.get("step"),
            since=query.get("since"),
            until=query.get("until"),
            phase=None,
            user=None,
            now=datetime.now(UTC),
        )
    except InvalidFilterError as exc:
        return exc.name != "since"
    return True


async def test_every_operation_keeps_the_documented_contract(
    seeded: tuple[str, datetime], settings: Settings
) -> None:
    database, _ = seeded
    # The test's broker and (empty) dead-letter topic, for /api/dlq.
    served = Settings(
        database_url=database,
        kafka_bootstrap_servers=settings.bootstrap_servers,
        dlq_topic=settings.dlq_topic,
    )
    app = build_app(
        CollectorRegistry(),
        {},
        HttpAccess.from_settings(Settings()),
        lambda app: attach_api(app, served),
    )
    found = operations()
    assert {op.path for op in found} == API_PATHS
    async with serving(app, "127.0.0.1", 0) as port:
        for operation in found:
            sent = await asyncio.to_thread(fuzz, operation, f"http://127.0.0.1:{port}")
            assert sent >= 1, operation.path
