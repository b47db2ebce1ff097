"""The command line against the real broker and Postgres."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest

from models.event_codec import encode_event
from phasestream.settings import Settings
from tests.background import audit_running
from tests.conftest import settings_env
from tests.events import make_event
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration


async def cli(
    settings: Settings,
    *args: str,
    stdin: bytes | None = None,
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phasestream",
        *args,
        env=settings_env(settings),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_publish_from_flags_lands_in_the_audit_table(settings: Settings) -> None:
    code, out, err = await cli(
        settings,
        "publish",
        "--workflow-id",
        "wf-cli",
        "--user-id",
        "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f",
        "--phase",
        "2",
        "--status",
        "completed",
        "--duration-ms",
        "1500",
        "--metadata",
        '{"source": "cli"}',
    )
    assert code == 0, err
    assert "published" in out
    async with audit_running(settings):
        await eventually(lambda: count_rows(settings.database_url or ""), lambda n: n == 1)
    assert (
        await count_rows(
            settings.database_url or "",
            "SELECT duration_ms FROM workflow_phase_logs "
            "WHERE workflow_id = 'wf-cli' AND metadata->>'source' = 'cli'",
        )
        == 1500
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--phase", "9"], "--phase: must be a phase from 1 to 7, got 9"),
        (["--status", "done"], "--status: must be one of"),
        (["--user-id", "nope"], "--user-id: must be a UUID"),
        (["--metadata", "{oops"], "--metadata: not valid JSON"),
        (["--timestamp", "2026-01-01T10:00:00"], "--timestamp: must be RFC 3339"),
    ],
)
async def test_publish_rejects_bad_flags_with_exit_code_2(
    settings: Settings, flags: list[str], message: str
) -> None:
    base = {
        "--workflow-id": "wf",
        "--user-id": "6f1c1d2e-8a4b-4c4f-9f6e-1a2b3c4d5e6f",
        "--phase": "1",
        "--status": "started",
    }
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        base[flag] = value
    code, _, err = await cli(settings, "publish", *[x for kv in base.items() for x in kv])
    assert code == 2
    assert message in err


async def test_publish_file_reports_bad_lines_and_sends_the_rest(
    settings: Settings, tmp_path: Path
) -> None:
    good = [make_event(f"wf-{i}") for i in range(5)]
    bad_phase = orjson.loads(encode_event(make_event()))
    bad_phase["phase_number"] = 0
    lines = [
        encode_event(good[0]),
        b"{broken",
        encode_event(good[1]),
        b"",
        orjson.dumps(bad_phase),
        *[encode_event(e) for e in good[2:]],
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = await cli(settings, "publish", "--file", str(path))
    assert code == 1
    assert "published 5 events; 2 invalid lines not sent" in out
    assert "line 2: $: is not valid UTF-8 JSON" in err
    assert "line 5: phase_number: must be a phase from 1 to 7, got 0" in err
    # The same through standard input.
    code, out, _ = await cli(
        settings, "publish", "--file", "-", stdin=b"\n".join(encode_event(e) for e in good)
    )
    assert code == 0
    assert "published 5 events; 0 invalid lines not sent" in out
    async with audit_running(settings):
        await eventually(lambda: count_rows(settings.database_url or ""), lambda n: n == 5)
        await asyncio.sleep(0.5)
    assert await count_rows(settings.database_url or "") == 5  # duplicates are no-ops


async def test_publish_file_that_does_not_exist(settings: Settings) -> None:
    code, _, err = await cli(settings, "publish", "--file", "/nonexistent.jsonl")
    assert code == 2
    assert "does not exist" in err


async def test_topics_create_and_migrate_are_idempotent(settings: Settings) -> None:
    fresh = settings.model_copy(
        update={
            "phase_events_topic": settings.phase_events_topic + "2",
            "dlq_topic": settings.dlq_topic + "2",
        }
    )
    code, out, _ = await cli(fresh, "topics", "create")
    assert code == 0
    assert fresh.phase_events_topic in out
    code, out, _ = await cli(fresh, "topics", "create")
    assert code == 0
    assert "nothing (all topics exist)" in out
    code, _, err = await cli(settings, "migrate")
    assert code == 0
    assert "0 migrations applied now" in err


async def test_bad_setting_is_a_clear_error(settings: Settings) -> None:
    code, _, err = await cli(settings.model_copy(update={"batch_max_records": 0}), "migrate")
    assert code == 2
    # One line naming the variable, not the value (a bad value may be a secret).
    assert err == (
        "error: invalid setting: PHASESTREAM_BATCH_MAX_RECORDS: Input should be greater than 0\n"
    )


async def test_publish_reports_each_bad_line_as_it_reads_it(settings: Settings) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phasestream",
        "publish",
        "--file",
        "-",
        env=settings_env(settings),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stderr is not None
    try:
        process.stdin.write(encode_event(make_event("wf-s1")) + b"\n{broken\n")
        await process.stdin.drain()
        # Standard input is still open: the report cannot have waited for its end.
        first = await asyncio.wait_for(process.stderr.readline(), timeout=30)
        assert first.decode().startswith("invalid: line 2: $: is not valid UTF-8 JSON")
        process.stdin.write(encode_event(make_event("wf-s2")) + b"\n")
        process.stdin.close()
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 1
    assert "published 2 events; 1 invalid lines not sent" in out.decode()


async def test_publish_caps_the_bad_lines_it_shows(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"".join(b"{broken %d\n" % i for i in range(30)) + encode_event(make_event("wf-c")) + b"\n"
    )
    code, out, err = await cli(settings, "publish", "--file", str(path), "--max-reported", "5")
    assert code == 1
    shown = err.strip().splitlines()
    assert [line.split(":")[0:2] for line in shown[:5]] == [
        ["invalid", f" line {n}"] for n in range(1, 6)
    ]
    assert shown[5:] == ["invalid: 25 more invalid lines not shown (--max-reported 5)"]
    assert "published 1 events; 30 invalid lines not sent" in out


#: Runs the CLI and prints its peak resident memory (KiB) last on standard error.
PEAK_RSS = (
    "import atexit, resource, sys; atexit.register(lambda: print('peak_rss_kib', "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
    "from phasestream.cli import main; sys.argv[0] = 'phasestream'; main()"
)


async def peak_rss_kib(settings: Settings, path: Path) -> tuple[int, str, str, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PEAK_RSS,
        "publish",
        "--file",
        str(path),
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    *said, peak = err.decode().strip().splitlines()
    assert peak.startswith("peak_rss_kib "), err.decode()
    assert process.returncode is not None
    return process.returncode, out.decode(), "\n".join(said), int(peak.split()[1])


async def test_publish_refuses_a_50_mb_line_without_holding_it(
    settings: Settings, tmp_path: Path
) -> None:
    good = [encode_event(make_event(f"wf-big-{i}")) for i in range(2)]
    small, huge = tmp_path / "small.jsonl", tmp_path / "huge.jsonl"
    small.write_bytes(good[0] + b"\n{broken\n" + good[1] + b"\n")
    with huge.open("wb") as out:
        out.write(good[0] + b"\n" + b'{"metadata": "')
        for _ in range(50):
            out.write(b"x" * 1_048_576)
        out.write(b'"}\n' + good[1] + b"\n")
    _, _, _, baseline = await peak_rss_kib(settings, small)
    code, out_text, err, peak = await peak_rss_kib(settings, huge)
    assert code == 1, err
    assert err.splitlines() == [
        f"invalid: line 2: $: is longer than {settings.max_event_bytes} bytes, the event size "
        "limit (PHASESTREAM_MAX_EVENT_BYTES); skipped unread"
    ]
    assert "published 2 events; 1 invalid lines not sent" in out_text
    # Holding the line would add 50 MiB; reading it in limit-sized pieces adds about one.
    assert peak - baseline < 16 * 1024, f"peak {peak} KiB against {baseline} KiB"
