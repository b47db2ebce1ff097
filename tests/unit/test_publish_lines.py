"""`publish --file` reads lines in bounded pieces: the size limit's edges (no server needed)."""

from __future__ import annotations

import io

import orjson

from models.event_codec import encode_event
from phasestream.publishing import BadLine, read_lines
from tests.events import make_event

GOOD = encode_event(make_event("wf-1"))


def padded(size: int) -> bytes:
    """A valid event of exactly ``size`` bytes (its metadata padded)."""
    base = orjson.loads(GOOD)
    base["metadata"] = {"pad": ""}
    short = len(orjson.dumps(base))
    base["metadata"] = {"pad": "x" * (size - short)}
    line = orjson.dumps(base)
    assert len(line) == size
    return line


def kinds(data: bytes, max_bytes: int) -> list[tuple[int, str]]:
    return [
        (number, "bad" if isinstance(item, BadLine) else "event")
        for number, item in read_lines(io.BytesIO(data), max_bytes)
    ]


def test_a_line_at_the_limit_is_read_with_either_line_end() -> None:
    line = padded(1000)
    assert kinds(line + b"\n" + line + b"\r\n" + line, 1000) == [
        (1, "event"),
        (2, "event"),
        (3, "event"),
    ]


def test_a_line_over_the_limit_is_skipped_and_the_next_one_read() -> None:
    long = padded(1500)
    data = long + b"\n" + GOOD + b"\n" + b"y" * 5000 + b"\n\n" + GOOD + b"\n" + b"z" * 3000
    assert kinds(data, 1000) == [(1, "bad"), (2, "event"), (3, "bad"), (5, "event"), (6, "bad")]
    (_, first), *_ = read_lines(io.BytesIO(data), 1000)
    assert str(first) == (
        "line 1: $: is longer than 1000 bytes, the event size limit "
        "(PHASESTREAM_MAX_EVENT_BYTES); skipped unread"
    )


def test_one_byte_over_the_limit_is_refused_by_the_size_check() -> None:
    ((_, item),) = read_lines(io.BytesIO(padded(1001) + b"\n"), 1000)
    assert str(item) == "line 1: $: is 1001 bytes, over the limit of 1000"


def test_a_stream_is_read_as_it_comes() -> None:
    stream = io.BytesIO(b"{broken\n" + GOOD + b"\n")
    lines = read_lines(stream, 1000)
    number, item = next(lines)
    assert (number, isinstance(item, BadLine)) == (1, True)
    assert stream.tell() == len(b"{broken\n")  # nothing read past the line reported
