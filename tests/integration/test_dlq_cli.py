"""`phasestream dlq`: summary, list, show and redrive, through the real CLI, broker and Postgres."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.event_codec import encode_event
from phasestream.settings import Settings
from tests.background import audit_running
from tests.conftest import settings_env
from tests.events import make_event
from tests.integration.test_dead_letters import Sent, projected, send_in_order
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration


def dlq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phasestream", "dlq", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def json_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    value = orjson.loads(result.stdout)
    assert isinstance(value, dict)
    return value


async def rejected(settings: Settings) -> list[Sent]:
    """Three bad phases and one bad JSON, between two good events."""
    good = orjson.loads(encode_event(make_event("wf-d")))
    bad_phase: list[Sent] = [
        (b"wf-d", orjson.dumps({**good, "event_id": str(uuid.uuid4()), "phase_number": 9}), [])
        for _ in range(3)
    ]
    records: list[Sent] = [
        (b"wf-d", encode_event(make_event("wf-d")), []),
        *bad_phase,
        (b"wf-d", b"{oops", [("trace", b"t-1")]),
        (b"wf-d", encode_event(make_event("wf-d", phase=2)), []),
    ]
    await send_in_order(settings, records)
    await projected(settings, 2)
    return records


async def test_summary_and_list_say_what_was_rejected_and_why(settings: Settings) -> None:
    await rejected(settings)
    summary = json_of(dlq(settings, "summary", "--format", "json"))
    assert summary["total"] == 4
    lines = {(line["field"], line["count"]) for line in summary["items"]}
    assert lines == {("phase_number", 3), ("$", 1)}
    listed = json_of(dlq(settings, "list", "--reason", "PHASE", "--limit", "2", "--format", "json"))
    assert (listed["matched"], listed["shown"]) == (3, 2)
    sources = [item["source"] for item in listed["items"]]
    # Newest first: the bad phases sat at offsets 1-3 of partition the key hashes to.
    assert [s.rsplit("/", 1)[1] for s in sources] == ["3", "2"]
    table = dlq(settings, "list", "--field", "phase_number", "--limit", "1")
    assert table.returncode == 0, table.stderr
    assert "2 more; raise --limit" in table.stdout
    bad_since = dlq(settings, "list", "--since", "yesterday")
    assert bad_since.returncode == 2
    assert bad_since.stderr.strip().startswith("error: --since:")


async def test_show_gives_the_original_bytes_and_headers(settings: Settings) -> None:
    records = await rejected(settings)
    listed = json_of(dlq(settings, "list", "--field", "$", "--format", "json"))
    (item,) = listed["items"]
    topic, partition, offset = item["source"].rsplit("/", 2)
    raw = subprocess.run(
        [sys.executable, "-m", "phasestream", "dlq", "show", topic, partition, offset, "--raw"],
        env=settings_env(settings),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == records[4][1] == b"{oops"
    whole = json_of(dlq(settings, "show", topic, partition, offset))
    assert whole["field"] == "$"
    assert ["trace", "t-1"] in whole["headers"]
    missing = dlq(settings, "show", topic, partition, "999")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "no dead letter" in missing.stderr


async def test_redrive_sends_fixed_letters_once(settings: Settings, tmp_path: Path) -> None:
    await rejected(settings)
    listed = json_of(dlq(settings, "list", "--field", "phase_number", "--format", "json"))
    fixes = tmp_path / "fixes.jsonl"
    lines = []
    for item in listed["items"]:
        letter = json_of(dlq(settings, "show", *item["source"].rsplit("/", 2)))
        event = orjson.loads(str(letter["value"])) | {"phase_number": 3}
        lines.append(orjson.dumps({"source": item["source"], "event": event}))
    fixes.write_bytes(b"\n".join(lines) + b"\n")

    dry = dlq(settings, "redrive", "--fixes", str(fixes), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would redrive 3 letters" in dry.stdout
    as_they_were = dlq(settings, "redrive", "--field", "$")
    assert as_they_were.returncode == 1  # still invalid: reported, not sent
    assert "not sent:" in as_they_were.stderr
    assert "redrove 0 letters" in as_they_were.stdout

    first = dlq(settings, "redrive", "--fixes", str(fixes))
    assert first.returncode == 0, first.stderr
    assert "redrove 3 letters" in first.stdout
    again = dlq(settings, "redrive", "--fixes", str(fixes))
    assert "redrove 0 letters" in again.stdout
    assert "3 redriven before" in again.stdout
    db = settings.database_url or ""
    async with audit_running(settings):
        await eventually(lambda: count_rows(db), lambda n: n == 5, what="the redriven rows")
    assert (
        await count_rows(db, "SELECT count(*) FROM workflow_phase_logs WHERE phase_number = 3") == 3
    )
    assert await count_rows(db, "SELECT count(*) FROM dlq_redrives") == 3
