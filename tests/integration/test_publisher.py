"""publish_many against the real broker: where it says each event landed is where a
consumer finds it, each workflow in order on the partition publish() uses."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from models.errors import InvalidEventError
from models.event_codec import decode_event
from models.events import PhaseEvent
from phasestream.settings import Settings
from streams.publisher import PhaseEventPublisher, Published
from tests.events import make_event, many_events
from tests.topics import read_to_highwater

pytestmark = pytest.mark.integration


def publisher(settings: Settings) -> PhaseEventPublisher:
    # Idempotent where production uses it (Apache Kafka); the local broker cannot.
    return PhaseEventPublisher(
        settings.bootstrap_servers,
        settings.phase_events_topic,
        idempotent=settings.kafka_idempotent_producer,
    )


def assert_found_where_published(
    events: list[PhaseEvent], published: list[Published], records: list[Any]
) -> None:
    """Each event is the record at the partition and offset publish_many returned for it."""
    assert len(published) == len(events)
    at = {(r.partition, r.offset): r for r in records}
    assert len(at) == len(records) == len(events)  # nothing more was written
    for event, place in zip(events, published, strict=True):
        record = at[(place.partition, place.offset)]
        assert record.key == event.key
        assert decode_event(record.value).event_id == event.event_id


def assert_each_workflow_in_order(events: list[PhaseEvent], published: list[Published]) -> None:
    """One partition per workflow, its offsets rising in the order the events were given."""
    places: dict[str, list[Published]] = defaultdict(list)
    for event, place in zip(events, published, strict=True):
        places[event.workflow_id].append(place)
    for workflow, seen in places.items():
        assert len({p.partition for p in seen}) == 1, workflow
        offsets = [p.offset for p in seen]
        assert offsets == sorted(set(offsets)), workflow


async def test_each_event_is_where_publish_many_says_in_workflow_order(settings: Settings) -> None:
    events = many_events(900, workflows=120)
    async with publisher(settings) as pub:
        published = await pub.publish_many(events)
    records = await read_to_highwater(settings, settings.phase_events_topic, at_least=len(events))
    assert_found_where_published(events, published, records)
    assert_each_workflow_in_order(events, published)
    assert len({p.partition for p in published}) == settings.topic_partitions


async def test_a_workflow_lands_where_publish_sends_it(settings: Settings) -> None:
    singles = [make_event(f"wf-{i}") for i in range(60)]
    batched = [make_event(f"wf-{i}", phase=2) for i in range(60)]
    async with publisher(settings) as pub:
        alone = [await pub.publish(e) for e in singles]
        together = await pub.publish_many(batched)
    assert [p.partition for p in together] == [p.partition for p in alone]
    assert len({p.partition for p in alone}) > 1  # the keys do spread: the test can fail
    records = await read_to_highwater(settings, settings.phase_events_topic, at_least=120)
    assert_found_where_published(singles + batched, alone + together, records)


async def test_a_call_of_many_batches_and_concurrent_calls(settings: Settings) -> None:
    # 5,000 events of ~380 bytes: about 1.9 MB, over a hundred batches of aiokafka's 16 KB.
    big = many_events(5_000, workflows=40)
    # Then 40 calls at once over the same workflows, joining each other's batches.
    calls = [many_events(50, workflows=40) for _ in range(40)]
    async with publisher(settings) as pub:
        published = await pub.publish_many(big)
        concurrent = await asyncio.gather(*(pub.publish_many(c) for c in calls))
    events = big + [e for call in calls for e in call]
    everywhere = published + [p for places in concurrent for p in places]
    records = await read_to_highwater(settings, settings.phase_events_topic, at_least=len(events))
    assert_found_where_published(events, everywhere, records)
    assert_each_workflow_in_order(big, published)
    for call, places in zip(calls, concurrent, strict=True):
        assert_each_workflow_in_order(call, places)
    # One partition per workflow across all of the calls.
    partitions = {(e.workflow_id, p.partition) for e, p in zip(events, everywhere, strict=True)}
    assert len(partitions) == 40


async def test_nothing_is_sent_when_one_event_is_invalid(settings: Settings) -> None:
    events = many_events(20)
    events.insert(10, make_event("wf-bad", phase=99))
    marker = make_event("wf-marker")
    async with publisher(settings) as pub:
        with pytest.raises(InvalidEventError, match="phase_number"):
            await pub.publish_many(events)
        assert await pub.publish_many([]) == []
        await pub.publish(marker)
    records = await read_to_highwater(settings, settings.phase_events_topic, at_least=1)
    assert [decode_event(r.value).event_id for r in records] == [marker.event_id]


async def test_close_waits_for_the_calls_under_way(settings: Settings) -> None:
    calls = [many_events(50, workflows=10) for _ in range(20)]
    pub = await publisher(settings).__aenter__()
    running = [asyncio.create_task(pub.publish_many(c)) for c in calls]
    await asyncio.sleep(0)  # the calls have filled their batches; none is queued yet
    await asyncio.wait_for(pub.close(), timeout=30)
    published = [p for task in running for p in await asyncio.wait_for(task, timeout=30)]
    events = [e for call in calls for e in call]
    records = await read_to_highwater(settings, settings.phase_events_topic, at_least=len(events))
    assert_found_where_published(events, published, records)
