"""The dead-letter summary (``dlq summary``, ``GET /api/dlq``) and the window of the newest
letters it reads: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition

from models.dead_letters import StoredLetter, stored_letter
from models.dlq_summary import summarise
from streams.dead_letters import DeadLetter
from streams.topic_scan import newest_starts

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def written(topic: str, field: str, reason: str, minute: int) -> StoredLetter:
    letter = DeadLetter(topic, 0, minute, 0, b"wf-1", b"{}", [], field, reason)
    when = T0 + timedelta(minutes=minute)
    return stored_letter(
        0,
        minute,
        int(when.timestamp() * 1000),
        key=letter.key,
        value=letter.value,
        headers=letter.dlq_headers("audit"),
    )


def test_totals_by_reason_field_and_source_topic_most_first_then_by_name() -> None:
    letters = [
        written("events", "phase_number", "must be 1-7", 0),
        written("events", "status", "must be 1-7", 1),
        written("commands", "status", "is not one of", 2),
        written("commands", "$", "is empty", 3),
        written("events", "phase_number", "must be 1-7", 4),
    ]
    body = summarise(letters).as_json()
    assert (body["total"], body["scanned"], body["truncated"]) == (5, 5, False)
    assert body["by_reason"] == [
        {"reason": "must be 1-7", "count": 3},
        {"reason": "is empty", "count": 1},
        {"reason": "is not one of", "count": 1},
    ]
    assert body["by_field"] == [
        {"field": "phase_number", "count": 2},
        {"field": "status", "count": 2},
        {"field": "$", "count": 1},
    ]
    assert body["topics"] == [
        {
            "topic": "events",
            "count": 3,
            "oldest": "2026-12-01T12:00:00.000000Z",
            "newest": "2026-12-01T12:04:00.000000Z",
        },
        {
            "topic": "commands",
            "count": 2,
            "oldest": "2026-12-01T12:02:00.000000Z",
            "newest": "2026-12-01T12:03:00.000000Z",
        },
    ]


def test_a_summary_of_some_of_the_letters_says_it_is_truncated() -> None:
    summary = summarise([written("events", "$", "is empty", 0)], total=7)
    assert (summary.total, summary.scanned, summary.truncated) == (7, 1, True)
    empty = summarise([]).as_json()
    assert empty == {
        "total": 0,
        "scanned": 0,
        "truncated": False,
        "by_reason": [],
        "by_field": [],
        "topics": [],
    }


def test_the_newest_window_shares_the_bound_and_gives_what_a_small_partition_leaves() -> None:
    a, b, c = (TopicPartition("dlq", p) for p in range(3))
    ends = {a: 100, b: 2, c: 50}
    starts = {a: 10, b: 0, c: 0}
    window = newest_starts(starts, ends, 30)
    # b holds 2 (all read); a and c share the other 28.
    assert window == {b: 0, c: 36, a: 86}
    assert sum(ends[tp] - window[tp] for tp in ends) == 30
    assert newest_starts(starts, ends, 1000) == starts
    assert sum(ends[tp] - s for tp, s in newest_starts(starts, ends, 7).items()) == 7
