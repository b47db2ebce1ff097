"""`phasestream subscribe TOPIC` through the CLI, against the real broker."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from models.command_codec import decode_command, encode_command
from models.errors import InvalidEventError
from models.event_codec import decode_record, encode_event
from models.phases import PhaseStatus
from models.sla.violation import SlaViolation, ViolationKind
from models.sla.violation_codec import encode_violation
from phasestream.settings import Settings
from tests.conftest import free_port, settings_env
from tests.events import make_event
from tests.integration.test_subscriber import command
from tests.topics import send_records

pytestmark = pytest.mark.integration


def refusal(decode: Any, value: bytes) -> dict[str, str]:
    """What the contract's decoder says of ``value``: the CLI must say the same."""
    with pytest.raises(InvalidEventError) as caught:
        decode(None, value)
    return {"field": caught.value.field, "reason": caught.value.reason}


def events(*specs: tuple[str, PhaseStatus]) -> list[Any]:
    return [make_event(workflow, 2, status) for workflow, status in specs]


def as_records(values: list[Any]) -> list[tuple[bytes, bytes]]:
    return [(v.key, encode_event(v)) for v in values]


async def start_cli(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phasestream",
        "subscribe",
        *args,
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def positioned(process: asyncio.subprocess.Process) -> str:
    """The CLI's first stderr line, once it has sought to where it reads from."""
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
    assert line.startswith(b"reading "), line
    return line.decode()


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    return await finished(await start_cli(settings, *args))


async def test_from_beginning_as_json_shows_each_record_decoded_and_invalid_ones_as_such(
    settings: Settings,
) -> None:
    sent = events(("wf-a", PhaseStatus.STARTED), ("wf-a", PhaseStatus.COMPLETED))
    await send_records(
        settings,
        settings.phase_events_topic,
        [*as_records(sent), (b"wf-a", b'{"schema_version": 1}')],
    )
    code, out, err = await run_cli(
        settings,
        settings.phase_events_topic,
        "--from",
        "beginning",
        "--format",
        "json",
        "--count",
        "3",
    )
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [r["value"]["event_id"] for r in rows[:2]] == [str(e.event_id) for e in sent]
    assert rows[2]["invalid"] == refusal(decode_record, b'{"schema_version": 1}')
    assert rows[2]["raw"] == '{"schema_version": 1}'
    assert {r["key"] for r in rows} == {"wf-a"}


async def test_from_end_shows_only_what_comes_after_it_started(settings: Settings) -> None:
    # One workflow, so every record is on one partition, in one batch: on the embedded
    # broker the end offset lands inside that batch, and its rest must still be hidden.
    await send_records(
        settings,
        settings.phase_events_topic,
        as_records(events(*[("wf-end", PhaseStatus.STARTED)] * 5)),
    )
    process = await start_cli(
        settings, settings.phase_events_topic, "--from", "end", "--format", "json", "--count", "2"
    )
    await positioned(process)
    later = events(("wf-end", PhaseStatus.COMPLETED), ("wf-end", PhaseStatus.FAILED))
    await send_records(settings, settings.phase_events_topic, as_records(later))
    code, out, _ = await finished(process)
    assert code == 0
    shown = [orjson.loads(line)["value"]["event_id"] for line in out.splitlines()]
    assert shown == [str(e.event_id) for e in later]


async def test_from_a_time_with_workflow_and_kind_filters(settings: Settings) -> None:
    await send_records(
        settings, settings.phase_events_topic, as_records(events(("wf-t", PhaseStatus.FAILED)))
    )
    await asyncio.sleep(0.2)
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    later = events(
        ("wf-t", PhaseStatus.STARTED),
        ("wf-other", PhaseStatus.FAILED),
        ("wf-t", PhaseStatus.FAILED),
        ("wf-t", PhaseStatus.FAILED),
    )
    await send_records(settings, settings.phase_events_topic, as_records(later))
    code, out, _ = await run_cli(
        settings,
        settings.phase_events_topic,
        "--from",
        since.isoformat(),
        "--workflow",
        "wf-t",
        "--kind",
        "failed",
        "--format",
        "json",
        "--count",
        "2",
    )
    assert code == 0
    shown = [orjson.loads(line)["value"]["event_id"] for line in out.splitlines()]
    assert shown == [str(later[2].event_id), str(later[3].event_id)]


async def test_commands_as_a_table(settings: Settings) -> None:
    issued = command("wf-table")
    await send_records(
        settings,
        settings.rollback_commands_topic,
        [(issued.key, encode_command(issued)), (b"wf-table", b"[]")],
    )
    code, out, _ = await run_cli(
        settings, settings.rollback_commands_topic, "--from", "beginning", "--count", "2"
    )
    assert code == 0
    header, first, second = out.splitlines()
    assert header.split() == ["position", "time", "workflow", "kind", "phase", "id", "detail"]
    assert first.split()[2:6] == ["wf-table", "rollback", "3>2", str(issued.command_id)]
    assert first.endswith("attempt 0; boom")
    assert second.split()[2:4] == ["wf-table", "INVALID"]
    why = refusal(decode_command, b"[]")
    assert second.endswith(f"{why['field']}: {why['reason']}")


async def test_an_unreachable_broker_is_one_line_and_exit_1(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    code, out, err = await run_cli(nowhere, settings.phase_events_topic)
    assert (code, out) == (1, "")
    # aiokafka logs its own connection errors first; ours is the last line, with no traceback.
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"error: the broker at {nowhere.kafka_bootstrap_servers} cannot be "
        "read (KafkaConnectionError"
    ), err
    assert "Traceback" not in err


async def test_violations_with_a_kind_filter_as_a_table(settings: Settings) -> None:
    now = datetime.now(UTC)
    late, overdue = (
        SlaViolation(
            uuid.uuid4(),
            kind,
            "wf-sla",
            uuid.UUID(int=1),
            4,
            uuid.uuid4(),
            now,
            now,
            95_000,
            90_000,
        )
        for kind in (ViolationKind.LATE_COMPLETED, ViolationKind.OVERDUE)
    )
    await send_records(
        settings,
        settings.sla_violations_topic,
        [(v.key, encode_violation(v)) for v in (late, overdue)],
    )
    code, out, _ = await run_cli(
        settings,
        settings.sla_violations_topic,
        "--from",
        "beginning",
        "--kind",
        "overdue",
        "--count",
        "1",
    )
    assert code == 0
    _, row = out.splitlines()
    assert row.split()[2:6] == ["wf-sla", "overdue", "4", str(overdue.violation_id)]
    assert row.endswith("95000 ms > 90000 ms")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-topic"], "error: TOPIC: no-such-topic is none of phasestream's topics"),
        (["{events}", "--from", "yesterday"], "error: --from: expected a duration like 24h"),
        (
            ["{events}", "--kind", "rollback"],
            "error: --kind: phase-event kinds are completed, "
            "failed, rolled_back, started, got 'rollback'",
        ),
    ],
)
async def test_bad_input_exits_2_with_one_line(
    settings: Settings, args: list[str], message: str
) -> None:
    filled = [a.format(events=settings.phase_events_topic) for a in args]
    code, out, err = await run_cli(settings, *filled)
    assert (code, out) == (2, "")
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1
