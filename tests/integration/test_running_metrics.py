"""The stuck-work metrics on /metrics, from the real pipeline: running phases by state, the
oldest one's age, and how far past the deadline late phases ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.phases import PhaseStatus
from phasestream.settings import Settings
from tests.background import consumers_running
from tests.events import make_event
from tests.integration.test_metrics import samples, scrape, value
from tests.integration.test_sla import publisher, set_threshold
from tests.waiting import eventually

pytestmark = pytest.mark.integration
S, C = PhaseStatus.STARTED, PhaseStatus.COMPLETED


async def test_running_gauges_and_the_past_deadline_histogram(settings: Settings) -> None:
    db = settings.database_url or ""
    await set_threshold(db, 5, 1000)
    now = datetime.now(UTC)
    events = [
        make_event("wf-stuck", 5, S, timestamp=now - timedelta(seconds=10)),  # overdue
        make_event("wf-risk", 4, S, timestamp=now - timedelta(seconds=80)),  # 80 of 90 s
        make_event("wf-ok", 3, S, timestamp=now),
        make_event("wf-late", 1, S, timestamp=now - timedelta(seconds=40)),
        make_event("wf-late", 1, C, timestamp=now, duration_ms=40_000),  # 10 s past 30
        make_event("wf-fine", 2, S, timestamp=now - timedelta(seconds=3)),
        make_event("wf-fine", 2, C, timestamp=now, duration_ms=3000),
    ]
    async with consumers_running(settings, "sla", "metrics") as rt, publisher(settings) as pub:
        await pub.publish_many(events)
        port = rt.http_port or 0

        def settled(text: str) -> bool:
            found = samples(text)
            return (
                value(found, "workflow_phase_running", phase="phase_5", state="overdue") == 1
                and value(found, "workflow_phase_running", phase="phase_3", state="ok") == 1
                and value(
                    found, "workflow_phase_ended_past_deadline_seconds_count", phase="phase_1"
                )
                == 1
            )

        found = samples(await eventually(lambda: scrape(port), settled, what="the gauges"))
    assert value(found, "workflow_phase_running", phase="phase_4", state="at_risk") == 1
    assert value(found, "workflow_phase_running", phase="phase_4", state="ok") == 0
    assert value(found, "workflow_phase_running", phase="phase_1", state="overdue") == 0
    assert 10 <= value(found, "workflow_phase_oldest_running_age_seconds", phase="phase_5") < 60
    assert 80 <= value(found, "workflow_phase_oldest_running_age_seconds", phase="phase_4") < 130
    assert value(found, "workflow_phase_oldest_running_age_seconds", phase="phase_1") == 0
    assert value(found, "workflow_phase_ended_past_deadline_seconds_sum", phase="phase_1") == 10.0
    assert (
        value(
            found, "workflow_phase_ended_past_deadline_seconds_bucket", phase="phase_1", le="10.0"
        )
        == 1
    )
    # The on-time phase 2 is not in the histogram.
    assert value(found, "workflow_phase_ended_past_deadline_seconds_count", phase="phase_2") == 0
