"""GET /api/dlq on a real server and broker: the counts `phasestream dlq summary` gives for
the same letters, bounded to the newest, and a 503 in one line when the broker is away."""

from __future__ import annotations

from typing import Any

import pytest

from phasestream.settings import Settings
from tests.conftest import free_port
from tests.integration.test_api import conforms, get, served
from tests.integration.test_dlq_cli import dlq, json_of, rejected

pytestmark = pytest.mark.integration
SHAPE = ("total", "scanned", "truncated", "by_reason", "by_field", "topics")


async def summary(settings: Settings, **options: Any) -> dict[str, Any]:
    async with served(settings.model_copy(update=options)) as session:
        status, body = await get(session, "/api/dlq")
    assert status == 200, body
    conforms(body, "DlqSummary")
    return body


async def test_the_endpoint_counts_what_the_cli_counts_and_reads_only_the_newest(
    settings: Settings,
) -> None:
    empty = await summary(settings)
    assert (empty["total"], empty["truncated"], empty["by_reason"]) == (0, False, [])
    await rejected(settings)  # three bad phases, then one bad JSON, through the projector
    cli = json_of(dlq(settings, "summary", "--format", "json"))
    whole = await summary(settings)
    assert tuple(whole) == SHAPE
    assert {key: cli[key] for key in SHAPE} == whole
    assert (whole["total"], whole["scanned"], whole["truncated"]) == (4, 4, False)
    assert whole["by_field"] == [{"field": "phase_number", "count": 3}, {"field": "$", "count": 1}]
    assert [(t["topic"], t["count"]) for t in whole["topics"]] == [(settings.phase_events_topic, 4)]
    # One key, so one DLQ partition: the newest two are the last bad phase and the bad JSON.
    newest = await summary(settings, dlq_summary_max_letters=2)
    assert (newest["total"], newest["scanned"], newest["truncated"]) == (4, 2, True)
    assert newest["by_field"] == [{"field": "$", "count": 1}, {"field": "phase_number", "count": 1}]


async def test_no_broker_is_a_503_in_one_line_and_parameters_are_refused(
    settings: Settings,
) -> None:
    away = settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "dlq_summary_timeout_s": 3.0}
    )
    async with served(away) as session:
        status, body = await get(session, "/api/dlq", limit="5")
        assert (status, body["parameter"]) == (400, "limit")
        status, body = await get(session, "/api/dlq")
        assert status == 503
        assert body["error"].startswith(
            f"the dead-letter topic {settings.dlq_topic} at {away.bootstrap_servers}"
        )
        assert "\n" not in body["error"]
        # The failure is reused while fresh: the same answer, without another client.
        assert await get(session, "/api/dlq") == (503, body)
