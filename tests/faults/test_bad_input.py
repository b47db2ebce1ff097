"""A corpus of bad records interleaved with good ones: each bad one is dead-lettered once,
with a reason naming its field; every good one (weird but valid strings included) is
projected once, verbatim; the invalid-events metric counts them; the stream keeps moving.

An event id stands for one event: the same id again with a different payload (any field,
the timestamp included) is dead-lettered with the reason ``event_id: already recorded with
a different payload`` and the first recorded event stays; the same event again (byte for
byte, or with its keys reordered and its timestamp written in another offset) is a silent
no-op. Both within one batch and across batches.

The size limit is lowered to 64 KiB (``max_event_bytes=65536``) so the "huge metadata" record
stays small and the test fast; the check is the same as against the default 1 MiB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from msgspec.structs import replace
from prometheus_client.parser import text_string_to_metric_families

from models.event_codec import encode_event
from models.events import PhaseEvent
from phasestream.settings import Settings
from tests.background import consumers_running
from tests.events import make_event
from tests.topics import read_to_highwater
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration

MAX_EVENT_BYTES = 65_536
WORKFLOWS = ("wf-a", "wf-b", "wf-c")
REQUIRED = (
    "schema_version",
    "event_id",
    "workflow_id",
    "user_id",
    "phase_number",
    "status",
    "timestamp",
)
SQL = "'); DROP TABLE workflow_phase_logs; -- \" OR 1=1; \\N \\. \t\n"
#: key, value, headers
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
CONFLICT = "already recorded with a different payload"
CONTROLS = "\x01\x02\x07\x08\x0b\x0c\x1b[31m\x7f\r\n\t\\ \u2028\u202e \U0001f600 ünï"


@dataclass(frozen=True)
class Bad:
    kind: str
    key: bytes | None
    value: bytes | None
    field: str  # the field the DLQ reason must name
    reason: str = ""  # what the DLQ reason must say after "<field>: "


def payload(workflow: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = orjson.loads(encode_event(make_event(workflow)))
    base.update(changes)
    return base


def dumps(workflow: str, **changes: Any) -> bytes:
    return orjson.dumps(payload(workflow, **changes))


def without(workflow: str, name: str) -> bytes:
    return orjson.dumps({k: v for k, v in payload(workflow).items() if k != name})


def nested(levels: int) -> dict[str, Any]:
    tree: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        tree = {"a": tree}
    return tree


def bad_corpus(workflow: str) -> list[Bad]:
    key = workflow.encode()
    latin1 = json.dumps(payload(workflow, error_message="café"), ensure_ascii=False).encode(
        "latin-1"
    )
    return [
        Bad("not json", key, b"{not json", "$"),
        Bad("truncated json", key, dumps(workflow)[:40], "$"),
        Bad("invalid utf-8", key, latin1, "$"),
        Bad("utf-16", key, json.dumps(payload(workflow)).encode("utf-16"), "$"),
        Bad("empty value", key, b"", "$"),
        Bad("tombstone", key, None, "$"),
        Bad("json array", key, b"[1, 2]", "$"),
        *[Bad(f"missing {name}", key, without(workflow, name), name) for name in REQUIRED],
        Bad("phase_number as string", key, dumps(workflow, phase_number="3"), "phase_number"),
        Bad("event_id as number", key, dumps(workflow, event_id=12), "event_id"),
        Bad(
            "rollback_triggered as string",
            key,
            dumps(workflow, rollback_triggered="yes"),
            "rollback_triggered",
        ),
        Bad("metadata as list", key, dumps(workflow, metadata=[1]), "metadata"),
        Bad("duration_ms as float", key, dumps(workflow, duration_ms=1.5), "duration_ms"),
        Bad("phase 0", key, dumps(workflow, phase_number=0), "phase_number"),
        Bad("phase 8", key, dumps(workflow, phase_number=8), "phase_number"),
        Bad("unknown status", key, dumps(workflow, status="exploded"), "status"),
        Bad("non-uuid event_id", key, dumps(workflow, event_id="not-a-uuid"), "event_id"),
        Bad("non-uuid user_id", key, dumps(workflow, user_id="1234"), "user_id"),
        Bad("naive timestamp", key, dumps(workflow, timestamp="2026-01-31T12:00:00"), "timestamp"),
        Bad("year 1970", key, dumps(workflow, timestamp="1970-01-01T00:00:00Z"), "timestamp"),
        Bad("year 9999", key, dumps(workflow, timestamp="9999-12-31T23:59:59Z"), "timestamp"),
        Bad("negative duration", key, dumps(workflow, duration_ms=-1), "duration_ms"),
        Bad("unknown schema_version", key, dumps(workflow, schema_version=2), "schema_version"),
        Bad("unknown field", key, dumps(workflow, surprise=1), "surprise"),
        Bad(
            "metadata 40 levels deep",
            key,
            dumps(workflow, metadata=nested(40)),
            "metadata" + ".a" * 32,
        ),
        Bad(
            "metadata over the size limit",
            key,
            dumps(workflow, metadata={"blob": "x" * (MAX_EVENT_BYTES + 1)}),
            "$",
        ),
        Bad("NUL in error_message", key, dumps(workflow, error_message="a\x00b"), "error_message"),
        Bad("NUL in error_stack", key, dumps(workflow, error_stack="\x00"), "error_stack"),
        Bad("NUL in metadata value", key, dumps(workflow, metadata={"x": "a\x00"}), "metadata.x"),
        Bad("NUL in metadata key", key, dumps(workflow, metadata={"a\x00": 1}), "metadata"),
        Bad("NUL in workflow_id", b"wf-\x00", dumps("wf-\x00"), "workflow_id"),
        Bad("key/workflow_id mismatch", key, dumps("wf-other"), "workflow_id"),
        Bad("no key", None, dumps(workflow), "$key", "is missing (null)"),
    ]


def conflicting(original: PhaseEvent, where: str) -> list[Bad]:
    """``original``'s event id again with another payload: dead-lettered, the first stays."""
    other_payload = replace(original, error_message="twin")  # same id, same timestamp
    other_time = replace(original, timestamp=original.timestamp + timedelta(seconds=1))
    return [
        Bad(
            f"same id and timestamp, other payload ({where})",
            original.key,
            encode_event(other_payload),
            "event_id",
            CONFLICT,
        ),
        Bad(
            f"same id, other timestamp ({where})",
            original.key,
            encode_event(other_time),
            "event_id",
            CONFLICT,
        ),
    ]


