"""Invalid records go to the dead-letter topic with their reason; the stream keeps moving."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from models.codec import encode_event
from phasestream.settings import Settings
from tests.support import audit_running, count_rows, eventually, make_event, read_records

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


async def test_invalid_records_are_dead_lettered_and_valid_ones_projected(
        settings: Settings) -> None:
    bad = bad_records()
    good = [make_event("wf-x", metadata={"i": i}) for i in range(len(bad) + 1)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        # Interleave on one partition (same key): good, bad, good, bad, ..., good.
        for index, (key, value, _) in enumerate(bad):
            await producer.send_and_wait(settings.phase_events_topic, encode_event(good[index]),
                                         key=b"wf-x")
            await producer.send_and_wait(settings.phase_events_topic, value, key=key,
                                         headers=[("trace", b"t-%d" % index)])
        await producer.send_and_wait(settings.phase_events_topic, encode_event(good[-1]),
                                     key=b"wf-x")
    finally:
        await producer.stop()

    db = settings.database_url or ""
    async with audit_running(settings) as projector:
        await eventually(lambda: count_rows(db), lambda n: n == len(good))
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
