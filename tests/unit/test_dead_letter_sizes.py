"""A dead letter the DLQ cannot take: cut to size (``within``), or sent without its value
and original headers (``bare``), each time saying what the original was."""

from __future__ import annotations

import hashlib

from models.dead_letters import HEADER_PREFIX
from streams.dead_letters import DeadLetter

VALUE = b"v" * 40
SHA = hashlib.sha256(VALUE).hexdigest()


def letter(value: bytes | None = VALUE) -> DeadLetter:
    return DeadLetter("events", 1, 9, 0, b"wf-1", value, [("trace", b"t")], "$", "too long")


def ours(dead: DeadLetter) -> dict[str, bytes]:
    return {
        k.removeprefix(HEADER_PREFIX): v
        for k, v in dead.dlq_headers("audit")
        if k.startswith(HEADER_PREFIX)
    }


def test_a_letter_that_fits_is_left_as_it_is() -> None:
    original = letter()
    assert original.within(len(VALUE)) is original
    assert letter(None).within(0).value is None
    assert "value.truncated" not in ours(original)


def test_a_long_value_is_cut_and_says_its_original_size_and_hash() -> None:
    cut = letter().within(len(VALUE) - 1)
    assert (cut.value, cut.cut, cut.headers) == (VALUE[:-1], (len(VALUE), SHA), letter().headers)
    assert (ours(cut)["value.truncated"], ours(cut)["value.size"], ours(cut)["value.sha256"]) == (
        b"true",
        b"40",
        SHA.encode(),
    )


def test_a_bare_letter_keeps_only_where_the_record_is() -> None:
    bare = letter().bare()
    assert (bare.value, bare.headers, bare.cut) == (None, (), (len(VALUE), SHA))
    assert (bare.topic, bare.partition, bare.offset, bare.key) == ("events", 1, 9, b"wf-1")
    headers = bare.dlq_headers("audit")
    assert ("trace", b"t") not in headers
    assert ours(bare)["source.offset"] == b"9"


def test_a_cut_letter_made_bare_keeps_the_original_fingerprint() -> None:
    # The second step must not fingerprint the already-cut value.
    bare = letter().within(4).bare()
    assert bare.cut == (len(VALUE), SHA)


def test_a_letter_without_value_made_bare_has_no_fingerprint() -> None:
    bare = letter(None).bare()
    assert (bare.value, bare.cut) == (None, None)
    assert "value.truncated" not in ours(bare)
