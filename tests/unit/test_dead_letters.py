"""Dead letters read back, summarised, filtered and planned for a redrive: pure functions."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson

from models.dead_letters import LetterFilter, StoredLetter, stored_letter
from models.dlq_summary import summarise
from models.event_codec import encode_event
from models.redrive import Fix, plan_redrive
from streams.dead_letters import DeadLetter
from tests.events import make_event

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def written(
    value: bytes | None, field: str, reason: str, offset: int, when: datetime = T0
) -> StoredLetter:
    """A letter as the DLQ writer writes it, read back as the CLI reads it."""
    letter = DeadLetter("events", 2, offset, 0, b"wf-1", value, [("trace", b"t")], field, reason)
    return stored_letter(
        0,
        offset + 100,
        int(when.timestamp() * 1000),
        key=letter.key,
        value=letter.value,
        headers=letter.dlq_headers("audit"),
    )


def test_a_written_letter_reads_back_with_its_source_and_reason() -> None:
    letter = written(b"{x", "$", "is not valid UTF-8 JSON: oops", 7)
    assert (letter.source, letter.field, letter.reason) == (
        "events/2/7",
        "$",
        "is not valid UTF-8 JSON: oops",
    )
    assert (letter.consumer, letter.truncated, letter.dlq_offset) == ("audit", False, 107)
    assert ("trace", b"t") in letter.headers
    assert letter.dlq_time == T0


def test_a_record_without_our_headers_reads_as_unknown_not_an_error() -> None:
    letter = stored_letter(1, 5, 0, key=None, value=b"v", headers=[])
    assert (letter.source, letter.field, letter.reason) == ("/-1/-1", "", "")


def test_summary_counts_by_source_field_and_reason_most_first() -> None:
    letters = [
        written(b"a", "phase_number", "must be 1-7", i, T0 + timedelta(minutes=i)) for i in range(3)
    ] + [written(b"b", "$", "is empty", 9)]
    lines = summarise(letters).lines
    assert [(line.field, line.count) for line in lines] == [("phase_number", 3), ("$", 1)]
    assert (lines[0].oldest, lines[0].newest) == (T0, T0 + timedelta(minutes=2))


def test_filter_by_reason_text_field_and_time() -> None:
    old, new = (
        written(b"a", "status", "is not one of", 1),
        written(b"b", "$", "is empty", 2, T0 + timedelta(hours=1)),
    )
    assert [lt for lt in (old, new) if LetterFilter(reason="NOT ONE")(lt)] == [old]
    assert [lt for lt in (old, new) if LetterFilter(field="$")(lt)] == [new]
    assert [lt for lt in (old, new) if LetterFilter(since=T0 + timedelta(minutes=1))(lt)] == [new]


def test_a_cut_value_reads_back_as_truncated() -> None:
    letter = DeadLetter("events", 0, 1, 0, None, b"x" * 50, [], "$", "too long").within(10)
    assert letter.value == b"x" * 10
    assert letter.cut == (50, hashlib.sha256(b"x" * 50).hexdigest())
    assert letter.within(10) is letter  # cut once
    bare = letter.bare()
    assert (bare.value, bare.headers, bare.cut) == (None, (), letter.cut)
    read = stored_letter(0, 0, 0, key=None, value=letter.value, headers=letter.dlq_headers("audit"))
    assert read.truncated


def test_redrive_plan_sends_valid_letters_once_and_reports_the_rest() -> None:
    good = encode_event(make_event("wf-1"))
    letters = [
        written(good, "workflow_id", "does not match the record key", 1),
        written(b"{x", "$", "bad", 2),
        written(good, "x", "y", 3),
    ]
    plan = plan_redrive(letters, None, {(0, 103)}, max_bytes=1_000_000)
    assert [place for place, _ in plan.send] == [(0, 101)]
    assert plan.sent_before == 1
    assert len(plan.invalid) == 1
    assert plan.invalid[0].startswith("events/2/2: $: ")


def test_with_fixes_only_the_named_letters_go_with_their_fix() -> None:
    bad = orjson.loads(encode_event(make_event("wf-1"))) | {"phase_number": 9}
    letters = [written(orjson.dumps(bad), "phase_number", "must be 1-7", i) for i in (1, 2)]
    fixed = orjson.dumps(bad | {"phase_number": 3})
    plan = plan_redrive(
        letters, {"events/2/2": Fix("events/2/2", fixed)}, set(), max_bytes=1_000_000
    )
    assert [(place, event.phase_number) for place, event in plan.send] == [((0, 102), 3)]
    assert plan.invalid == []
