"""Invalid records go to the dead-letter topic with their reason; the stream keeps moving."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from models.event_codec import encode_event
from models.events import PhaseEvent
from phasestream.settings import Settings
from streams.projector import Projector
from tests.background import audit_running
from tests.events import make_event
from tests.topics import read_records
from tests.waiting import count_rows, eventually

pytestmark = pytest.mark.integration


def bad_records() -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, the field the reason must name)."""
    good = orjson.loads(encode_event(make_event("wf-x")))
    return [
        (b"wf-x", b"{not json", "$"),
        (b"wf-x", None, "$"),
        (b"wf-x", b"", "$"),
        (b"wf-x", orjson.dumps({**good, "phase_number": 8}), "phase_number"),
        (b"wf-x", orjson.dumps({**good, "status": "exploded"}), "status"),
        (b"wf-x", orjson.dumps({**good, "workflow_id": "wf-y"}), "workflow_id"),
        (b"wf-x", orjson.dumps({**good, "metadata": {"x": "a\u0000b"}}), "metadata.x"),
        (b"wf-x", orjson.dumps({k: v for k, v in good.items() if k != "user_id"}), "user_id"),
    ]


#: A record to publish: key, value, headers.
Sent = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


async def send_in_order(settings: Settings, records: list[Sent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(
                settings.phase_events_topic, value, key=key, headers=headers or None
            )
    finally:
        await producer.stop()


async def projected(settings: Settings, rows: int) -> Projector[PhaseEvent]:
    """The audit projector, run until the table holds ``rows`` rows, then stopped."""
    db = settings.database_url or ""
    async with audit_running(settings) as projector:
        await eventually(lambda: count_rows(db), lambda n: n == rows)
    return projector


async def test_invalid_records_are_dead_lettered_and_valid_ones_projected(
    settings: Settings,
) -> None:
    bad = bad_records()
    good = [make_event("wf-x", metadata={"i": i}) for i in range(len(bad) + 1)]
    # Interleave on one partition (same key): good, bad, good, bad, ..., good.
    records: list[Sent] = []
    for index, (key, value, _) in enumerate(bad):
        records += [
            (b"wf-x", encode_event(good[index]), []),
            (key, value, [("trace", b"t-%d" % index)]),
        ]
    await send_in_order(settings, [*records, (b"wf-x", encode_event(good[-1]), [])])
    projector = await projected(settings, len(good))
    assert projector.stats.dead_letters == len(bad)
    assert projector.stats.events_applied == len(good)
    letters = await read_records(settings, settings.dlq_topic, len(bad))
    assert len(letters) == len(bad)
    for letter, (key, value, field) in zip(letters, bad, strict=True):
        headers = dict(letter.headers)
        assert letter.value == value
        assert letter.key == key
        assert headers["phasestream.field"].decode() == field
        assert headers["phasestream.reason"].decode().startswith(f"{field}: ")
        assert headers["phasestream.source.topic"].decode() == settings.phase_events_topic
        assert headers["phasestream.consumer"].decode() == settings.audit_consumer_group
        assert headers["trace"].startswith(b"t-")  # the producer's own headers are kept
    offsets = [int(dict(m.headers)["phasestream.source.offset"]) for m in letters]
    assert offsets == [1, 3, 5, 7, 9, 11, 13, 15]


async def test_a_letter_too_large_for_the_dlq_is_cut_and_never_blocks(settings: Settings) -> None:
    """A value over PHASESTREAM_DLQ_MAX_VALUE_BYTES is cut (size and SHA-256 in headers);
    a letter whose headers alone exceed what the DLQ producer sends goes without value."""
    settings = settings.model_copy(update={"dlq_max_value_bytes": 1000})
    long_value = b"{" + b"x" * 5000  # invalid JSON, 5,001 bytes
    huge_header = [("trace", b"h" * 60_000)]  # more than the letter's headers room
    good = [make_event("wf-x", metadata={"i": i}) for i in range(3)]
    await send_in_order(
        settings,
        [
            (b"wf-x", encode_event(good[0]), []),
            (b"wf-x", long_value, []),
            (b"wf-x", encode_event(good[1]), []),
            (b"wf-x", b"[]", huge_header),
            (b"wf-x", encode_event(good[2]), []),
        ],
    )
    projector = await projected(settings, len(good))
    assert projector.stats.dead_letters == 2
    cut, bare = await read_records(settings, settings.dlq_topic, 2)
    headers = {k: v.decode() for k, v in cut.headers}
    assert cut.value == long_value[:1000]
    assert headers["phasestream.value.truncated"] == "true"
    assert headers["phasestream.value.size"] == str(len(long_value))
    assert headers["phasestream.value.sha256"] == hashlib.sha256(long_value).hexdigest()
    assert headers["phasestream.source.offset"] == "1"
    bare_headers = dict(bare.headers)
    assert bare.value is None
    assert "trace" not in bare_headers
    assert bare_headers["phasestream.value.size"] == b"2"
    assert bare_headers["phasestream.source.offset"] == b"3"
    assert bare_headers["phasestream.field"] == b"$"
