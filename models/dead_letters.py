"""Dead letters as an operator reads them back: where each came from, why, and a summary.

The dead-letter topic's record keeps the original key, value and headers; phasestream's
own headers (``phasestream.*``) say why and where from. These are plain functions over
those records, so the CLI and the API summarise and filter them the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

HEADER_PREFIX: Final = "phasestream."
#: How much of a value a listing shows.
PREVIEW_CHARS: Final = 120


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """One record of the dead-letter topic, its headers read."""

    dlq_partition: int
    dlq_offset: int
    dlq_time: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    source_topic: str
    source_partition: int
    source_offset: int
    field: str
    reason: str
    consumer: str
    truncated: bool

    @property
    def source(self) -> str:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    def preview(self) -> str:
        if self.value is None:
            return "(no value)"
        text = self.value[:PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
        return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"


def stored_letter(partition: int, offset: int, timestamp_ms: int, *, key: bytes | None,
                  value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> StoredLetter:
    """Read phasestream's headers of one dead-letter record (missing ones read as empty)."""
    ours = {k[len(HEADER_PREFIX):]: v.decode("utf-8", errors="replace")
            for k, v in headers if k.startswith(HEADER_PREFIX)}
    field = ours.get("field", "")
    reason = ours.get("reason", "")
    # The reason header reads "field: reason" (one header a Kafka UI shows whole).
    reason = reason.removeprefix(f"{field}: ") if field else reason
    return StoredLetter(
        dlq_partition=partition, dlq_offset=offset,
        dlq_time=datetime.fromtimestamp(timestamp_ms / 1000, UTC), key=key, value=value,
        headers=tuple(headers), source_topic=ours.get("source.topic", ""),
        source_partition=_int(ours.get("source.partition")),
        source_offset=_int(ours.get("source.offset")), field=field, reason=reason,
        consumer=ours.get("consumer", ""), truncated=ours.get("value.truncated") == "true")


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters an operator asked for; an unset part selects everything."""

    reason: str | None = None
    since: datetime | None = None
    field: str | None = None

    def __call__(self, letter: StoredLetter) -> bool:
        if self.reason is not None and self.reason.lower() not in letter.reason.lower():
            return False
        if self.field is not None and letter.field != self.field:
            return False
        return self.since is None or letter.dlq_time >= self.since


@dataclass(slots=True)
class ReasonCount:
    """One line of the summary: letters of one source topic, field and reason."""

    source_topic: str
    field: str
    reason: str
    count: int
    oldest: datetime
    newest: datetime


Tally = dict[tuple[str, str, str], ReasonCount]


def count_letter(tally: Tally, letter: StoredLetter) -> None:
    """Add one letter to a running summary (a DLQ is read once, never held whole)."""
    key = (letter.source_topic, letter.field, letter.reason)
    line = tally.get(key)
    if line is None:
        tally[key] = ReasonCount(*key, 1, letter.dlq_time, letter.dlq_time)
        return
    line.count += 1
    line.oldest = min(line.oldest, letter.dlq_time)
    line.newest = max(line.newest, letter.dlq_time)


def most_first(tally: Tally) -> list[ReasonCount]:
    return sorted(tally.values(), key=lambda r: (-r.count, r.source_topic, r.field, r.reason))


def summarise(letters: Iterable[StoredLetter]) -> list[ReasonCount]:
    """Counts by source topic, field and reason, with the oldest and newest; most first."""
    tally: Tally = {}
    for letter in letters:
        count_letter(tally, letter)
    return most_first(tally)