def identical(original: PhaseEvent) -> list[bytes]:
    """``original`` again: byte for byte, and semantically (keys reordered, the same instant
    written in another offset): silent no-ops."""
    fields: dict[str, Any] = orjson.loads(encode_event(original))
    fields["timestamp"] = original.timestamp.astimezone(timezone(timedelta(hours=2))).isoformat()
    return [encode_event(original), orjson.dumps(dict(reversed(fields.items())))]


def weird_valid(workflow: str) -> list[PhaseEvent]:
    """Valid events with hostile strings: projected verbatim, never dead-lettered."""
    sql_workflow = f"{workflow}{SQL}"[:255]
    controls_workflow = f"{workflow}{CONTROLS}"[:255]
    return [
        make_event(
            sql_workflow,
            error_message=SQL,
            error_stack=SQL,
            metadata={SQL: SQL, "list": [SQL, {"k": SQL}]},
        ),
        make_event(
            controls_workflow,
            error_message=CONTROLS,
            error_stack=CONTROLS,
            metadata={CONTROLS: CONTROLS},
        ),
        make_event(
            workflow,
            error_message="\\",
            error_stack="\\N",
            metadata={"copy": "\\N", "tab": "\t", "bs": "\\\\"},
        ),
    ]


async def test_bad_input_corpus_is_dead_lettered_and_the_stream_keeps_moving(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"max_event_bytes": MAX_EVENT_BYTES})
    bad = [b for workflow in WORKFLOWS for b in bad_corpus(workflow)]
    kinds = {b.kind for b in bad}
    assert len(kinds) >= 25, len(kinds)
    weird = [e for workflow in WORKFLOWS for e in weird_valid(workflow)]
    good = [
        make_event(WORKFLOWS[i % len(WORKFLOWS)], phase=1 + i % 7, metadata={"i": i})
        for i in range(len(bad) + 1)
    ]
    expected_good = good + weird
    # good[0]'s id again in the same publication, so (all of it being read before the
    # projector starts) most likely in good[0]'s own batch; good[1]'s once good[1] is stored.
    in_batch, later = conflicting(good[0], "same batch"), conflicting(good[1], "later batch")
    bad += in_batch + later

    def tagged(index: int, kind: str, key: bytes | None, value: bytes | None) -> Record:
        return key, value, [("test.kind", f"{index}:{kind}".encode())]

    def twins(original: PhaseEvent, conflicts: list[Bad]) -> list[Record]:
        same = [
            tagged(-1, f"identical redelivery {n}", original.key, value)
            for n, value in enumerate(identical(original))
        ]
        return same + [tagged(bad.index(b), b.kind, b.key, b.value) for b in conflicts]

    first: list[Record] = []
    for index, record in enumerate(bad[: len(bad) - len(in_batch) - len(later)]):
        first.append((good[index].key, encode_event(good[index]), []))
        first.append(tagged(index, record.kind, record.key, record.value))
        if index < len(weird):
            first.append((weird[index].key, encode_event(weird[index]), []))
    first.append((good[-1].key, encode_event(good[-1]), []))
    first += twins(good[0], in_batch)

    db = settings.database_url or ""
    group = settings.audit_consumer_group
    highwater: dict[int, int] = {}
    await publish(settings, first, highwater)
    async with consumers_running(settings, "audit") as runtime:
        for round_ in ("first", "second"):
            if round_ == "second":
                await publish(settings, twins(good[1], later), highwater)
            await eventually(
                lambda: stored_positions(db, settings),
                lambda p: p == highwater,
                timeout_s=60,
                what=f"stored positions at the {round_} highwater",
            )
        metrics = await scrape(runtime.http_port or 0)

    problems = check_letters(bad, await read_to_highwater(settings, settings.dlq_topic))
    problems += check_rows(expected_good, await fetch_rows(db))
    invalid = metric(metrics, "phasestream_consumer_invalid_events_total", consumer=group)
    if invalid != len(bad):
        problems.append(f"invalid-events metric {invalid}, expected {len(bad)}")
    rows = await count_rows(db)
    if rows != len(expected_good):
        problems.append(f"{rows} rows in workflow_phase_logs, expected {len(expected_good)}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def check_letters(bad: list[Bad], letters: list[Any]) -> list[str]:
    problems: list[str] = []
    by_tag: dict[str, list[Any]] = {}
    for letter in letters:
        tag = dict(letter.headers).get("test.kind", b"<no test.kind header>").decode()
        by_tag.setdefault(tag, []).append(letter)
    for index, record in enumerate(bad):
        found = by_tag.pop(f"{index}:{record.kind}", [])
        if len(found) != 1:
            problems.append(f"{record.kind} ({record.key!r}): {len(found)} dead letters, not 1")
            continue
        headers = dict(found[0].headers)
        field = headers.get("phasestream.field", b"").decode()
        reason = headers.get("phasestream.reason", b"").decode()
        if field != record.field or not reason.startswith(f"{record.field}: {record.reason}"):
            problems.append(
                f"{record.kind}: field {field!r}, reason {reason[:120]!r}; "
                f"expected field {record.field!r}, reason "
                f"{f'{record.field}: {record.reason}'!r}..."
            )
        if found[0].value != record.value or found[0].key != record.key:
            problems.append(f"{record.kind}: the dead letter's key or value was altered")
    for tag, extra in by_tag.items():
        problems.append(
            f"unexpected dead letters {tag}: {len(extra)}, e.g. "
            f"{dict(extra[0].headers).get('phasestream.reason')!r}"
        )
    return problems


def check_rows(expected: list[PhaseEvent], rows: dict[str, list[asyncpg.Record]]) -> list[str]:
    problems: list[str] = []
    for event in expected:
        stored = rows.pop(str(event.event_id), [])
        if len(stored) != 1:
            problems.append(
                f"event {event.workflow_id[:20]!r}/{event.error_message!r}: "
                f"{len(stored)} rows, not 1"
            )
            continue
        row = stored[0]
        want = (
            event.workflow_id,
            event.timestamp,
            event.error_message,
            event.error_stack,
            dict(event.metadata),
        )
        got = (
            row["workflow_id"],
            row["timestamp"],
            row["error_message"],
            row["error_stack"],
            orjson.loads(row["metadata"]) if row["metadata"] is not None else {},
        )
        if got != want:
            problems.append(f"event {event.event_id}: stored {got!r}, published {want!r}")
    if rows:
        problems.append(f"rows nobody published as good: {sorted(rows)[:5]}")
    return problems


async def stored_positions(db: str, settings: Settings) -> dict[int, int]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            'SELECT "partition", next_offset FROM phasestream_consumer_positions '
            "WHERE consumer = $1 AND topic = $2",
            settings.audit_consumer_group,
            settings.phase_events_topic,
        )
    finally:
        await conn.close()
    return {r["partition"]: r["next_offset"] for r in rows if r["next_offset"] > 0}


async def fetch_rows(db: str) -> dict[str, list[asyncpg.Record]]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            'SELECT id, workflow_id, "timestamp", error_message, '
            "error_stack, metadata::text AS metadata "
            "FROM workflow_phase_logs"
        )
    finally:
        await conn.close()
    found: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        found.setdefault(str(row["id"]), []).append(row)
    return found


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def publish(settings: Settings, records: list[Record], highwater: dict[int, int]) -> None:
    """Send each record and wait for it, in order; note each partition's end in ``highwater``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, max_request_size=4 * MAX_EVENT_BYTES
    )
    await producer.start()
    try:
        for key, value, headers in records:
            meta = await producer.send_and_wait(
                settings.phase_events_topic, value, key=key, headers=headers
            )
            highwater[meta.partition] = max(highwater.get(meta.partition, 0), meta.offset + 1)
    finally:
        await producer.stop()
